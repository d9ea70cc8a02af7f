//! The token LM: a Llama-shaped transformer over a grid of token streams. The architecture
//! contract shared with the PyTorch twin is `docs/lm.md`.

mod attention;
mod embed;
pub mod config;
mod generate;
mod model;
mod transformer;

pub use attention::KvCache;
pub use config::{Decoding, DepthConfig, LmConfig, Role, StreamConfig};
pub use embed::{NO_INPUT, SAMPLE};
pub use transformer::Sizes;
pub use model::{GridShape, SpeechLm, MAX_BATCH};

#[cfg(test)]
mod tests;
