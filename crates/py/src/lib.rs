//! `speechinfer._native`: the Python face of the engine. Every call that computes releases the
//! GIL, catches panics, and turns engine errors into the typed exceptions of
//! `speechinfer.errors`.

mod arrays;
mod codec;
mod errors;
mod lm;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<codec::Codec>()?;
    m.add_class::<codec::StreamDecoder>()?;
    m.add_class::<codec::StreamEncoder>()?;
    m.add_class::<lm::SpeechLM>()?;
    Ok(())
}
