//! `generate_aligned` (one piece of text in the aligned layout) and `Scheduler` (continuous
//! batching of speech requests) for Python.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use numpy::PyArrayDyn;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use speechinfer_tts::{
    generate_piece, Event, PieceSpec, Refusal, Scheduler as Engine, SchedulerConfig, SpeechRequest,
};

use crate::arrays::to_numpy;
use crate::codec::Codec;
use crate::errors::{input_error, without_gil};
use crate::lm::SpeechLM;
use crate::sampling::stream_sampling;

/// The grid ``[K, n]`` (int64) of one piece of text spoken in the ``aligned`` layout of
/// docs/tts.md: frame 0 the voice, then the audio frames and, when speech ended within
/// ``max_frames``, the EOS frame (``codebook_size`` in every audio stream). ``text_ids`` are
/// text-stream ids without the final ``eos``; ``sampling`` is per stream and must not let
/// audio0 sample EOS (the end of speech is drawn from its probability, from NumPy's
/// ``default_rng(seed)``, as are the text timings). Guided when the sampling has a cfg_scale.
/// ``on_frame(frames)`` is called with the count of complete audio frames as they come.
#[pyfunction]
#[pyo3(
    signature = (lm, sampling, voice_token, text_ids, max_frames, codebook_size, seed, max_tail_frames, on_frame=None),
    text_signature = "(lm: SpeechLM, sampling: list[Sampling | None], voice_token: int, text_ids: list[int], max_frames: int, codebook_size: int, seed: int, max_tail_frames: int, on_frame: Callable[[int], None] | None = None) -> NDArray[np.int64]"
)]
#[allow(clippy::too_many_arguments)]
pub fn generate_aligned<'py>(
    py: Python<'py>,
    lm: &SpeechLM,
    sampling: &Bound<'py, PyAny>,
    voice_token: i64,
    text_ids: Vec<i64>,
    max_frames: usize,
    codebook_size: usize,
    seed: u64,
    max_tail_frames: usize,
    on_frame: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
    let engine = lm.engine();
    let sampling = stream_sampling(py, Some(sampling), &engine.config().vocab_sizes())?;
    let spec = PieceSpec {
        voice_token,
        text: text_ids,
        seed,
        max_frames,
        max_tail_frames,
    };
    let k_n = engine.num_streams();
    let callback_error: Arc<Mutex<Option<PyErr>>> = Arc::default();
    let raised = callback_error.clone();
    let outcome = without_gil(py, move || {
        let mut report = |frames: usize| -> speechinfer_core::Result<()> {
            let Some(callback) = &on_frame else {
                return Ok(());
            };
            Python::attach(|py| callback.call1(py, (frames,)).map(|_| ())).map_err(|e| {
                *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                speechinfer_core::Error::input("the on_frame callback raised")
            })
        };
        generate_piece(&engine, sampling, spec, codebook_size, &mut report)
    });
    if let Some(e) = callback_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(e);
    }
    let (grid, n) = outcome?;
    to_numpy(py, grid, &[k_n, n])
}

/// Continuous batching of speech requests over one pipeline's LM and codec (docs/serve.md).
///
/// A worker thread owns ``max_batch`` slots; ``submit`` queues a request (at most
/// ``max_queue`` wait), which joins a free slot at the next frame boundary; every decoding step
/// advances every active slot by one frame in one batched forward and decodes the new audio
/// frames in one batched codec call. Each request keeps its seed, so its audio is the same alone
/// or beside others. ``poll`` hands out the events. Safe to share between threads.
#[pyclass(module = "speechinfer._native", frozen)]
pub struct Scheduler {
    engine: Arc<Engine>,
}

#[pymethods]
impl Scheduler {
    #[new]
    #[pyo3(
        signature = (lm, codec, sampling, max_batch=16, max_queue=64),
        text_signature = "(lm: SpeechLM, codec: Codec, sampling: list[Sampling | None], max_batch: int = 16, max_queue: int = 64)"
    )]
    fn new(
        py: Python<'_>,
        lm: &SpeechLM,
        codec: &Codec,
        sampling: &Bound<'_, PyAny>,
        max_batch: usize,
        max_queue: usize,
    ) -> PyResult<Self> {
        let (lm, codec) = (lm.engine(), codec.engine());
        let sampling = stream_sampling(py, Some(sampling), &lm.config().vocab_sizes())?;
        let config = SchedulerConfig {
            max_batch,
            max_queue,
        };
        let engine = without_gil(py, move || Engine::start(lm, codec, sampling, config))?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// Queue a request: the text-stream ids of each piece (spoken in turn, ``silence_samples``
    /// of silence between them) in the voice ``voice_token``; returns its id. Raises
    /// ``CapacityError`` when every slot is busy and the queue is full, or when shutting down.
    #[pyo3(
        signature = (voice_token, pieces, seed, max_frames, max_tail_frames, silence_samples=0),
        text_signature = "($self, voice_token: int, pieces: list[list[int]], seed: int, max_frames: int, max_tail_frames: int, silence_samples: int = 0) -> int"
    )]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        voice_token: i64,
        pieces: Vec<Vec<i64>>,
        seed: u64,
        max_frames: usize,
        max_tail_frames: usize,
        silence_samples: usize,
    ) -> PyResult<u64> {
        if pieces.is_empty() {
            return Err(input_error(
                py,
                "a request needs at least one piece of text",
            ));
        }
        let request = SpeechRequest {
            voice_token,
            pieces,
            seed,
            max_frames,
            max_tail_frames,
            silence_samples,
        };
        self.engine.submit(request).map_err(|refusal| {
            let message = match refusal {
                Refusal::Full { active, queued } => format!(
                    "no free slot: {active} requests active and {queued} queued (max_batch {}, \
                     max_queue {})",
                    self.engine.config().max_batch,
                    self.engine.config().max_queue
                ),
                Refusal::ShuttingDown => "the scheduler is shutting down".to_string(),
            };
            capacity_error(py, message)
        })
    }

    /// End a request before its next frame (queued or active); a ``"cancelled"`` event follows
    /// unless it had ended already.
    #[pyo3(text_signature = "($self, request_id: int) -> None")]
    fn cancel(&self, request_id: u64) {
        self.engine.cancel(request_id);
    }

    /// Events since the last call, waiting up to ``timeout`` seconds for the first: tuples
    /// ``(request_id, kind, value)`` with kind ``"audio"`` (float32 samples), ``"done"`` (the
    /// audio frames spoken), ``"cancelled"`` (None) or ``"failed"`` (the error message).
    #[pyo3(signature = (timeout=0.1), text_signature = "($self, timeout: float = 0.1) -> list[tuple[int, str, Any]]")]
    fn poll<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyList>> {
        if !timeout.is_finite() || timeout < 0.0 {
            return Err(input_error(
                py,
                format!("timeout must be >= 0 seconds, got {timeout}"),
            ));
        }
        let engine = self.engine.clone();
        let wait = Duration::from_secs_f64(timeout.min(3600.0));
        let events = py.detach(move || engine.poll(wait));
        let items = events
            .into_iter()
            .map(|event| -> PyResult<Bound<'py, PyTuple>> {
                let id = event.id();
                match event {
                    Event::Audio { samples, .. } => {
                        let n = samples.len();
                        let array = to_numpy(py, samples, &[n])?;
                        (id, "audio", array).into_pyobject(py)
                    }
                    Event::Done { frames, .. } => (id, "done", frames).into_pyobject(py),
                    Event::Cancelled { .. } => (id, "cancelled", py.None()).into_pyobject(py),
                    Event::Failed { message, .. } => (id, "failed", message).into_pyobject(py),
                }
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// dict: ``active``, ``queued``, ``frames_decoded``, ``steps``, ``step_seconds`` (time spent
    /// in decoding steps), ``max_batch``, ``max_queue``.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.engine.stats();
        let config = self.engine.config();
        let dict = PyDict::new(py);
        dict.set_item("active", stats.active)?;
        dict.set_item("queued", stats.queued)?;
        dict.set_item("frames_decoded", stats.frames_decoded)?;
        dict.set_item("steps", stats.steps)?;
        dict.set_item("step_seconds", stats.step_seconds)?;
        dict.set_item("max_batch", config.max_batch)?;
        dict.set_item("max_queue", config.max_queue)?;
        Ok(dict)
    }

    /// int: Slots decoded together.
    #[getter]
    fn max_batch(&self) -> usize {
        self.engine.config().max_batch
    }

    /// int: Requests that may wait for a slot.
    #[getter]
    fn max_queue(&self) -> usize {
        self.engine.config().max_queue
    }

    /// Stop admitting requests and wait for the worker: ``cancel=False`` lets the active and
    /// queued requests finish, ``cancel=True`` ends them now (``"cancelled"`` events).
    #[pyo3(signature = (cancel=false), text_signature = "($self, cancel: bool = False) -> None")]
    fn shutdown(&self, py: Python<'_>, cancel: bool) {
        let engine = self.engine.clone();
        py.detach(move || engine.shutdown(cancel));
    }
}

fn capacity_error(py: Python<'_>, message: String) -> PyErr {
    match py
        .import("speechinfer.errors")
        .and_then(|m| m.getattr("CapacityError"))
        .and_then(|c| Ok(c.cast_into::<pyo3::types::PyType>()?))
    {
        Ok(class) => PyErr::from_type(class, message),
        Err(e) => e,
    }
}
