//! Generation requests: continue prompts (possibly of different lengths) by frames to pick, all
//! at once or frame by frame (`docs/lm.md`, "Generation, sessions and EOS").

use speechinfer_core::{Error, Result};

use crate::config::Decoding;
use crate::decoder::Decoder;
use crate::model::{GridShape, SpeechLm};
use crate::picker::{Picker, StreamSampling};

/// One prompt: row-major `[K, T]` tokens and `T`.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub tokens: Vec<i64>,
    pub frames: usize,
}

impl Prompt {
    /// Splits a row-major `[B, K, T]` buffer into B prompts.
    pub fn split(tokens: &[i64], shape: GridShape) -> Vec<Prompt> {
        let item = shape.streams * shape.len;
        (0..shape.batch)
            .map(|b| Prompt {
                tokens: tokens.get(b * item..(b + 1) * item).unwrap_or(&[]).to_vec(),
                frames: shape.len,
            })
            .collect()
    }
}

/// Everything a generation needs besides the model.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompts: Vec<Prompt>,
    pub max_frames: usize,
    pub sampling: StreamSampling,
    /// One seed for every sequence, or one per sequence.
    pub seeds: Vec<u64>,
    pub stop_on_eos: bool,
    /// Unconditional prompts of a guided run (one per prompt, may have 0 frames); `None` with
    /// guidance in `sampling` means "no prompt frames".
    pub cfg_prompts: Option<Vec<Prompt>>,
}

impl GenerateRequest {
    /// Greedy, no EOS stop, one seed.
    pub fn greedy(prompts: Vec<Prompt>, max_frames: usize, streams: usize) -> Self {
        Self {
            prompts,
            max_frames,
            sampling: StreamSampling::greedy(streams),
            seeds: vec![0],
            stop_on_eos: true,
            cfg_prompts: None,
        }
    }
}

/// A running generation: call [`Generation::advance`] until it returns `None`.
pub struct Generation {
    decoder: Decoder,
    prompt_frames: Vec<usize>,
    max_frames: usize,
    /// Generated frames already handed out by [`Generation::advance`].
    yielded: usize,
}

impl SpeechLm {
    fn check_prompt(&self, prompt: &Prompt, b: usize, what: &str) -> Result<()> {
        let k_n = self.num_streams();
        if prompt.tokens.len() != k_n * prompt.frames {
            return Err(Error::input(format!(
                "{what} {b}: {} tokens is not {k_n} streams × {} frames",
                prompt.tokens.len(),
                prompt.frames
            )));
        }
        if prompt.frames > 0 {
            let shape = GridShape::new(1, k_n, prompt.frames);
            self.check_tokens(&prompt.tokens, shape, &format!("{what} {b}"))?;
        }
        Ok(())
    }

    pub(crate) fn pickers_for(&self, request: &GenerateRequest) -> Result<Vec<Picker>> {
        let b = request.prompts.len();
        let seeds = match request.seeds.len() {
            1 => vec![request.seeds[0]; b],
            n if n == b => request.seeds.clone(),
            n => {
                return Err(Error::input(format!(
                    "{n} seeds for {b} sequences: give one seed or one per sequence"
                )))
            }
        };
        let k_n = self.num_streams();
        Ok(seeds
            .into_iter()
            .map(|seed| Picker::new(request.sampling.clone(), seed, k_n))
            .collect())
    }

    /// Validates `request` and starts it.
    pub fn start_generation(&self, request: &GenerateRequest) -> Result<Generation> {
        let b = request.prompts.len();
        crate::model::check_batch(b)?;
        for (i, prompt) in request.prompts.iter().enumerate() {
            if prompt.frames == 0 {
                return Err(Error::input(format!("prompt {i} is empty (0 frames)")));
            }
            self.check_prompt(prompt, i, "prompt")?;
            self.check_generation_fits(prompt.frames, request.max_frames)?;
        }
        let decoding = self.config().decoding()?;
        let guided = request.sampling.uses_cfg() || request.cfg_prompts.is_some();
        if guided && matches!(decoding, Decoding::Depth | Decoding::CoarseFirst) {
            return Err(Error::input(format!(
                "classifier-free guidance is not supported with pattern \"{}\"",
                self.config().pattern
            )));
        }
        let uncond = match (&request.cfg_prompts, guided) {
            (_, false) => None,
            (Some(cfg), true) => {
                if cfg.len() != b {
                    return Err(Error::input(format!(
                        "{} cfg prompts for {b} prompts",
                        cfg.len()
                    )));
                }
                for (i, prompt) in cfg.iter().enumerate() {
                    self.check_prompt(prompt, i, "cfg prompt")?;
                    self.check_generation_fits(prompt.frames, request.max_frames)?;
                }
                Some(cfg.clone())
            }
            (None, true) => Some(vec![
                Prompt {
                    tokens: Vec::new(),
                    frames: 0,
                };
                b
            ]),
        };
        let pickers = self.pickers_for(request)?;
        let prompts: Vec<(&[i64], usize)> = request
            .prompts
            .iter()
            .map(|p| (p.tokens.as_slice(), p.frames))
            .collect();
        let uncond: Option<Vec<(&[i64], usize)>> = uncond
            .as_ref()
            .map(|u| u.iter().map(|p| (p.tokens.as_slice(), p.frames)).collect());
        let decoder = Decoder::for_generation(
            self,
            &prompts,
            request.max_frames,
            pickers,
            request.stop_on_eos,
            uncond.as_deref(),
        )?;
        Ok(Generation {
            decoder,
            prompt_frames: request.prompts.iter().map(|p| p.frames).collect(),
            max_frames: request.max_frames,
            yielded: 0,
        })
    }

    /// Fails unless `frames + max_frames` frames fit in `max_context` positions.
    pub fn check_generation_fits(&self, frames: usize, max_frames: usize) -> Result<()> {
        let total = frames.saturating_add(max_frames);
        let what = format!("prompt of {frames} frames + max_frames {max_frames}");
        if total > self.config().max_context.saturating_mul(self.num_streams()) {
            return Err(Error::input(format!(
                "{what} exceeds max_context {}",
                self.config().max_context
            )));
        }
        if total == 0 {
            return Ok(());
        }
        let layout = self.layout(total)?;
        self.check_context(layout.num_steps() - 1, &what)
    }

    /// Continues every prompt by `max_frames` frames; returns one row-major `[K, T_b + N]` grid
    /// per prompt (frames after an EOS hold the fill token).
    pub fn generate(&self, request: &GenerateRequest) -> Result<Vec<Vec<i64>>> {
        if self.config().decoding()? == Decoding::CoarseFirst {
            return self.generate_coarse_first(request);
        }
        if request.max_frames == 0 {
            for (i, prompt) in request.prompts.iter().enumerate() {
                self.check_prompt(prompt, i, "prompt")?;
            }
            return Ok(request.prompts.iter().map(|p| p.tokens.clone()).collect());
        }
        let mut generation = self.start_generation(request)?;
        generation.decoder.run(self)?;
        Ok(generation.grids())
    }
}

impl Generation {
    /// Runs until every sequence has at least one more complete frame (or all are done), and
    /// returns the newly complete generated frames of every sequence, row-major `[B, K, n]`
    /// with n > 0, or `None` when everything was handed out.
    pub fn advance(&mut self, lm: &SpeechLm) -> Result<Option<(Vec<i64>, usize)>> {
        if self.yielded >= self.max_frames {
            return Ok(None);
        }
        loop {
            let ready = self.ready_frames();
            if ready > self.yielded {
                let chunk = self.frames_between(self.yielded, ready);
                let n = ready - self.yielded;
                self.yielded = ready;
                return Ok(Some((chunk, n)));
            }
            if !self.decoder.round(lm)? {
                return Err(Error::internal("generation stalled"));
            }
        }
    }

    /// Generated frames every sequence has complete (a finished sequence counts as complete).
    fn ready_frames(&self) -> usize {
        self.decoder
            .tracks()
            .iter()
            .zip(&self.prompt_frames)
            .map(|(track, &t)| match track.is_done() {
                true => self.max_frames,
                false => track.complete_frames().saturating_sub(t),
            })
            .min()
            .unwrap_or(self.max_frames)
            .min(self.max_frames)
    }

    /// Generated frames `from..to` of every sequence, row-major `[B, K, to − from]`.
    fn frames_between(&self, from: usize, to: usize) -> Vec<i64> {
        let k_n = self.decoder.num_streams();
        let mut out = Vec::with_capacity(self.prompt_frames.len() * k_n * (to - from));
        for (b, &t) in self.prompt_frames.iter().enumerate() {
            let frames: Vec<Vec<i64>> = (from..to).map(|g| self.decoder.frame(b, t + g)).collect();
            for k in 0..k_n {
                out.extend(frames.iter().map(|f| f[k]));
            }
        }
        out
    }

    /// Prompt + generated frames of every sequence, row-major `[K, T_b + N]` each.
    pub fn grids(&self) -> Vec<Vec<i64>> {
        let k_n = self.decoder.num_streams();
        self.prompt_frames
            .iter()
            .enumerate()
            .map(|(b, &t)| {
                let total = t + self.max_frames;
                let frames: Vec<Vec<i64>> = (0..total).map(|f| self.decoder.frame(b, f)).collect();
                (0..k_n)
                    .flat_map(|k| frames.iter().map(move |f| f[k]))
                    .collect()
            })
            .collect()
    }

    pub fn num_sequences(&self) -> usize {
        self.prompt_frames.len()
    }
}
