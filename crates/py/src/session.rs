//! `Session` (frame-by-frame, full duplex) and `GenerationStream` (frames as they complete).

use std::sync::{Arc, Mutex};

use numpy::PyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::PyList;
use speechinfer_core::Error;
use speechinfer_lm::{Generation, Session as EngineSession, SpeechLm as Engine};

use crate::arrays::{int_array, to_numpy};
use crate::errors::{input_error, without_gil};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic inside the engine is caught before it can poison the lock; recover anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A frame-by-frame run of ``batch_size`` sequences.
///
/// ``step(frame)`` takes frame t as int64 ``[B, K]``: ids ≥ 0 are forced (never overwritten),
/// ``-2`` (``speechinfer.SAMPLE``) lets the model pick, ``-1`` (``speechinfer.NO_INPUT``) feeds
/// nothing. A delayed stream's token lands ``delay`` steps later, where the pattern puts it. It
/// returns the frames completed by the call, int64 ``[B, K, n]``. Calls on one session are
/// serialized; sessions are independent.
#[pyclass(module = "speechinfer._native", frozen)]
pub struct Session {
    engine: Arc<Engine>,
    inner: Arc<Mutex<EngineSession>>,
}

impl Session {
    pub fn new(engine: Arc<Engine>, session: EngineSession) -> Self {
        Self {
            engine,
            inner: Arc::new(Mutex::new(session)),
        }
    }

    fn frames_array<'py>(
        &self,
        py: Python<'py>,
        (values, n): (Vec<i64>, usize),
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let b = lock(&self.inner).batch_size();
        to_numpy(py, values, &[b, self.engine.num_streams(), n])
    }
}

/// The values of a frame argument that must be int64 ``[b, k]``.
fn frame_values(
    py: Python<'_>,
    frame: &Bound<'_, PyAny>,
    what: &str,
    b: usize,
    k: usize,
) -> PyResult<Vec<i64>> {
    let array = int_array(py, frame, what)?;
    if array.shape != [b, k] {
        return Err(input_error(
            py,
            format!(
                "{what} must be [{b}, {k}] (batch, streams), got shape {:?}",
                array.shape
            ),
        ));
    }
    Ok(array.values)
}

#[pymethods]
impl Session {
    /// Feed frame t (int64 ``[B, K]``; ``-2`` = pick, ``-1`` = no input); returns the frames
    /// completed so far and not yet returned, int64 ``[B, K, n]``. A guided session (a
    /// ``cfg_scale`` in its sampling) also needs ``uncond``, the unconditional twins' frame t
    /// (``[B, K]``; ``-2`` = the conditional sequence's pick, so picked streams stay in step).
    #[pyo3(
        signature = (frame, uncond=None),
        text_signature = "($self, frame: NDArray[np.integer], uncond: NDArray[np.integer] | None = None) -> NDArray[np.int64]"
    )]
    fn step<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        uncond: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let (b, k) = (lock(&self.inner).batch_size(), self.engine.num_streams());
        let frame = frame_values(py, frame, "frame", b, k)?;
        let uncond = match uncond {
            Some(u) if !u.is_none() => Some(frame_values(py, u, "uncond", b, k)?),
            _ => None,
        };
        let (engine, inner) = (self.engine.clone(), self.inner.clone());
        let out = without_gil(py, move || {
            lock(&inner).step(&engine, &frame, uncond.as_deref())
        })?;
        self.frames_array(py, out)
    }

    /// Complete every frame given so far (positions of later frames hold specials) and return
    /// the remaining ones, int64 ``[B, K, n]``; call ``reset()`` before stepping again.
    #[pyo3(text_signature = "($self) -> NDArray[np.int64]")]
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let (engine, inner) = (self.engine.clone(), self.inner.clone());
        let out = without_gil(py, move || lock(&inner).flush(&engine))?;
        self.frames_array(py, out)
    }

    /// Start over: no frames, the seeds' RNG states from the beginning.
    #[pyo3(text_signature = "($self) -> None")]
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        let (engine, inner) = (self.engine.clone(), self.inner.clone());
        without_gil(py, move || {
            lock(&inner).reset(&engine);
            Ok(())
        })
    }

    /// list[NDArray[np.float32]]: Logits ``[B, V_k]`` per stream of the last fed step (they
    /// predict the next step); empty before the first step and for the depth pattern.
    #[getter]
    fn logits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let inner = lock(&self.inner);
        let rows = inner.logits();
        let k_n = rows.first().map_or(0, |r| r.len());
        let arrays = (0..k_n)
            .map(|k| {
                let v = rows[0][k].len();
                let values: Vec<f32> = rows.iter().flat_map(|r| r[k].iter().copied()).collect();
                to_numpy(py, values, &[rows.len(), v])
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, arrays)
    }

    /// int: Frames given so far.
    #[getter]
    fn frames(&self) -> usize {
        lock(&self.inner).frames()
    }

    /// int: Sequences in the session.
    #[getter]
    fn batch_size(&self) -> usize {
        lock(&self.inner).batch_size()
    }

    /// bool: Whether the session runs classifier-free guidance (``step`` then needs ``uncond``).
    #[getter]
    fn guided(&self) -> bool {
        lock(&self.inner).guided()
    }
}

/// Iterator over the frames of a generation as they complete (``SpeechLM.stream``).
#[pyclass(module = "speechinfer._native", frozen)]
pub struct GenerationStream {
    engine: Arc<Engine>,
    inner: Arc<Mutex<Generation>>,
}

impl GenerationStream {
    pub fn new(engine: Arc<Engine>, generation: Generation) -> Self {
        Self {
            engine,
            inner: Arc::new(Mutex::new(generation)),
        }
    }
}

#[pymethods]
impl GenerationStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArrayDyn<i64>>>> {
        let (engine, inner) = (self.engine.clone(), self.inner.clone());
        let next = without_gil(py, move || -> Result<_, Error> {
            let mut generation = lock(&inner);
            let b = generation.num_sequences();
            Ok(generation.advance(&engine)?.map(|chunk| (chunk, b)))
        })?;
        match next {
            None => Ok(None),
            Some(((values, n), b)) => Ok(Some(to_numpy(
                py,
                values,
                &[b, self.engine.num_streams(), n],
            )?)),
        }
    }
}
