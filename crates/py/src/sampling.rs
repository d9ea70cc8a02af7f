//! `Sampling`: the token-picking parameters of one stream (or of all streams).

use pyo3::prelude::*;
use pyo3::types::PyList;
use speechinfer_core::sampling::{CfgFormula, SamplingParams, TokenMask};
use speechinfer_lm::StreamSampling;

use crate::errors::input_error;

/// How to pick tokens: temperature, filters, penalties and classifier-free guidance.
///
/// Applied in a fixed order: guidance combine → allowed-token mask → ``cfg_top_k`` →
/// repetition penalty → temperature → ``top_k`` → ``top_p`` → ``min_p`` → softmax → draw.
/// ``temperature=0`` is greedy (argmax after guidance, mask and penalty). ``ras_window`` > 0
/// enables VALL-E 2 repetition-aware sampling. ``cfg_scale`` runs every sequence twice (with and
/// without its prompt, see ``SpeechLM.generate``); ``cfg_formula`` is ``"uncond_plus"``
/// (``u + s·(c − u)``, MusicGen) or ``"cond_plus"`` (``c + s·(c − u)``, Dia, usually with
/// ``cfg_top_k``). ``allowed_tokens`` restricts the ids a stream may emit.
#[pyclass(module = "speechinfer._native", frozen)]
#[derive(Clone)]
pub struct Sampling {
    pub params: SamplingParams,
    allowed: Option<Vec<u32>>,
}

#[pymethods]
impl Sampling {
    #[new]
    #[pyo3(
        signature = (temperature=1.0, top_k=None, top_p=None, min_p=None, repetition_penalty=None, repetition_window=0, ras_window=0, ras_threshold=0.1, cfg_scale=None, cfg_formula="uncond_plus", cfg_top_k=None, allowed_tokens=None),
        text_signature = "(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None, repetition_window: int = 0, ras_window: int = 0, ras_threshold: float = 0.1, cfg_scale: float | None = None, cfg_formula: str = 'uncond_plus', cfg_top_k: int | None = None, allowed_tokens: list[int] | None = None) -> Sampling"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        temperature: f64,
        top_k: Option<i64>,
        top_p: Option<f64>,
        min_p: Option<f64>,
        repetition_penalty: Option<f64>,
        repetition_window: i64,
        ras_window: i64,
        ras_threshold: f64,
        cfg_scale: Option<f64>,
        cfg_formula: &str,
        cfg_top_k: Option<i64>,
        allowed_tokens: Option<Vec<i64>>,
    ) -> PyResult<Self> {
        let count = |name: &str, v: i64| -> PyResult<usize> {
            usize::try_from(v).map_err(|_| input_error(py, format!("{name} must be >= 0, got {v}")))
        };
        let positive = |name: &str, v: Option<i64>| -> PyResult<Option<usize>> {
            match v {
                Some(v) if v < 1 => Err(input_error(py, format!("{name} must be >= 1, got {v}"))),
                Some(v) => Ok(Some(v as usize)),
                None => Ok(None),
            }
        };
        let cfg_formula = match cfg_formula {
            "uncond_plus" => CfgFormula::UncondPlus,
            "cond_plus" => CfgFormula::CondPlus,
            other => {
                return Err(input_error(
                    py,
                    format!("cfg_formula must be \"uncond_plus\" or \"cond_plus\", got {other:?}"),
                ))
            }
        };
        let allowed = match allowed_tokens {
            None => None,
            Some(ids) => Some(
                ids.into_iter()
                    .map(|id| {
                        u32::try_from(id).map_err(|_| {
                            input_error(py, format!("allowed_tokens holds {id}, not a token id"))
                        })
                    })
                    .collect::<PyResult<Vec<u32>>>()?,
            ),
        };
        if allowed.as_ref().is_some_and(|a| a.is_empty()) {
            return Err(input_error(py, "allowed_tokens must not be empty"));
        }
        let params = SamplingParams {
            temperature: temperature as f32,
            top_k: positive("top_k", top_k)?,
            top_p: top_p.map(|p| p as f32),
            min_p: min_p.map(|p| p as f32),
            repetition_penalty: repetition_penalty.map(|p| p as f32),
            repetition_window: count("repetition_window", repetition_window)?,
            ras_window: count("ras_window", ras_window)?,
            ras_threshold: ras_threshold as f32,
            cfg_scale: cfg_scale.map(|s| s as f32),
            cfg_formula,
            cfg_top_k: positive("cfg_top_k", cfg_top_k)?,
            mask: None,
        };
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(input_error(
                py,
                format!("temperature must be finite and >= 0, got {temperature}"),
            ));
        }
        params
            .validate()
            .map_err(|e| input_error(py, e.to_string()))?;
        Ok(Self { params, allowed })
    }

    /// float: Logits are divided by it; 0 is greedy.
    #[getter]
    fn temperature(&self) -> f64 {
        self.params.temperature.into()
    }

    /// int | None: Keep only the k most likely tokens.
    #[getter]
    fn top_k(&self) -> Option<usize> {
        self.params.top_k
    }

    /// float | None: Keep the smallest set of tokens whose probability reaches p.
    #[getter]
    fn top_p(&self) -> Option<f64> {
        self.params.top_p.map(f64::from)
    }

    /// float | None: Drop tokens less likely than min_p times the most likely one.
    #[getter]
    fn min_p(&self) -> Option<f64> {
        self.params.min_p.map(f64::from)
    }

    /// float | None: CTRL repetition penalty on tokens seen in the stream's history.
    #[getter]
    fn repetition_penalty(&self) -> Option<f64> {
        self.params.repetition_penalty.map(f64::from)
    }

    /// float | None: Classifier-free guidance scale (None: no guidance).
    #[getter]
    fn cfg_scale(&self) -> Option<f64> {
        self.params.cfg_scale.map(f64::from)
    }

    /// str: ``"uncond_plus"`` (u + s·(c − u)) or ``"cond_plus"`` (c + s·(c − u)).
    #[getter]
    fn cfg_formula(&self) -> &'static str {
        match self.params.cfg_formula {
            CfgFormula::UncondPlus => "uncond_plus",
            CfgFormula::CondPlus => "cond_plus",
        }
    }

    /// int | None: After guidance, keep only this many largest guided logits.
    #[getter]
    fn cfg_top_k(&self) -> Option<usize> {
        self.params.cfg_top_k
    }

    /// int: History tokens the repetition penalty looks at (0 = all).
    #[getter]
    fn repetition_window(&self) -> usize {
        self.params.repetition_window
    }

    /// int: Repetition-aware sampling window (0 = off).
    #[getter]
    fn ras_window(&self) -> usize {
        self.params.ras_window
    }

    /// float: RAS resamples when a token fills this fraction of the window.
    #[getter]
    fn ras_threshold(&self) -> f64 {
        self.params.ras_threshold.into()
    }

    /// list[int] | None: The only token ids a stream may emit.
    #[getter]
    fn allowed_tokens(&self) -> Option<Vec<u32>> {
        self.allowed.clone()
    }

    fn __repr__(&self) -> String {
        let p = &self.params;
        format!(
            "Sampling(temperature={}, top_k={:?}, top_p={:?}, min_p={:?}, repetition_penalty={:?}, \
             ras_window={}, cfg_scale={:?}, cfg_formula={:?}, cfg_top_k={:?})",
            p.temperature,
            p.top_k,
            p.top_p,
            p.min_p,
            p.repetition_penalty,
            p.ras_window,
            p.cfg_scale,
            p.cfg_formula,
            p.cfg_top_k
        )
    }
}

impl Sampling {
    /// The parameters for a stream of `vocab` ids (builds the allowed-token mask).
    fn for_vocab(&self, py: Python<'_>, k: usize, vocab: usize) -> PyResult<SamplingParams> {
        let mut params = self.params.clone();
        if let Some(ids) = &self.allowed {
            params.mask = Some(TokenMask::allow_only(vocab, ids).map_err(|e| {
                input_error(py, format!("sampling of stream {k}: allowed_tokens: {e}"))
            })?);
        }
        Ok(params)
    }
}

/// `None` (greedy everywhere), a `Sampling` for every stream, or a list of K of them (entries
/// may be `None` = greedy).
pub fn stream_sampling(
    py: Python<'_>,
    obj: Option<&Bound<'_, PyAny>>,
    vocab_sizes: &[usize],
) -> PyResult<StreamSampling> {
    let k_n = vocab_sizes.len();
    let per_stream: Vec<Option<Sampling>> = match obj {
        None => vec![None; k_n],
        Some(o) if o.is_none() => vec![None; k_n],
        Some(o) => {
            if let Ok(s) = o.cast::<Sampling>() {
                vec![Some(s.get().clone()); k_n]
            } else if let Ok(list) = o.cast::<PyList>() {
                list.iter()
                    .map(|item| match item.is_none() {
                        true => Ok(None),
                        false => item
                            .cast::<Sampling>()
                            .map(|s| Some(s.get().clone()))
                            .map_err(|_| {
                                input_error(py, "sampling list entries must be Sampling or None")
                            }),
                    })
                    .collect::<PyResult<_>>()?
            } else {
                return Err(input_error(
                    py,
                    "sampling must be None, a Sampling, or a list of one Sampling (or None) per stream",
                ));
            }
        }
    };
    let params = per_stream
        .iter()
        .enumerate()
        .map(|(k, s)| match (s, vocab_sizes.get(k)) {
            (Some(s), Some(&v)) => s.for_vocab(py, k, v).map(Some),
            _ => Ok(None),
        })
        .collect::<PyResult<Vec<_>>>()?;
    StreamSampling::new(params, vocab_sizes).map_err(|e| crate::errors::to_pyerr(py, e))
}
