//! `SpeechLM` for Python: teacher-forced logits, scores and greedy generation over token grids.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::PyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::PyList;
use speechinfer_core::pattern::PatternKind;
use speechinfer_lm::{GenerateRequest, GridShape, Prompt, SpeechLm as Engine};

use crate::arrays::{int_array, tensor_to_host, to_numpy, HostArray};
use crate::errors::{input_error, without_gil};
use crate::sampling::stream_sampling;
use crate::session::{GenerationStream, Session};

/// `None` → `[0]`, an int → `[seed]`, a list of ints → one per sequence.
pub(crate) fn seeds(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u64>> {
    let bad = || input_error(py, "seed must be a non-negative int or a list of them");
    match obj {
        None => Ok(vec![0]),
        Some(o) if o.is_none() => Ok(vec![0]),
        Some(o) => {
            if let Ok(seed) = o.extract::<u64>() {
                return Ok(vec![seed]);
            }
            let list = o.cast::<PyList>().map_err(|_| bad())?;
            let seeds = list
                .iter()
                .map(|s| s.extract::<u64>().map_err(|_| bad()))
                .collect::<PyResult<Vec<_>>>()?;
            if seeds.is_empty() {
                return Err(bad());
            }
            Ok(seeds)
        }
    }
}

/// A stream index given from Python (negative → `InputError`; too large is the engine's check).
fn stream_index(py: Python<'_>, stream: i64) -> PyResult<usize> {
    usize::try_from(stream)
        .map_err(|_| input_error(py, format!("stream must be >= 0, got {stream}")))
}

/// A speech token LM loaded from a model directory (``config.json`` + ``model.safetensors``).
///
/// Works on int64 grids ``[B, K, T]``: K token streams (text, audio codebooks, speakers) by T
/// frames. Safe to share between threads.
#[pyclass(module = "speechinfer._native", frozen)]
pub struct SpeechLM {
    engine: Arc<Engine>,
}

impl SpeechLM {
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// The prompts of `generate` / `stream`: an array `[B, K, T]` or a list of `[K, T_b]`;
    /// also says whether a list was given.
    fn prompts(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        what: &str,
        allow_empty: bool,
    ) -> PyResult<(Vec<Prompt>, bool)> {
        let k = self.engine.num_streams();
        if let Ok(list) = obj.cast::<PyList>() {
            let prompts = list
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let name = format!("{what}[{i}]");
                    let array = int_array(py, &item, &name)?;
                    match array.shape[..] {
                        [streams, frames] if streams == k && (frames > 0 || allow_empty) => {
                            Ok(Prompt {
                                tokens: array.values,
                                frames,
                            })
                        }
                        _ => Err(input_error(
                            py,
                            format!(
                                "{name} must be 2-D [{k} streams, frames], got shape {:?}",
                                array.shape
                            ),
                        )),
                    }
                })
                .collect::<PyResult<Vec<_>>>()?;
            if prompts.is_empty() {
                return Err(input_error(py, format!("{what} is an empty list")));
            }
            return Ok((prompts, true));
        }
        let array = int_array(py, obj, what)?;
        match array.shape[..] {
            [b, streams, frames] if streams == k && b > 0 && (frames > 0 || allow_empty) => {
                let shape = GridShape::new(b, streams, frames);
                Ok((Prompt::split(&array.values, shape), false))
            }
            _ => self
                .grid_input(py, obj, what, "frames")
                .map(|_| (Vec::new(), false)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        max_frames: i64,
        sampling: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
        stop_on_eos: bool,
        cfg_prompt: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(GenerateRequest, bool)> {
        let max_frames = usize::try_from(max_frames)
            .map_err(|_| input_error(py, format!("max_frames must be >= 0, got {max_frames}")))?;
        let (prompts, as_list) = self.prompts(py, prompt, "prompt", false)?;
        let cfg_prompts = match cfg_prompt {
            Some(c) if !c.is_none() => Some(self.prompts(py, c, "cfg_prompt", true)?.0),
            _ => None,
        };
        let request = GenerateRequest {
            prompts,
            max_frames,
            sampling: stream_sampling(py, sampling, &self.engine.config().vocab_sizes())?,
            seeds: seeds(py, seed)?,
            stop_on_eos,
            cfg_prompts,
        };
        Ok((request, as_list))
    }

    /// An integer numpy array of shape `[B, K, L]` for this model.
    fn grid_input(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        what: &str,
        layout: &str,
    ) -> PyResult<(HostArray<i64>, GridShape)> {
        self.grid_input_of(py, obj, what, layout, self.engine.num_streams())
    }

    /// [`SpeechLM::grid_input`] for a grid of `k` streams.
    fn grid_input_of(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        what: &str,
        layout: &str,
        k: usize,
    ) -> PyResult<(HostArray<i64>, GridShape)> {
        let array = int_array(py, obj, what)?;
        let [b, streams, len] = array.shape[..] else {
            return Err(input_error(
                py,
                format!(
                    "{what} must be 3-D [batch, {k} streams, {layout}], got shape {:?}",
                    array.shape
                ),
            ));
        };
        if streams != k {
            return Err(input_error(
                py,
                format!("{what} has {streams} streams (axis 1), the model has {k}"),
            ));
        }
        if b == 0 || len == 0 {
            return Err(input_error(
                py,
                format!("{what} is empty: shape {:?}", array.shape),
            ));
        }
        Ok((array, GridShape::new(b, streams, len)))
    }
}

#[pymethods]
impl SpeechLM {
    /// Load an LM from a model directory holding ``config.json`` and ``model.safetensors`` (or
    /// a Hugging Face Llama directory). ``weights="int8"`` stores the transformer's projections
    /// and the main heads as int8 with one scale per output row: decoding steps read a quarter
    /// of the bytes; logits move by the rounding (docs/lm.md, "int8 weights").
    #[staticmethod]
    #[pyo3(
        signature = (path, weights="float32"),
        text_signature = "(path: str | os.PathLike[str], weights: str = 'float32') -> SpeechLM"
    )]
    fn load(py: Python<'_>, path: PathBuf, weights: &str) -> PyResult<Self> {
        let int8 = match weights {
            "float32" => false,
            "int8" => true,
            other => {
                return Err(input_error(
                    py,
                    format!("weights must be \"float32\" or \"int8\", got {other:?}"),
                ))
            }
        };
        let engine = without_gil(py, move || {
            let mut lm = Engine::load(&path)?;
            if int8 {
                lm.quantize_int8()?;
            }
            Ok(lm)
        })?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// int: K, the number of token streams.
    #[getter]
    fn num_streams(&self) -> usize {
        self.engine.num_streams()
    }

    /// list[int]: Vocabulary size of every stream, in stream order.
    #[getter]
    fn vocab_sizes(&self) -> Vec<usize> {
        self.engine.config().vocab_sizes()
    }

    /// str: The pattern name, e.g. ``"delay"`` or ``"parallel"``.
    #[getter]
    fn pattern(&self) -> String {
        self.engine.config().pattern.clone()
    }

    /// int: The stream whose EOS ends a generation.
    #[getter]
    fn end_stream(&self) -> usize {
        self.engine.config().end_stream
    }

    /// list[int]: Per-stream delays (all 0 for ``"parallel"``).
    #[getter]
    fn delays(&self) -> Vec<usize> {
        match self.engine.pattern() {
            PatternKind::Delay { delays, .. } => delays.clone(),
            _ => vec![0; self.engine.num_streams()],
        }
    }

    /// int: Most LM positions (steps) one sequence may feed to the model.
    #[getter]
    fn max_context(&self) -> usize {
        self.engine.config().max_context
    }

    /// list[int]: The special (bos) token of every stream: step 0 and positions without a frame.
    #[getter]
    fn special_ids(&self) -> Vec<i64> {
        self.engine.config().special_ids()
    }

    /// str: The model's ``config.json`` as a JSON string.
    #[getter]
    fn config_json(&self) -> String {
        serde_json::to_string(self.engine.config()).unwrap_or_default()
    }

    /// bool: Whether the model directory holds a ``tokenizer.json`` (``tokenize``/``detokenize``).
    #[getter]
    fn has_tokenizer(&self) -> bool {
        self.engine.tokenizer().is_some()
    }

    /// Token ids of ``text`` in stream ``stream``'s vocabulary: the ``tokenizer.json`` ids (no
    /// special tokens added) plus the stream's ``text_offset``. Raises ``InputError`` when the
    /// model has no tokenizer or an id does not fit the stream's vocabulary.
    #[pyo3(
        signature = (text, stream=0),
        text_signature = "($self, text: str, stream: int = 0) -> list[int]"
    )]
    fn tokenize(&self, py: Python<'_>, text: String, stream: i64) -> PyResult<Vec<i64>> {
        let stream = stream_index(py, stream)?;
        let engine = self.engine.clone();
        without_gil(py, move || engine.tokenize(&text, stream))
    }

    /// The text of stream ``stream``'s tokens (a list of ints or a 1-D integer array, e.g. a row
    /// of a generated grid): ids in the stream's text range (``text_offset`` onwards, as many as
    /// the tokenizer has) are decoded, every other id (pad, audio units, markers, ``-1``) is
    /// skipped.
    #[pyo3(
        signature = (ids, stream=0),
        text_signature = "($self, ids: list[int] | NDArray[np.integer], stream: int = 0) -> str"
    )]
    fn detokenize(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, stream: i64) -> PyResult<String> {
        let stream = stream_index(py, stream)?;
        let bad = || input_error(py, "ids must be a list of ints or a 1-D integer array");
        let ids: Vec<i64> = if let Ok(list) = ids.cast::<PyList>() {
            list.iter()
                .map(|id| id.extract::<i64>().map_err(|_| bad()))
                .collect::<PyResult<_>>()?
        } else {
            let array = int_array(py, ids, "ids")?;
            if array.shape.len() != 1 {
                return Err(input_error(
                    py,
                    format!("ids must be 1-D, got shape {:?}", array.shape),
                ));
            }
            array.values
        };
        let engine = self.engine.clone();
        without_gil(py, move || engine.detokenize(&ids, stream))
    }

    /// Teacher-forced logits of a step grid ``[B, K, S]`` (LM steps, pattern already applied):
    /// a list of K float32 arrays ``[B, S, V_k]``; logits at step s predict step s + 1.
    /// ``"depth"``: ``[B, S − 1, V_k]`` (each step's logits given the next step's earlier
    /// streams); ``"coarse_first"``: the AR model's, steps ``[B, 1, S]``.
    #[pyo3(text_signature = "($self, steps: NDArray[np.integer]) -> list[NDArray[np.float32]]")]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        steps: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let main = self.engine.config().main_streams();
        let (steps, shape) = self.grid_input_of(py, steps, "steps", "steps", main)?;
        let engine = self.engine.clone();
        let outs = without_gil(py, move || {
            engine
                .logits(&steps.values, shape)?
                .iter()
                .map(tensor_to_host::<f32>)
                .collect::<speechinfer_core::Result<Vec<_>>>()
        })?;
        let arrays = outs
            .into_iter()
            .map(|h| to_numpy(py, h.values, &h.shape))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, arrays)
    }

    /// Summed log-probability (float64 ``[B]``) of every token after the first frame of each
    /// frame grid ``[B, K, T]``.
    #[pyo3(text_signature = "($self, grid: NDArray[np.integer]) -> NDArray[np.float64]")]
    fn score<'py>(
        &self,
        py: Python<'py>,
        grid: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
        let (grid, shape) = self.grid_input(py, grid, "grid", "frames")?;
        let engine = self.engine.clone();
        let scores = without_gil(py, move || engine.score(&grid.values, shape))?;
        let n = scores.len();
        to_numpy(py, scores, &[n])
    }

    /// Continue prompts by ``max_frames`` frames.
    ///
    /// ``prompt`` is an int64 frame grid ``[B, K, T]`` (returns ``[B, K, T + max_frames]``) or a
    /// list of ``[K, T_b]`` grids of different lengths (returns a list of ``[K, T_b +
    /// max_frames]``); delays are reverted. ``sampling``: ``None`` (greedy), a ``Sampling`` or a
    /// list of one per stream. ``seed``: one int for every sequence or a list of one per
    /// sequence; a sequence's tokens do not depend on the rest of the batch. With
    /// ``stop_on_eos`` a sequence ends at its end stream's EOS and later frames hold the pad
    /// token. ``cfg_prompt`` (same form as ``prompt``) is the unconditional prompt of a guided
    /// run (default: no prompt frames).
    #[pyo3(
        signature = (prompt, max_frames, sampling=None, seed=None, *, stop_on_eos=true, cfg_prompt=None),
        text_signature = "($self, prompt: NDArray[np.integer] | list[NDArray[np.integer]], max_frames: int, sampling: Sampling | list[Sampling | None] | None = None, seed: int | list[int] = 0, *, stop_on_eos: bool = True, cfg_prompt: NDArray[np.integer] | list[NDArray[np.integer]] | None = None) -> NDArray[np.int64] | list[NDArray[np.int64]]"
    )]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        max_frames: i64,
        sampling: Option<&Bound<'py, PyAny>>,
        seed: Option<&Bound<'py, PyAny>>,
        stop_on_eos: bool,
        cfg_prompt: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (request, as_list) = self.request(
            py,
            prompt,
            max_frames,
            sampling,
            seed,
            stop_on_eos,
            cfg_prompt,
        )?;
        let engine = self.engine.clone();
        let k_n = engine.num_streams();
        let lens: Vec<usize> = request
            .prompts
            .iter()
            .map(|p| p.frames + request.max_frames)
            .collect();
        let grids = without_gil(py, move || engine.generate(&request))?;
        if as_list {
            let arrays = grids
                .into_iter()
                .zip(&lens)
                .map(|(g, &len)| to_numpy(py, g, &[k_n, len]))
                .collect::<PyResult<Vec<_>>>()?;
            return Ok(PyList::new(py, arrays)?.into_any());
        }
        let b = grids.len();
        let len = lens.first().copied().unwrap_or(0);
        Ok(to_numpy(py, grids.concat(), &[b, k_n, len])?.into_any())
    }

    /// Like ``generate``, but yields the generated frames as soon as every sequence has them:
    /// int64 arrays ``[B, K, n]`` whose concatenation is ``generate(...)[:, :, T:]``.
    #[pyo3(
        signature = (prompt, max_frames, sampling=None, seed=None, *, stop_on_eos=true, cfg_prompt=None),
        text_signature = "($self, prompt: NDArray[np.integer] | list[NDArray[np.integer]], max_frames: int, sampling: Sampling | list[Sampling | None] | None = None, seed: int | list[int] = 0, *, stop_on_eos: bool = True, cfg_prompt: NDArray[np.integer] | list[NDArray[np.integer]] | None = None) -> GenerationStream"
    )]
    #[allow(clippy::too_many_arguments)]
    fn stream<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        max_frames: i64,
        sampling: Option<&Bound<'py, PyAny>>,
        seed: Option<&Bound<'py, PyAny>>,
        stop_on_eos: bool,
        cfg_prompt: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<GenerationStream> {
        let (request, _) = self.request(
            py,
            prompt,
            max_frames,
            sampling,
            seed,
            stop_on_eos,
            cfg_prompt,
        )?;
        let engine = self.engine.clone();
        if engine.config().decoding().ok() == Some(speechinfer_lm::Decoding::CoarseFirst) {
            return Err(input_error(
                py,
                "stream() needs a frame-synchronous pattern; \"coarse_first\" completes frames \
                 only at the end (use generate())",
            ));
        }
        let worker = engine.clone();
        let generation = without_gil(py, move || worker.start_generation(&request))?;
        Ok(GenerationStream::new(engine, generation))
    }

    /// A frame-by-frame session of ``batch_size`` sequences (full duplex: force some streams,
    /// let the model pick the others). See ``Session.step``. A ``cfg_scale`` in ``sampling``
    /// makes it guided: each sequence gets an unconditional twin (``Session.step``'s ``uncond``).
    #[pyo3(
        signature = (batch_size=1, sampling=None, seed=None),
        text_signature = "($self, batch_size: int = 1, sampling: Sampling | list[Sampling | None] | None = None, seed: int | list[int] = 0) -> Session"
    )]
    fn session(
        &self,
        py: Python<'_>,
        batch_size: i64,
        sampling: Option<&Bound<'_, PyAny>>,
        seed: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Session> {
        let batch = usize::try_from(batch_size)
            .map_err(|_| input_error(py, format!("batch_size must be >= 1, got {batch_size}")))?;
        let sampling = stream_sampling(py, sampling, &self.engine.config().vocab_sizes())?;
        let seeds = seeds(py, seed)?;
        let engine = self.engine.clone();
        let worker = engine.clone();
        let session = without_gil(py, move || worker.session(batch, sampling, seeds))?;
        Ok(Session::new(engine, session))
    }

    /// Logits ``[B, T, V_j]`` (float32) of the coarse-first NAR model for stage ``stage``
    /// (stream j, 1 ≤ j < K) on a frame grid ``[B, K, T]`` whose first ``prompt_frames`` frames
    /// are the acoustic prompt.
    #[pyo3(
        text_signature = "($self, grid: NDArray[np.integer], stage: int, prompt_frames: int) -> NDArray[np.float32]"
    )]
    fn nar_logits<'py>(
        &self,
        py: Python<'py>,
        grid: &Bound<'py, PyAny>,
        stage: usize,
        prompt_frames: usize,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let (grid, shape) = self.grid_input(py, grid, "grid", "frames")?;
        let engine = self.engine.clone();
        let host = without_gil(py, move || {
            engine.check_tokens(&grid.values, shape, "grid")?;
            let nar = engine.nar().ok_or_else(|| {
                speechinfer_core::Error::input(format!(
                    "nar_logits needs pattern \"coarse_first\", this model is \"{}\"",
                    engine.config().pattern
                ))
            })?;
            let logits = nar.logits(&grid.values, shape.batch, shape.len, stage, prompt_frames)?;
            tensor_to_host::<f32>(&logits)
        })?;
        to_numpy(py, host.values, &host.shape)
    }

    fn __repr__(&self) -> String {
        let c = self.engine.config();
        format!(
            "SpeechLM(num_streams={}, vocab_sizes={:?}, pattern={:?}, d_model={}, n_layers={})",
            c.num_streams(),
            c.vocab_sizes(),
            c.pattern,
            c.d_model,
            c.n_layers
        )
    }
}
