//! How many CPU threads the engine computes with.

use pyo3::prelude::*;

use crate::errors::input_error;

/// Compute with ``n`` CPU threads (default: every CPU this process may run on). Call it before
/// the first model call: the thread pool starts then and keeps its size (``RAYON_NUM_THREADS``
/// set before importing speechinfer does the same). Raises ``InputError`` for ``n < 1`` or when
/// the pool already runs another number of threads.
#[pyfunction]
#[pyo3(text_signature = "(n: int) -> None")]
pub fn set_num_threads(py: Python<'_>, n: i64) -> PyResult<()> {
    let Ok(threads) = usize::try_from(n) else {
        return Err(input_error(py, format!("n must be >= 1, got {n}")));
    };
    if threads == 0 {
        return Err(input_error(py, "n must be >= 1, got 0"));
    }
    let started = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .is_err();
    if started && rayon::current_num_threads() != threads {
        return Err(input_error(
            py,
            format!(
                "the engine's thread pool already runs {} threads; call set_num_threads before \
                 the first model call, or set RAYON_NUM_THREADS before importing speechinfer",
                rayon::current_num_threads()
            ),
        ));
    }
    // candle's GEMM sizes its own work split from this variable on every call.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    Ok(())
}

/// The number of CPU threads the engine computes with (asking does not start the pool).
#[pyfunction]
#[pyo3(text_signature = "() -> int")]
pub fn num_threads() -> usize {
    // rayon sizes its pool from this variable when it starts, and set_num_threads keeps it in
    // step; current_num_threads() would start the pool and fix its size.
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(rayon::current_num_threads)
}
