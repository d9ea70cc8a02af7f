//! The speechinfer neural codec: causal SEANet-style encoder → residual VQ → codes, and codes →
//! summed codebook vectors → causal decoder → waveform, with frame-by-frame streaming state.
//! The architecture contract shared with the PyTorch twin is `docs/codec.md`. The same `Codec`
//! also serves Kyutai Mimi checkpoints as they are released (`mimi`) and Hugging Face EnCodec
//! models (`encodec`).

pub mod config;
mod conv;
#[cfg(feature = "cuda")]
mod cuda;
pub mod encodec;
pub mod mimi;
mod model;
mod rvq;
mod seanet;
mod slots;
mod state;
#[cfg(test)]
mod tests_kernels;

pub use config::CodecConfig;
pub use encodec::EncodecConfig;
pub use mimi::MimiConfig;
pub use model::{Codec, CodecFormat, CodecWeights, LoadOptions};
pub use slots::{SlotDecoders, SlotFrames};
pub use state::StreamState;
