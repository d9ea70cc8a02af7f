//! `Codec`, `StreamDecoder` and `StreamEncoder` for Python.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use numpy::PyArrayDyn;
use pyo3::prelude::*;
use speechinfer_codec::{Codec as Engine, CodecFormat, CodecWeights, LoadOptions, StreamState};
use speechinfer_core::{Error, Result};

use crate::arrays::{float32_array, int_array, tensor_to_host, to_numpy, HostArray};
use crate::errors::{input_error, without_gil};

const MAX_BATCH: usize = 4096;

/// A neural audio codec loaded from a model directory (`config.json` + `model.safetensors`: a
/// speechinfer codec or a Hugging Face EnCodec) or from a Kyutai Mimi checkpoint file.
///
/// Encodes waveforms into residual-VQ codes ``[B, Q, F]`` and decodes codes back to audio,
/// in one call or frame by frame. Safe to share between threads.
#[pyclass(module = "speechinfer._native", frozen)]
pub struct Codec {
    engine: Arc<Engine>,
}

impl Codec {
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    fn mono(&self) -> bool {
        self.engine.channels() == 1
    }

    /// numpy wave → `[B, C, T]` host array, by the shapes the public API accepts.
    fn wave_input(&self, py: Python<'_>, wave: &Bound<'_, PyAny>) -> PyResult<HostArray<f32>> {
        let mut array = float32_array(py, wave, "wave")?;
        let channels = self.engine.channels();
        array.shape = match (self.mono(), array.shape.as_slice()) {
            (true, [t]) => vec![1, 1, *t],
            (true, [b, t]) => vec![*b, 1, *t],
            (false, [b, c, t]) if *c == channels => vec![*b, *c, *t],
            (true, shape) => {
                return Err(input_error(
                    py,
                    format!("wave must be 1-D [samples] or 2-D [batch, samples] for this mono codec, got shape {shape:?}"),
                ))
            }
            (false, shape) => {
                return Err(input_error(
                    py,
                    format!("wave must be 3-D [batch, {channels}, samples] for this {channels}-channel codec, got shape {shape:?}"),
                ))
            }
        };
        if array.shape[2] == 0 {
            return Err(input_error(py, "wave is empty (0 samples)"));
        }
        if array.shape[0] == 0 {
            return Err(input_error(py, "wave has batch size 0"));
        }
        Ok(array)
    }

    fn codes_input(&self, py: Python<'_>, codes: &Bound<'_, PyAny>) -> PyResult<HostArray<i64>> {
        let array = int_array(py, codes, "codes")?;
        if array.shape.len() != 3 {
            return Err(input_error(
                py,
                format!(
                    "codes must be 3-D [batch, codebooks, frames], got shape {:?}",
                    array.shape
                ),
            ));
        }
        Ok(array)
    }

    /// `[B, C, T]` engine output → the public shape (`[B, T]` for mono).
    fn wave_output<'py>(
        &self,
        py: Python<'py>,
        out: HostArray<f32>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let shape = if self.mono() {
            vec![out.shape[0], out.shape[2]]
        } else {
            out.shape.clone()
        };
        to_numpy(py, out.values, &shape)
    }
}

fn run_decode(
    engine: &Engine,
    state: &mut StreamState,
    codes: &HostArray<i64>,
) -> Result<HostArray<f32>> {
    let codes = codes.to_tensor(&Device::Cpu)?;
    let wave = engine.decode_step(state, &codes)?;
    tensor_to_host(&wave)
}

fn check_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 || batch_size > MAX_BATCH {
        return Err(Error::input(format!(
            "batch_size must be in [1, {MAX_BATCH}], got {batch_size}"
        )));
    }
    Ok(())
}

#[pymethods]
impl Codec {
    /// Load a codec from a model directory holding ``config.json`` and ``model.safetensors`` (a
    /// speechinfer codec, or a Hugging Face ``EncodecModel`` saved with ``save_pretrained`` when
    /// the config's ``model_type`` is ``"encodec"``), or from a Kyutai Mimi ``.safetensors`` file
    /// (the ``tokenizer-….safetensors`` of ``moshi`` and ``rustymimi``), detected from its tensor
    /// names. ``num_codebooks`` sets how many codebooks ``encode`` produces: Mimi 1 … 32 (default
    /// 8); EnCodec one of the counts its ``target_bandwidths`` give (2/4/8/16/32 for 1.5 … 24
    /// kbps; default the largest). ``format`` (``"speechinfer"``, ``"mimi"`` or ``"encodec"``)
    /// skips the detection. ``weights="bf16"`` (Mimi only) rounds the conv and linear weights to
    /// bfloat16: streaming steps then read half the bytes; audio moves by the rounding
    /// (docs/codec.md, "bfloat16 weights").
    #[staticmethod]
    #[pyo3(
        signature = (path, num_codebooks=None, format=None, weights="float32"),
        text_signature = "(path: str | os.PathLike[str], num_codebooks: int | None = None, format: str | None = None, weights: str = 'float32') -> Codec"
    )]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        num_codebooks: Option<usize>,
        format: Option<String>,
        weights: &str,
    ) -> PyResult<Self> {
        let weights = weights.to_string();
        let engine = without_gil(py, move || {
            let options = LoadOptions {
                format: format.as_deref().map(CodecFormat::parse).transpose()?,
                num_codebooks,
                weights: CodecWeights::parse(&weights)?,
            };
            Engine::load_with(&path, &options)
        })?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// str: Checkpoint format: ``"speechinfer"`` (model directory), ``"mimi"`` or ``"encodec"``.
    #[getter]
    fn format(&self) -> &'static str {
        self.engine.format().name()
    }

    /// str: How the weights are held: ``"float32"`` or ``"bf16"``.
    #[getter]
    fn weights(&self) -> &'static str {
        self.engine.weights().name()
    }

    /// int: Audio sample rate in Hz.
    #[getter]
    fn sample_rate(&self) -> usize {
        self.engine.sample_rate()
    }

    /// float: Code frames per second (``sample_rate / hop_length``).
    #[getter]
    fn frame_rate(&self) -> f64 {
        self.engine.frame_rate()
    }

    /// int: Samples per code frame.
    #[getter]
    fn hop_length(&self) -> usize {
        self.engine.hop_length()
    }

    /// int: Audio channels (1 = mono).
    #[getter]
    fn channels(&self) -> usize {
        self.engine.channels()
    }

    /// int: Number of residual-VQ codebooks Q.
    #[getter]
    fn num_codebooks(&self) -> usize {
        self.engine.num_codebooks()
    }

    /// int: Entries per codebook; valid codes are ``0 .. codebook_size - 1``.
    #[getter]
    fn codebook_size(&self) -> usize {
        self.engine.codebook_size()
    }

    /// str: The model's ``config.json`` as a JSON string (for Mimi, its fixed architecture).
    #[getter]
    fn config_json(&self) -> String {
        self.engine.config_json()
    }

    /// Encode float32 audio (``[T]`` or ``[B, T]``; ``[B, C, T]`` for multi-channel codecs)
    /// into int64 codes ``[B, Q, ceil(T / hop_length)]``. The end is zero-padded to a whole frame.
    #[pyo3(text_signature = "($self, wave: NDArray[np.float32]) -> NDArray[np.int64]")]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        wave: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let wave = self.wave_input(py, wave)?;
        let engine = self.engine.clone();
        let codes = without_gil(py, move || {
            let codes = engine.encode(&wave.to_tensor(&Device::Cpu)?)?;
            tensor_to_host::<i64>(&codes)
        })?;
        to_numpy(py, codes.values, &codes.shape)
    }

    /// Decode integer codes ``[B, q, F]`` using the first ``q <= Q`` codebooks (fewer codebooks =
    /// lower bitrate) into float32 audio ``[B, F * hop_length]`` (``[B, C, ...]`` multi-channel).
    #[pyo3(text_signature = "($self, codes: NDArray[np.integer]) -> NDArray[np.float32]")]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let codes = self.codes_input(py, codes)?;
        let engine = self.engine.clone();
        let wave = without_gil(py, move || {
            tensor_to_host(&engine.decode(&codes.to_tensor(&Device::Cpu)?)?)
        })?;
        self.wave_output(py, wave)
    }

    /// A streaming decoder for ``batch_size`` parallel streams: feed it a few frames at a time.
    #[pyo3(signature = (batch_size=1), text_signature = "($self, batch_size: int = 1) -> StreamDecoder")]
    fn stream_decoder(slf: Bound<'_, Self>, batch_size: usize) -> PyResult<StreamDecoder> {
        check_batch_size(batch_size).map_err(|e| crate::errors::to_pyerr(slf.py(), e))?;
        Ok(StreamDecoder {
            codec: slf.unbind(),
            state: Mutex::new(StreamState::new(batch_size)),
        })
    }

    /// A streaming encoder for ``batch_size`` parallel streams: feed it audio of any length.
    #[pyo3(signature = (batch_size=1), text_signature = "($self, batch_size: int = 1) -> StreamEncoder")]
    fn stream_encoder(slf: Bound<'_, Self>, batch_size: usize) -> PyResult<StreamEncoder> {
        check_batch_size(batch_size).map_err(|e| crate::errors::to_pyerr(slf.py(), e))?;
        Ok(StreamEncoder {
            codec: slf.unbind(),
            state: Mutex::new(StreamState::new(batch_size)),
        })
    }

    fn __repr__(&self) -> String {
        let e = &self.engine;
        format!(
            "Codec(format='{}', sample_rate={}, frame_rate={}, num_codebooks={}, codebook_size={})",
            e.format().name(),
            e.sample_rate(),
            e.frame_rate(),
            e.num_codebooks(),
            e.codebook_size()
        )
    }
}

fn lock(state: &Mutex<StreamState>) -> Result<std::sync::MutexGuard<'_, StreamState>> {
    state
        .lock()
        .map_err(|_| Error::internal("stream state poisoned by an earlier panic; call reset()"))
}

/// Decodes codes frame by frame; the concatenated chunks equal :meth:`Codec.decode` of all frames.
#[pyclass(module = "speechinfer._native", frozen)]
pub struct StreamDecoder {
    codec: Py<Codec>,
    state: Mutex<StreamState>,
}

#[pymethods]
impl StreamDecoder {
    /// Decode the next ``n`` frames ``[B, q, n]`` → float32 ``[B, n * hop_length]``.
    #[pyo3(text_signature = "($self, codes: NDArray[np.integer]) -> NDArray[np.float32]")]
    fn step<'py>(
        &self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let codec = self.codec.get();
        let codes = codec.codes_input(py, codes)?;
        let engine = codec.engine.clone();
        let state = &self.state;
        let wave = without_gil(py, move || {
            let mut guard = lock(state)?;
            run_decode(&engine, &mut guard, &codes)
        })?;
        codec.wave_output(py, wave)
    }

    /// Start a new utterance (all streams, or only batch item ``index``).
    #[pyo3(signature = (index=None), text_signature = "($self, index: int | None = None) -> None")]
    fn reset(&self, py: Python<'_>, index: Option<usize>) -> PyResult<()> {
        let state = &self.state;
        without_gil(py, move || {
            let mut guard = lock(state)?;
            match index {
                Some(i) => guard.reset_item(i),
                None => {
                    guard.reset();
                    Ok(())
                }
            }
        })
    }

    /// int: Number of parallel streams.
    #[getter]
    fn batch_size(&self) -> PyResult<usize> {
        Ok(self.state.lock().map(|s| s.batch_size()).unwrap_or(0))
    }
}

/// Encodes audio chunk by chunk; returns the codes of every frame completed so far.
#[pyclass(module = "speechinfer._native", frozen)]
pub struct StreamEncoder {
    codec: Py<Codec>,
    state: Mutex<StreamState>,
}

#[pymethods]
impl StreamEncoder {
    /// Feed float32 audio ``[B, n]`` (``[n]`` when batch_size is 1) → int64 codes
    /// ``[B, Q, frames completed]``; samples short of a frame wait for the next call.
    #[pyo3(text_signature = "($self, wave: NDArray[np.float32]) -> NDArray[np.int64]")]
    fn step<'py>(
        &self,
        py: Python<'py>,
        wave: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let codec = self.codec.get();
        let wave = codec.wave_input(py, wave)?;
        let engine = codec.engine.clone();
        let state = &self.state;
        let codes = without_gil(py, move || {
            let mut guard = lock(state)?;
            let codes = engine.encode_step(&mut guard, &wave.to_tensor(&Device::Cpu)?)?;
            tensor_to_host::<i64>(&codes)
        })?;
        to_numpy(py, codes.values, &codes.shape)
    }

    /// Start a new utterance: forget carried context and any partial frame.
    #[pyo3(text_signature = "($self) -> None")]
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        let state = &self.state;
        without_gil(py, move || {
            lock(state)?.reset();
            Ok(())
        })
    }
}
