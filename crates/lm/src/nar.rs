//! The non-autoregressive stage model of `pattern: "coarse_first"` (`docs/lm.md`,
//! "Coarse-first", VALL-E): a bidirectional transformer that predicts stream j of every frame
//! from streams `0..j` (and, in the acoustic prompt, every stream).

use candle_core::{Device, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::config::LmConfig;
use crate::embed::{embed_sum, NO_INPUT};
use crate::transformer::Transformer;

pub struct NarModel {
    /// `nar.embeddings.{k}.weight` `[V_k, d]`, k in 0..K.
    embeddings: Vec<Tensor>,
    /// `nar.stage_embeddings.weight` `[K - 1, d]`, row j - 1 for stage j.
    stage_embeddings: Tensor,
    transformer: Transformer,
    /// `nar.heads.{j}.weight` `[V_j, d]` at index `j - 1`, j in 1..K.
    heads: Vec<Tensor>,
    vocab_sizes: Vec<usize>,
    device: Device,
}

impl NarModel {
    /// Loads `nar.embeddings.{k}.weight` (k in 0..K), `nar.stage_embeddings.weight`,
    /// `nar.layers.*`, `nar.norm.weight` and `nar.heads.{j}.weight` (j in 1..K), with the main
    /// model's sizes.
    pub fn load(ckpt: &mut Checkpoint, config: &LmConfig, device: &Device) -> Result<Self> {
        let d = config.d_model;
        let vocab_sizes = config.vocab_sizes();
        let k_n = vocab_sizes.len();
        if k_n < 2 {
            return Err(Error::config(
                "the coarse-first stage model needs at least 2 streams",
            ));
        }
        let embeddings = vocab_sizes
            .iter()
            .enumerate()
            .map(|(k, &v)| ckpt.take(&format!("nar.embeddings.{k}.weight"), &[v, d]))
            .collect::<Result<_>>()?;
        let stage_embeddings = ckpt.take("nar.stage_embeddings.weight", &[k_n - 1, d])?;
        let transformer = Transformer::load(ckpt, "nar.", config.sizes(), device)?;
        let heads = (1..k_n)
            .map(|j| ckpt.take(&format!("nar.heads.{j}.weight"), &[vocab_sizes[j], d]))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings,
            stage_embeddings,
            transformer,
            heads,
            vocab_sizes,
            device: device.clone(),
        })
    }

    pub fn num_streams(&self) -> usize {
        self.vocab_sizes.len()
    }

    /// Logits `[B, T, V_j]` of stage `j` (1 ≤ j < K) on `grid`, row-major `[B, K, T]` (ids or
    /// -1), whose first `prompt_frames` P (1 ≤ P ≤ T) frames are the acoustic prompt: frame t
    /// reads streams `0..j`, plus streams `j..K` when `t < P`, plus the stage embedding, and
    /// attends to every frame (RoPE position t).
    pub fn logits(
        &self,
        grid: &[i64],
        batch: usize,
        frames: usize,
        stage: usize,
        prompt_frames: usize,
    ) -> Result<Tensor> {
        let k_n = self.num_streams();
        if stage == 0 || stage >= k_n {
            return Err(Error::input(format!(
                "stage {stage} is not a NAR stage: expected 1..{} (stream 0 is the AR model's)",
                k_n - 1
            )));
        }
        if batch == 0 || frames == 0 {
            return Err(Error::input(format!(
                "the NAR grid is empty ({batch} sequences of {frames} frames)"
            )));
        }
        if prompt_frames == 0 || prompt_frames > frames {
            return Err(Error::input(format!(
                "prompt_frames {prompt_frames} must be in [1, {frames}] (the grid's frames)"
            )));
        }
        let max_context = self.transformer.sizes().max_positions;
        if frames > max_context {
            return Err(Error::input(format!(
                "the NAR model reads {frames} frames but max_context is {max_context}"
            )));
        }
        if grid.len() != batch * k_n * frames {
            return Err(Error::internal(format!(
                "NAR grid: {} values for [{batch}, {k_n}, {frames}]",
                grid.len()
            )));
        }
        let mut input = grid.to_vec();
        for (i, tok) in input.iter_mut().enumerate() {
            let (k, t) = (i / frames % k_n, i % frames);
            let v = self.vocab_sizes[k];
            if *tok < NO_INPUT || *tok >= 0 && *tok as u64 >= v as u64 {
                return Err(Error::input(format!(
                    "grid[{}, {k}, {t}] = {tok} is outside stream {k}'s vocabulary [0, {v}) \
                     (-1 = no input)",
                    i / (frames * k_n)
                )));
            }
            if k >= stage && t >= prompt_frames {
                *tok = NO_INPUT;
            }
        }
        let x = embed_sum(&self.embeddings, &input, (batch, k_n, frames), &self.device)?;
        let stage_emb = self.stage_embeddings.narrow(0, stage - 1, 1)?;
        let x = x.broadcast_add(&stage_emb)?;
        let h = self.transformer.forward_full(&x, false)?;
        let d = h.dim(2)?;
        let head = &self.heads[stage - 1];
        let logits = h.reshape((batch * frames, d))?.matmul(&head.t()?)?;
        Ok(logits.reshape((batch, frames, self.vocab_sizes[stage]))?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};
    use speechinfer_core::weights::Checkpoint;
    use speechinfer_core::Error;

    use super::NarModel;
    use crate::config::{LmConfig, Role, StreamConfig};

    fn config() -> LmConfig {
        let stream = |k: usize, vocab: usize| StreamConfig {
            name: format!("s{k}"),
            role: Role::Audio,
            vocab_size: vocab,
            pad_id: None,
            bos_id: Some(vocab as u32 - 1),
            eos_id: None,
            delay: 0,
            text_offset: 0,
        };
        let config = LmConfig {
            d_model: 32,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_dim: 48,
            max_context: 8,
            streams: vec![stream(0, 17), stream(1, 11), stream(2, 13)],
            pattern: "coarse_first".to_string(),
            ..LmConfig::default()
        };
        config.validate().unwrap();
        config
    }

    fn model() -> NarModel {
        let dev = Device::Cpu;
        NarModel::load(&mut Checkpoint::random(0.3, &dev), &config(), &dev).unwrap()
    }

    /// `[B, K, T]` ids in 0..11 (every stream's vocabulary holds them).
    fn grid(b: usize, t: usize, seed: u64) -> Vec<i64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..b * 3 * t)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 11) as i64
            })
            .collect()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Largest |a - b| over frames `frames` of `[1, T, V]` logits.
    fn diff(a: &Tensor, b: &Tensor, frames: std::ops::Range<usize>) -> f32 {
        let v = a.dim(2).unwrap();
        let (a, b) = (values(a), values(b));
        frames
            .flat_map(|t| (t * v..(t + 1) * v).map(|i| (a[i] - b[i]).abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn stage_inputs_follow_the_prompt_rule() {
        let nar = model();
        let (t_n, p) = (6, 2);
        let g = grid(1, t_n, 3);
        let at = |k: usize, t: usize| k * t_n + t;
        for stage in 1..3 {
            let base = nar.logits(&g, 1, t_n, stage, p).unwrap();
            assert_eq!(base.dims(), &[1, t_n, [17, 11, 13][stage]]);
            let changed = |k: usize, t: usize| {
                let mut g2 = g.clone();
                g2[at(k, t)] = (g2[at(k, t)] + 1) % 11;
                diff(&base, &nar.logits(&g2, 1, t_n, stage, p).unwrap(), 0..t_n)
            };
            // Streams ≥ stage outside the prompt are not read; -1 there changes nothing too.
            for k in stage..3 {
                assert_eq!(changed(k, 4), 0.0, "stage {stage} stream {k} frame 4");
                let mut g2 = g.clone();
                g2[at(k, 5)] = -1;
                let same = nar.logits(&g2, 1, t_n, stage, p).unwrap();
                assert_eq!(diff(&base, &same, 0..t_n), 0.0);
            }
            // Inside the prompt, every stream is read; outside it, streams < stage are.
            for k in 0..3 {
                assert!(changed(k, 1) > 1e-4, "stage {stage} stream {k} frame 1");
            }
            for k in 0..stage {
                assert!(changed(k, 4) > 1e-4, "stage {stage} stream {k} frame 4");
            }
        }
    }

    #[test]
    fn stage_j_adds_stage_embedding_row_j_minus_1() {
        let mut nar = model();
        let t_n = 4;
        let g = grid(1, t_n, 9);
        let before: Vec<Tensor> = (1..3)
            .map(|j| nar.logits(&g, 1, t_n, j, 2).unwrap())
            .collect();
        // Change row 1 (stage 2) only.
        let rows = nar.stage_embeddings.to_vec2::<f32>().unwrap();
        let mut rows2 = rows.clone();
        rows2[1][0] += 1.0;
        nar.stage_embeddings = Tensor::new(rows2, &Device::Cpu).unwrap();
        let after: Vec<Tensor> = (1..3)
            .map(|j| nar.logits(&g, 1, t_n, j, 2).unwrap())
            .collect();
        assert_eq!(diff(&before[0], &after[0], 0..t_n), 0.0);
        assert!(diff(&before[1], &after[1], 0..t_n) > 1e-4);
    }

    #[test]
    fn attention_is_bidirectional_and_batch_rows_are_independent() {
        let nar = model();
        let t_n = 5;
        let g = grid(2, t_n, 11);
        let both = nar.logits(&g, 2, t_n, 1, 1).unwrap();
        // A later frame (stream 0, frame 4) changes the logits of frame 0.
        let mut g2 = g.clone();
        g2[4] = (g2[4] + 1) % 11;
        let changed = nar.logits(&g2, 2, t_n, 1, 1).unwrap();
        let first = |x: &Tensor| x.narrow(0, 0, 1).unwrap();
        assert!(diff(&first(&both), &first(&changed), 0..1) > 1e-4);
        // Sequence 1 alone gives the same logits as in the batch.
        let alone = nar.logits(&g[3 * t_n..], 1, t_n, 1, 1).unwrap();
        let second = both.narrow(0, 1, 1).unwrap();
        assert!(diff(&second, &alone, 0..t_n) < 1e-5);
        let other = changed.narrow(0, 1, 1).unwrap();
        assert_eq!(diff(&second, &other, 0..t_n), 0.0);
    }

    #[test]
    fn bad_arguments_are_typed_input_errors() {
        let nar = model();
        let g = grid(1, 4, 5);
        let cases = [
            (0, 1, "stage 0 is not a NAR stage: expected 1..2"),
            (3, 1, "stage 3 is not a NAR stage"),
            (1, 0, "prompt_frames 0 must be in [1, 4]"),
            (2, 5, "prompt_frames 5 must be in [1, 4]"),
        ];
        for (stage, p, needle) in cases {
            let err = nar.logits(&g, 1, 4, stage, p).unwrap_err();
            assert!(
                matches!(&err, Error::Input(m) if m.contains(needle)),
                "{err}"
            );
        }
        let long = grid(1, 9, 5);
        let err = nar.logits(&long, 1, 9, 1, 1).unwrap_err();
        assert!(
            matches!(&err, Error::Input(m) if m.contains("max_context is 8")),
            "{err}"
        );
        let mut bad = g.clone();
        bad[4 + 2] = 11; // stream 1 has vocab 11
        let err = nar.logits(&bad, 1, 4, 1, 1).unwrap_err();
        assert!(
            matches!(&err, Error::Input(m) if m.contains("grid[0, 1, 2] = 11")),
            "{err}"
        );
        // Exactly max_context frames fit.
        assert!(nar.logits(&grid(1, 8, 5), 1, 8, 2, 8).is_ok());
    }

    #[test]
    fn loads_exactly_the_contract_tensors() {
        let config = config();
        let dev = Device::Cpu;
        let (d, f) = (config.d_model, config.ffn_dim);
        let hd = config.head_dim();
        let (h, hkv) = (config.n_heads * hd, config.n_kv_heads * hd);
        let v = config.vocab_sizes();
        let mut names: Vec<(String, Vec<usize>)> = Vec::new();
        for (k, &vk) in v.iter().enumerate() {
            names.push((format!("nar.embeddings.{k}.weight"), vec![vk, d]));
        }
        names.push(("nar.stage_embeddings.weight".into(), vec![2, d]));
        for i in 0..config.n_layers {
            let p = format!("nar.layers.{i}");
            names.push((format!("{p}.attn_norm.weight"), vec![d]));
            names.push((format!("{p}.attn.q_proj.weight"), vec![h, d]));
            names.push((format!("{p}.attn.k_proj.weight"), vec![hkv, d]));
            names.push((format!("{p}.attn.v_proj.weight"), vec![hkv, d]));
            names.push((format!("{p}.attn.o_proj.weight"), vec![d, h]));
            names.push((format!("{p}.ffn_norm.weight"), vec![d]));
            names.push((format!("{p}.ffn.gate_proj.weight"), vec![f, d]));
            names.push((format!("{p}.ffn.up_proj.weight"), vec![f, d]));
            names.push((format!("{p}.ffn.down_proj.weight"), vec![d, f]));
        }
        names.push(("nar.norm.weight".into(), vec![d]));
        for (j, &vj) in v.iter().enumerate().skip(1) {
            names.push((format!("nar.heads.{j}.weight"), vec![vj, d]));
        }
        let map: HashMap<String, Tensor> = names
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    Tensor::randn(0f32, 0.3, s.as_slice(), &dev).unwrap(),
                )
            })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "speechinfer-lm-nar-{}.safetensors",
            std::process::id()
        ));
        candle_core::safetensors::save(&map, &path).unwrap();
        let mut ckpt = Checkpoint::load(&path, &dev).unwrap();
        std::fs::remove_file(&path).unwrap();
        NarModel::load(&mut ckpt, &config, &dev).unwrap();
        ckpt.finish().unwrap();
    }
}
