//! Engine errors → `speechinfer.errors` exceptions; panics → `InternalError`, never a crash.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;
use speechinfer_core::Error;

fn exception_class<'py>(py: Python<'py>, error: &Error) -> Option<Bound<'py, PyType>> {
    let name = match error {
        Error::Config(_) => "ConfigError",
        Error::Checkpoint(_) => "CheckpointError",
        Error::Input(_) => "InputError",
        Error::Internal(_) => "InternalError",
    };
    let module = py.import("speechinfer.errors").ok()?;
    module.getattr(name).ok()?.cast_into::<PyType>().ok()
}

pub fn to_pyerr(py: Python<'_>, error: Error) -> PyErr {
    match exception_class(py, &error) {
        Some(cls) => PyErr::from_type(cls, error.to_string()),
        None => match error {
            Error::Input(msg) => PyValueError::new_err(msg),
            other => PyRuntimeError::new_err(other.to_string()),
        },
    }
}

pub fn input_error(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    to_pyerr(py, Error::input(msg))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run engine work without the GIL; an error or a panic comes back as a typed exception.
pub fn without_gil<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> speechinfer_core::Result<T> + Send,
{
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(work)));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(to_pyerr(py, error)),
        Err(payload) => Err(to_pyerr(
            py,
            Error::internal(format!("engine panicked: {}", panic_message(payload))),
        )),
    }
}
