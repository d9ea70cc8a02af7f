//! Text-to-speech synthesis over the LM and the codec: the `aligned` layout's frame loop
//! (`docs/tts.md`) and the continuous-batching scheduler that serves many requests at once
//! (`docs/serve.md`).

pub mod aligned;
pub mod numpy_rng;
pub mod scheduler;

pub use aligned::{generate_piece, PieceSpec};
pub use numpy_rng::NumpyRng;
pub use scheduler::{Event, Refusal, Scheduler, SchedulerConfig, SpeechRequest, Stats};
