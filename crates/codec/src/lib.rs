//! The speechinfer neural codec: causal SEANet-style encoder → residual VQ → codes, and codes →
//! summed codebook vectors → causal decoder → waveform, with frame-by-frame streaming state.
//! The architecture contract shared with the PyTorch twin is `docs/codec.md`.

pub mod config;
mod conv;
mod model;
mod rvq;
mod seanet;
mod state;

pub use config::CodecConfig;
pub use model::Codec;
pub use state::StreamState;
