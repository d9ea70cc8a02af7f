//! The token LM: a Llama-shaped transformer over a grid of token streams. The architecture
//! contract shared with the PyTorch twin is `docs/lm.md`.

mod attention;
mod cached_attention;
mod coarse;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
mod decode_export;
mod decoder;
mod depth;
mod embed;
mod generate;
mod hf_llama;
mod linear;
mod model;
mod nar;
mod picker;
mod session;
mod slots;
mod text;
mod transformer;

pub use attention::KvCache;
pub use config::{Decoding, DepthConfig, LmConfig, Role, StreamConfig};
pub use decode_export::stack_stream_logits;
pub use embed::{NO_INPUT, SAMPLE};
pub use generate::{GenerateRequest, Generation, Prompt};
pub use model::{GridShape, SpeechLm, MAX_BATCH};
pub use picker::StreamSampling;
pub use session::Session;
pub use slots::SlotSession;
pub use text::{TextTokenizer, TOKENIZER_FILE};
pub use transformer::Sizes;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_kernels;
