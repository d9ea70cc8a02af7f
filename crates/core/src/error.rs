//! The engine's error type. Every fallible call returns [`Result`]; the Python layer maps each
//! variant onto a typed exception, so messages must name what was wrong.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `config.json` missing, unparsable, or holding an invalid value.
    #[error("config error: {0}")]
    Config(String),
    /// Weights missing, truncated, mis-shaped, non-finite or not matching the config.
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
    /// Caller input with the wrong type, shape or range.
    #[error("{0}")]
    Input(String),
    /// A tensor-library failure or a caught panic: a bug, never the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    pub fn checkpoint(msg: impl Into<String>) -> Self {
        Error::Checkpoint(msg.into())
    }
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }
    /// The message without the variant's prefix.
    pub fn message(&self) -> String {
        match self {
            Error::Config(m) | Error::Checkpoint(m) | Error::Input(m) | Error::Internal(m) => {
                m.clone()
            }
        }
    }
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error::Checkpoint(format!("cannot read {}: {err}", path.display()))
    }
}

impl From<candle_core::Error> for Error {
    fn from(err: candle_core::Error) -> Self {
        Error::Internal(err.to_string())
    }
}

/// The kernels' errors: a caller's input or an unsupported request stays an input error; bad
/// buffers and CUDA failures are the engine's.
impl From<speechinfer_kernels::KernelError> for Error {
    fn from(err: speechinfer_kernels::KernelError) -> Self {
        use speechinfer_kernels::KernelError as K;
        match err {
            K::Input(m) => Error::Input(m),
            K::Unsupported(_) => Error::Input(err.to_string()),
            K::Shape(_) | K::Cuda(_) => Error::Internal(err.to_string()),
        }
    }
}
