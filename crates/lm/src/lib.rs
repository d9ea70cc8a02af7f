//! The token LM: a Llama-shaped transformer over a grid of token streams. The architecture
//! contract shared with the PyTorch twin is `docs/lm.md`.

mod attention;
pub mod config;
mod generate;
mod model;
mod transformer;

pub use attention::KvCache;
pub use config::{LmConfig, Role, StreamConfig};
pub use model::{GridShape, SpeechLm, MAX_BATCH};

#[cfg(test)]
mod tests;
