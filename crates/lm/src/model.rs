//! The speech LM: per-stream embeddings summed into one input, the transformer, one head per
//! stream. Loads from a model directory and serves teacher-forced logits and scores.

use std::path::Path;

use candle_core::{Device, Tensor};
use speechinfer_core::config::read_config;
use speechinfer_core::pattern::{PatternKind, PatternLayout};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::attention::KvCache;
use crate::config::{Decoding, LmConfig};
use crate::depth::DepthTransformer;
use crate::embed::{embed_sum, NO_INPUT};
use crate::linear::Linear;
use crate::nar::NarModel;
use crate::text::TextTokenizer;
use crate::transformer::Transformer;

/// Most sequences one call may hold.
pub const MAX_BATCH: usize = 4096;

/// The shape `[B, K, L]` of a token buffer (a step grid or a frame grid), row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridShape {
    pub batch: usize,
    pub streams: usize,
    pub len: usize,
}

impl GridShape {
    pub fn new(batch: usize, streams: usize, len: usize) -> Self {
        Self {
            batch,
            streams,
            len,
        }
    }

    pub fn numel(&self) -> usize {
        self.batch * self.streams * self.len
    }
}

pub struct SpeechLm {
    config: LmConfig,
    pattern: PatternKind,
    embeddings: Vec<Tensor>,
    transformer: Transformer,
    heads: Vec<Linear>,
    depth: Option<DepthTransformer>,
    nar: Option<NarModel>,
    tokenizer: Option<TextTokenizer>,
    device: Device,
}

impl SpeechLm {
    /// Load `dir/config.json` and `dir/model.safetensors`, or a Hugging Face Llama directory;
    /// `dir/tokenizer.json` too when present.
    pub fn load(dir: &Path) -> Result<Self> {
        let raw = std::fs::read_to_string(dir.join(speechinfer_core::config::CONFIG_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        if let Some(raw) = raw.filter(crate::hf_llama::is_hf_llama) {
            let lm = Self::load_hf_llama(dir, &raw, Device::Cpu)?;
            let tokenizer = TextTokenizer::load_dir(dir)?;
            return Ok(Self { tokenizer, ..lm });
        }
        let config: LmConfig = read_config(dir, LmConfig::REQUIRED_KEYS)?;
        config.validate()?;
        let device = Device::Cpu;
        let ckpt = Checkpoint::load_model_dir(dir, &device)?;
        let lm = Self::from_checkpoint(config, ckpt, device)?;
        let tokenizer = TextTokenizer::load_dir(dir)?;
        Ok(Self { tokenizer, ..lm })
    }

    /// Store the transformer's projections and the main heads as int8 (one f32 scale per output
    /// row): decoding steps stream a quarter of the weight bytes. Embeddings, norms, the depth
    /// transformer's per-position projections and heads and the NAR stages stay f32. Logits
    /// move by the int8 rounding (docs/lm.md gives the tolerance); cannot be undone.
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.transformer.quantize_int8()?;
        if let Some(depth) = &mut self.depth {
            depth.quantize_int8()?;
        }
        self.heads.iter_mut().try_for_each(Linear::quantize_int8)
    }

    /// Build from an already-read config and checkpoint; every tensor must be used.
    pub fn from_checkpoint(config: LmConfig, mut ckpt: Checkpoint, device: Device) -> Result<Self> {
        config.validate()?;
        let d = config.d_model;
        let main = &config.streams[..config.main_streams()];
        let embeddings = main
            .iter()
            .enumerate()
            .map(|(k, s)| ckpt.take(&format!("embeddings.{k}.weight"), &[s.vocab_size, d]))
            .collect::<Result<Vec<_>>>()?;
        let transformer = Transformer::load(&mut ckpt, "", config.sizes(), &device)?;
        let heads = if config.tie_embeddings {
            embeddings.iter().cloned().map(Linear::new).collect()
        } else if config.decoding()? == Decoding::Depth {
            Vec::new()
        } else {
            let head = |(k, s): (usize, &crate::config::StreamConfig)| {
                Ok(Linear::new(
                    ckpt.take(&format!("heads.{k}.weight"), &[s.vocab_size, d])?,
                ))
            };
            main.iter().enumerate().map(head).collect::<Result<_>>()?
        };
        let decoding = config.decoding()?;
        let depth = match decoding {
            Decoding::Depth => Some(DepthTransformer::load(&mut ckpt, &config, &device)?),
            _ => None,
        };
        let nar = match decoding {
            Decoding::CoarseFirst => Some(NarModel::load(&mut ckpt, &config, &device)?),
            _ => None,
        };
        ckpt.finish()?;
        Ok(Self {
            pattern: config.pattern_kind()?,
            config,
            embeddings,
            transformer,
            heads,
            depth,
            nar,
            tokenizer: None,
            device,
        })
    }

    pub(crate) fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    pub(crate) fn embedding_tables(&self) -> &[Tensor] {
        &self.embeddings
    }

    pub(crate) fn head_weights(&self) -> &[Linear] {
        &self.heads
    }

    pub fn config(&self) -> &LmConfig {
        &self.config
    }

    pub fn pattern(&self) -> &PatternKind {
        &self.pattern
    }

    pub fn num_streams(&self) -> usize {
        self.config.num_streams()
    }

    /// The depth transformer (`pattern: "depth"`).
    pub fn depth(&self) -> Option<&DepthTransformer> {
        self.depth.as_ref()
    }

    /// The non-autoregressive stage model (`pattern: "coarse_first"`).
    pub fn nar(&self) -> Option<&NarModel> {
        self.nar.as_ref()
    }

    /// The text tokenizer (`tokenizer.json` of the model directory), if it has one.
    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty KV cache for `batch_size` sequences.
    pub fn new_cache(&self, batch_size: usize) -> Result<KvCache> {
        check_batch(batch_size)?;
        self.transformer.new_cache(batch_size)
    }

    /// Checks that `tokens` is a `[B, K, L]` buffer for this model with every id inside its
    /// stream's vocabulary or the `-1` "no input" marker. `what` names the argument in messages.
    pub fn check_tokens(&self, tokens: &[i64], shape: GridShape, what: &str) -> Result<()> {
        self.check_tokens_of(tokens, shape, what, self.num_streams())
    }

    /// [`SpeechLm::check_tokens`] for a buffer of the first `k_model` streams.
    pub fn check_tokens_of(
        &self,
        tokens: &[i64],
        shape: GridShape,
        what: &str,
        k_model: usize,
    ) -> Result<()> {
        if shape.streams != k_model {
            return Err(Error::input(format!(
                "{what} has {} streams, the model has {k_model}",
                shape.streams
            )));
        }
        check_batch(shape.batch)?;
        if shape.len == 0 {
            return Err(Error::input(format!("{what} is empty (length 0)")));
        }
        if tokens.len() != shape.numel() {
            return Err(Error::internal(format!(
                "{what}: {} values for shape {shape:?}",
                tokens.len()
            )));
        }
        for (i, &tok) in tokens.iter().enumerate() {
            let k = i / shape.len % shape.streams;
            let vocab = self.config.streams[k].vocab_size;
            if tok < NO_INPUT || tok >= 0 && tok as u64 >= vocab as u64 {
                let (b, l) = (i / (shape.len * shape.streams), i % shape.len);
                return Err(Error::input(format!(
                    "{what}[{b}, {k}, {l}] = {tok} is outside stream {k} ('{}') vocabulary \
                     [0, {vocab}) (-1 = no input)",
                    self.config.streams[k].name
                )));
            }
        }
        Ok(())
    }

    /// Sum of the main model's stream embeddings of each step: `steps [B, K, S]` → `[B, S, d]`.
    fn embed(&self, steps: &[i64], shape: GridShape) -> Result<Tensor> {
        let dims = (shape.batch, shape.streams, shape.len);
        embed_sum(&self.embeddings, steps, dims, &self.device)
    }

    /// Final hidden states `[B, S, d]` of `steps [B, K, S]` fed after what cache slots
    /// `rows[b]` hold (those slots grow by S).
    pub fn hidden(
        &self,
        steps: &[i64],
        shape: GridShape,
        cache: &mut KvCache,
        rows: &[usize],
    ) -> Result<Tensor> {
        if rows.len() != shape.batch {
            return Err(Error::internal(format!(
                "{} cache rows for {} sequences",
                rows.len(),
                shape.batch
            )));
        }
        let x = self.embed(steps, shape)?;
        self.transformer.forward(&x, cache, rows)
    }

    /// The main heads' logits of hidden states `[B, S, d]`: one `[B, S, V_k]` per main stream.
    pub fn head_logits(&self, h: &Tensor) -> Result<Vec<Tensor>> {
        let (b, s, d) = h.dims3()?;
        let flat = h.reshape((b * s, d))?;
        self.heads
            .iter()
            .map(|w| {
                Ok(w.forward_rows(&flat, s == 1)?
                    .reshape((b, s, w.out_dim()?))?)
            })
            .collect()
    }

    /// Feeds `steps [B, K, S]` (validated by the caller) after what `cache` holds; returns the K
    /// logits `[B, S, V_k]` (f32).
    pub fn forward(
        &self,
        steps: &[i64],
        shape: GridShape,
        cache: &mut KvCache,
    ) -> Result<Vec<Tensor>> {
        if cache.batch_size() != shape.batch {
            return Err(Error::input(format!(
                "steps hold {} sequences, the cache {}",
                shape.batch,
                cache.batch_size()
            )));
        }
        let rows: Vec<usize> = (0..shape.batch).collect();
        let h = self.hidden(steps, shape, cache, &rows)?;
        self.head_logits(&h)
    }

    /// Teacher-forced logits of a whole step grid `[B, K_main, S]`: one tensor `[B, S, V_k]` per
    /// main stream (`"depth"`: `[B, S − 1, V_k]`, each step's logits given the next step's
    /// earlier streams; `"coarse_first"`: the AR model's, K_main = 1).
    pub fn logits(&self, steps: &[i64], shape: GridShape) -> Result<Vec<Tensor>> {
        self.check_tokens_of(steps, shape, "steps", self.config.main_streams())?;
        self.check_context(shape.len, "steps")?;
        let mut cache = self.new_cache(shape.batch)?;
        let rows: Vec<usize> = (0..shape.batch).collect();
        match &self.depth {
            None => {
                let h = self.hidden(steps, shape, &mut cache, &rows)?;
                self.head_logits(&h)
            }
            Some(depth) => {
                if shape.len < 2 {
                    return Err(Error::input(
                        "the depth pattern needs at least 2 steps: each step's logits need the next",
                    ));
                }
                let s_in = shape.len - 1;
                let (input, next) = split_columns(steps, shape, s_in);
                let h = self.hidden(
                    &input,
                    GridShape::new(shape.batch, shape.streams, s_in),
                    &mut cache,
                    &rows,
                )?;
                depth.logits(&h, &next, shape.batch, s_in)
            }
        }
    }

    /// Fails unless `positions` LM inputs fit in `max_context`.
    pub fn check_context(&self, positions: usize, what: &str) -> Result<()> {
        let max = self.config.max_context;
        if positions > max {
            return Err(Error::input(format!(
                "{what} need {positions} LM positions but max_context is {max}"
            )));
        }
        Ok(())
    }

    /// The main transformer's layout for `frames` frames.
    pub fn layout(&self, frames: usize) -> Result<PatternLayout> {
        self.layout_of(self.config.main_streams(), frames)
    }

    /// The pattern's layout of `streams` streams for `frames` frames.
    pub fn layout_of(&self, streams: usize, frames: usize) -> Result<PatternLayout> {
        PatternLayout::build(self.pattern.clone(), streams, frames)
            .map_err(|e| Error::input(format!("cannot lay out {frames} frames: {e}")))
    }

    /// Summed log-probability (f64) of every token after frame 0 of each grid `[B, K, T]`
    /// (`-1` targets are skipped).
    pub fn score(&self, grid: &[i64], shape: GridShape) -> Result<Vec<f64>> {
        self.check_tokens(grid, shape, "grid")?;
        match &self.nar {
            None => self.score_steps(grid, shape, shape.streams),
            Some(nar) => {
                let (b, k_n, t_n) = (shape.batch, shape.streams, shape.len);
                let first: Vec<i64> = grid.chunks(t_n).step_by(k_n).flatten().copied().collect();
                let mut totals = self.score_steps(&first, GridShape::new(b, 1, t_n), 1)?;
                for stage in 1..k_n {
                    let logits = nar.logits(grid, b, t_n, stage, 1)?;
                    let values = logits.flatten_all()?.to_vec1::<f32>()?;
                    let v = self.config.streams[stage].vocab_size;
                    for (bi, total) in totals.iter_mut().enumerate() {
                        for t in 1..t_n {
                            let target = grid[(bi * k_n + stage) * t_n + t];
                            if target >= 0 {
                                let row = &values[(bi * t_n + t) * v..][..v];
                                *total += log_softmax_at(row, target as usize);
                            }
                        }
                    }
                }
                Ok(totals)
            }
        }
    }

    /// Score of a grid of the main transformer's `k_n` streams through its step layout.
    fn score_steps(&self, grid: &[i64], shape: GridShape, k_n: usize) -> Result<Vec<f64>> {
        let (b, t_n) = (shape.batch, shape.len);
        let layout = self.layout_of(k_n, t_n)?;
        let s_n = layout.num_steps();
        let s_in = s_n - 1;
        self.check_context(s_in, &format!("a grid of {t_n} frames"))?;
        let specials = self.config.special_ids();
        let mut steps = Vec::with_capacity(b * k_n * s_n);
        for item in grid.chunks(k_n * t_n) {
            steps.extend(layout.apply(item, &specials[..k_n]).map_err(internal)?);
        }
        let all = GridShape::new(b, k_n, s_n);
        let logits = self.logits_of_steps(&steps, all)?;
        let mut totals = vec![0f64; b];
        for (k, logits) in logits.iter().enumerate() {
            let v = self.config.streams[k].vocab_size;
            let values = logits.flatten_all()?.to_vec1::<f32>()?;
            for (bi, total) in totals.iter_mut().enumerate() {
                for t in 1..t_n {
                    let target = grid[(bi * k_n + k) * t_n + t];
                    if target < 0 {
                        continue;
                    }
                    let s = layout
                        .first_step(k, t)
                        .ok_or_else(|| internal("unplaced"))?;
                    let row = &values[(bi * s_in + s - 1) * v..][..v];
                    *total += log_softmax_at(row, target as usize);
                }
            }
        }
        Ok(totals)
    }

    /// Logits `[B, S − 1, V_k]` predicting columns `1..S` of a complete step grid `[B, K, S]`.
    fn logits_of_steps(&self, steps: &[i64], shape: GridShape) -> Result<Vec<Tensor>> {
        let s_in = shape.len - 1;
        let (input, next) = split_columns(steps, shape, s_in);
        let mut cache = self.new_cache(shape.batch)?;
        let rows: Vec<usize> = (0..shape.batch).collect();
        let in_shape = GridShape::new(shape.batch, shape.streams, s_in);
        let h = self.hidden(&input, in_shape, &mut cache, &rows)?;
        match &self.depth {
            Some(depth) => depth.logits(&h, &next, shape.batch, s_in),
            None => self.head_logits(&h),
        }
    }
}

/// Splits a step grid `[B, K, S]` into its first `s_in` columns and columns `1..=s_in`.
fn split_columns(steps: &[i64], shape: GridShape, s_in: usize) -> (Vec<i64>, Vec<i64>) {
    let mut input = Vec::with_capacity(shape.batch * shape.streams * s_in);
    let mut next = Vec::with_capacity(input.capacity());
    for row in steps.chunks(shape.len) {
        input.extend_from_slice(&row[..s_in]);
        next.extend_from_slice(&row[1..=s_in]);
    }
    (input, next)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
}

pub(crate) fn check_batch(batch: usize) -> Result<()> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(Error::input(format!(
            "batch size must be in [1, {MAX_BATCH}], got {batch}"
        )));
    }
    Ok(())
}

/// `log_softmax(row)[target]` in f64.
pub fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    f64::from(row[target]) - max - sum.ln()
}
