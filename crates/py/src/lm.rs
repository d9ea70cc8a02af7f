//! `SpeechLM` for Python: teacher-forced logits, scores and greedy generation over token grids.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::PyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::PyList;
use speechinfer_core::pattern::PatternKind;
use speechinfer_lm::{GridShape, SpeechLm as Engine};

use crate::arrays::{int_array, tensor_to_host, to_numpy, HostArray};
use crate::errors::{input_error, without_gil};

/// A speech token LM loaded from a model directory (``config.json`` + ``model.safetensors``).
///
/// Works on int64 grids ``[B, K, T]``: K token streams (text, audio codebooks, speakers) by T
/// frames. Safe to share between threads.
#[pyclass(module = "speechinfer._native", frozen)]
pub struct SpeechLM {
    engine: Arc<Engine>,
}

impl SpeechLM {
    /// An integer numpy array of shape `[B, K, L]` for this model.
    fn grid_input(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        what: &str,
        layout: &str,
    ) -> PyResult<(HostArray<i64>, GridShape)> {
        let array = int_array(py, obj, what)?;
        let k = self.engine.num_streams();
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
    /// Load an LM from a model directory holding ``config.json`` and ``model.safetensors``.
    #[staticmethod]
    #[pyo3(text_signature = "(path: str | os.PathLike[str]) -> SpeechLM")]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let engine = without_gil(py, move || Engine::load(&path))?;
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

    /// Teacher-forced logits of a step grid ``[B, K, S]`` (LM steps, pattern already applied):
    /// a list of K float32 arrays ``[B, S, V_k]``; logits at step s predict step s + 1.
    #[pyo3(text_signature = "($self, steps: NDArray[np.integer]) -> list[NDArray[np.float32]]")]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        steps: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let (steps, shape) = self.grid_input(py, steps, "steps", "steps")?;
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

    /// Continue each prompt frame grid ``[B, K, T]`` by ``max_frames`` frames; returns the int64
    /// frame grid ``[B, K, T + max_frames]`` (delays reverted). ``sampling=None`` is greedy, the
    /// only mode so far; ``seed`` is accepted for the future sampled modes.
    #[pyo3(
        signature = (prompt, max_frames, sampling=None, seed=0),
        text_signature = "($self, prompt: NDArray[np.integer], max_frames: int, sampling: object | None = None, seed: int = 0) -> NDArray[np.int64]"
    )]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        max_frames: i64,
        sampling: Option<&Bound<'py, PyAny>>,
        seed: u64,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let _ = seed;
        if sampling.is_some_and(|s| !s.is_none()) {
            return Err(pyo3::exceptions::PyNotImplementedError::new_err(
                "only greedy generation (sampling=None) is implemented so far",
            ));
        }
        let max_frames = usize::try_from(max_frames)
            .map_err(|_| input_error(py, format!("max_frames must be >= 0, got {max_frames}")))?;
        let (prompt, shape) = self.grid_input(py, prompt, "prompt", "frames")?;
        let engine = self.engine.clone();
        let grid = without_gil(py, move || {
            engine.generate_greedy(&prompt.values, shape, max_frames)
        })?;
        to_numpy(
            py,
            grid,
            &[shape.batch, shape.streams, shape.len + max_frames],
        )
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
