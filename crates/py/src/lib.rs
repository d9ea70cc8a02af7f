//! `speechinfer._native`: the Python face of the engine. Every call that computes releases the
//! GIL, catches panics, and turns engine errors into the typed exceptions of
//! `speechinfer.errors`.

mod arrays;
mod codec;
mod errors;
mod lm;
mod sampling;
mod session;
mod threads;
mod tts;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<codec::Codec>()?;
    m.add_class::<codec::StreamDecoder>()?;
    m.add_class::<codec::StreamEncoder>()?;
    m.add_class::<lm::SpeechLM>()?;
    m.add_class::<sampling::Sampling>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<session::GenerationStream>()?;
    m.add_class::<tts::Scheduler>()?;
    m.add_function(wrap_pyfunction!(tts::generate_aligned, m)?)?;
    m.add_function(wrap_pyfunction!(threads::set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(threads::num_threads, m)?)?;
    m.add("NO_INPUT", speechinfer_lm::NO_INPUT)?;
    m.add("SAMPLE", speechinfer_lm::SAMPLE)?;
    Ok(())
}
