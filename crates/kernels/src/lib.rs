//! The transformer decoding step as a fixed sequence of kernels over flat buffers
//! (`docs/cuda.md`): summed token embeddings, RMSNorm, projections with a fused residual,
//! rotary embeddings and the KV-cache write, one-query attention, SwiGLU, the heads.
//!
//! [`reference`] runs every kernel in plain Rust with the same layouts and index arithmetic as
//! the CUDA versions in `cuda/kernels.cu`; the lm crate tests it against its candle forward, so
//! the decomposition the GPU runs is checked on every machine. The [`cuda`] module (feature
//! `cuda`) runs the same step on a GPU. [`codec`] does the same for the codec decoder.

pub mod codec;
mod error;
mod layout;
pub mod reference;

#[cfg(feature = "cuda")]
pub mod cuda;

pub use error::KernelError;
pub use layout::{rope_tables, DecoderSizes, DecoderWeights, LayerWeights};
