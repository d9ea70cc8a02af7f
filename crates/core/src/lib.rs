//! Shared foundations of the speechinfer engine: the error type, config and checkpoint loading,
//! and the pure index/sampling logic that the models build on. Knows nothing of Python.

pub mod activation;
pub mod config;
pub mod conv;
pub mod error;
pub mod kernels;
pub mod weights;

pub use error::{Error, Result};
pub mod pattern;
pub mod rng;
pub mod sampling;
pub mod tensor_ops;
#[doc(hidden)]
pub mod testing;
