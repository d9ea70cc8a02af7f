//! Per-sequence token picking: the sampling parameters of every stream, the sequence's own
//! seeded RNG and the token history the repetition processors look at.

use std::sync::Arc;

use speechinfer_core::rng::Rng;
use speechinfer_core::sampling::{sample, sample_cfg, SamplingParams};
use speechinfer_core::{Error, Result};

/// Sampling parameters per stream (`None` = greedy), validated against the vocabularies.
#[derive(Debug, Clone)]
pub struct StreamSampling {
    params: Arc<Vec<SamplingParams>>,
}

impl StreamSampling {
    /// Greedy for every one of `streams` streams.
    pub fn greedy(streams: usize) -> Self {
        Self {
            params: Arc::new(vec![SamplingParams::greedy(); streams]),
        }
    }

    /// One entry per stream (`None` = greedy); checks every parameter and mask length.
    pub fn new(params: Vec<Option<SamplingParams>>, vocab_sizes: &[usize]) -> Result<Self> {
        if params.len() != vocab_sizes.len() {
            return Err(Error::input(format!(
                "sampling lists {} streams, the model has {}",
                params.len(),
                vocab_sizes.len()
            )));
        }
        let params = params
            .into_iter()
            .zip(vocab_sizes)
            .enumerate()
            .map(|(k, (p, &vocab))| {
                let p = p.unwrap_or_else(SamplingParams::greedy);
                p.validate()
                    .map_err(|e| Error::input(format!("sampling of stream {k}: {e}")))?;
                if let Some(mask) = p.mask.as_ref().filter(|m| m.vocab_size() != vocab) {
                    return Err(Error::input(format!(
                        "sampling of stream {k}: mask has {} entries, the vocabulary {vocab}",
                        mask.vocab_size()
                    )));
                }
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params: Arc::new(params),
        })
    }

    pub fn stream(&self, k: usize) -> &SamplingParams {
        &self.params[k]
    }

    /// Whether any stream asks for classifier-free guidance.
    pub fn uses_cfg(&self) -> bool {
        self.params.iter().any(|p| p.cfg_scale.is_some())
    }
}

/// Picks the tokens of one sequence.
pub struct Picker {
    sampling: StreamSampling,
    rng: Rng,
    history: Vec<Vec<u32>>,
}

impl Picker {
    pub fn new(sampling: StreamSampling, seed: u64, streams: usize) -> Self {
        Self {
            sampling,
            rng: Rng::new(seed),
            history: vec![Vec::new(); streams],
        }
    }

    /// Remembers a token of stream `k` placed at a frame (forced or picked); markers are
    /// ignored.
    pub fn record(&mut self, k: usize, token: i64) {
        if let (Ok(token), Some(history)) = (u32::try_from(token), self.history.get_mut(k)) {
            history.push(token);
        }
    }

    /// Draws stream `k`'s token from `cond` (and `uncond` under guidance).
    pub fn pick(&mut self, k: usize, cond: &[f32], uncond: Option<&[f32]>) -> Result<u32> {
        let params = self.sampling.stream(k);
        let history = &self.history[k];
        let drawn = match uncond {
            Some(uncond) => sample_cfg(cond, uncond, params, history, &mut self.rng),
            None => sample(&mut cond.to_vec(), params, history, &mut self.rng),
        };
        drawn.map_err(|e| Error::internal(format!("sampling stream {k}: {e}")))
    }
}
