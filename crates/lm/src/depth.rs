//! The depth transformer of `pattern: "depth"` (`docs/lm.md`, "Depth transformer"): a small
//! causal transformer that turns one main hidden state into the K tokens of the next step, one
//! stream after another (Moshi / RQ-Transformer style).

use candle_core::{Device, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::attention::linear;
use crate::config::LmConfig;
use crate::embed::{lookup, NO_INPUT, SAMPLE};
use crate::transformer::Transformer;

/// The sampler hook of [`DepthTransformer::fill_column`]: `(row, stream, logits_row) -> id`.
pub type Pick<'a> = dyn FnMut(usize, usize, &[f32]) -> Result<u32> + 'a;

pub struct DepthTransformer {
    /// `depth.in_proj.{j}.weight` `[dd, d]`: K of them with `per_position_proj`, else one.
    in_proj: Vec<Tensor>,
    /// `depth.embeddings.{k}.weight` `[V_{k-1}, dd]` at index `k - 1`, k in 1..K.
    embeddings: Vec<Tensor>,
    transformer: Transformer,
    /// `depth.heads.{k}.weight` `[V_k, dd]`, k in 0..K.
    heads: Vec<Tensor>,
    vocab_sizes: Vec<usize>,
    d_main: usize,
    device: Device,
}

impl DepthTransformer {
    /// Loads `depth.in_proj.{j}.weight`, `depth.embeddings.{k}.weight` (k in 1..K),
    /// `depth.layers.*`, `depth.norm.weight` and `depth.heads.{k}.weight`, sized by
    /// [`LmConfig::depth_sizes`].
    /// Store the stack's projections as int8 (the per-position projections and heads stay f32).
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.transformer.quantize_int8()
    }

    pub fn load(ckpt: &mut Checkpoint, config: &LmConfig, device: &Device) -> Result<Self> {
        let depth = config.depth.as_ref().ok_or_else(|| {
            Error::config("the depth transformer needs the config's `depth` object")
        })?;
        let sizes = config
            .depth_sizes()
            .ok_or_else(|| Error::config("the depth transformer needs depth sizes"))?;
        let (d, dd) = (config.d_model, sizes.d_model);
        let vocab_sizes = config.vocab_sizes();
        let k_n = vocab_sizes.len();
        let n_proj = if depth.per_position_proj { k_n } else { 1 };
        let in_proj = (0..n_proj)
            .map(|j| ckpt.take(&format!("depth.in_proj.{j}.weight"), &[dd, d]))
            .collect::<Result<_>>()?;
        let embeddings = (1..k_n)
            .map(|k| {
                ckpt.take(
                    &format!("depth.embeddings.{k}.weight"),
                    &[vocab_sizes[k - 1], dd],
                )
            })
            .collect::<Result<_>>()?;
        let transformer = Transformer::load(ckpt, "depth.", sizes, device)?;
        let heads = (0..k_n)
            .map(|k| ckpt.take(&format!("depth.heads.{k}.weight"), &[vocab_sizes[k], dd]))
            .collect::<Result<_>>()?;
        Ok(Self {
            in_proj,
            embeddings,
            transformer,
            heads,
            vocab_sizes,
            d_main: d,
            device: device.clone(),
        })
    }

    pub fn num_streams(&self) -> usize {
        self.vocab_sizes.len()
    }

    /// `in_proj_{j(k)}(h)` for `h [N, 1, d]` → `[N, 1, dd]`.
    fn project(&self, h: &Tensor, k: usize) -> Result<Tensor> {
        let w = self.in_proj.get(k).unwrap_or(&self.in_proj[0]);
        linear(h, w)
    }

    /// The input of depth position `k` for rows whose main hidden state is `h [N, 1, d]` and
    /// whose token of stream `k - 1` is `prev` (ignored for k = 0) → `[N, 1, dd]`.
    fn position_input(&self, h: &Tensor, k: usize, prev: &[i64]) -> Result<Tensor> {
        let z = self.project(h, k)?;
        if k == 0 {
            return Ok(z);
        }
        let e = lookup(&self.embeddings[k - 1], prev, &self.device)?;
        Ok((z + e.unsqueeze(1)?)?)
    }

    /// Logits `[N, V_k]` of stream k from normed depth outputs `out [N, dd]`.
    fn head(&self, out: &Tensor, k: usize) -> Result<Tensor> {
        Ok(out.matmul(&self.heads[k].t()?)?)
    }

    /// Fails unless `tok` is an id of stream `k` or `-1`.
    fn check_token(&self, tok: i64, k: usize, what: &str) -> Result<()> {
        let v = self.vocab_sizes[k];
        if tok < NO_INPUT || tok >= 0 && tok as u64 >= v as u64 {
            return Err(Error::input(format!(
                "{what} = {tok} is outside stream {k}'s vocabulary [0, {v}) (-1 = no input)"
            )));
        }
        Ok(())
    }

    /// Teacher forced: `hidden [B, S, d]` = the main normed hidden states of steps `0..S-1`;
    /// `next`, row-major `[B, K, S]`, holds the tokens of steps `1..S` (column s = step s + 1;
    /// ids or -1). Returns K tensors `[B, S, V_k]`: the logits of stream k at step s + 1.
    pub fn logits(
        &self,
        hidden: &Tensor,
        next: &[i64],
        batch: usize,
        steps: usize,
    ) -> Result<Vec<Tensor>> {
        let k_n = self.num_streams();
        let (b, s, d) = hidden.dims3()?;
        if (b, s, d) != (batch, steps, self.d_main) || next.len() != batch * k_n * steps {
            return Err(Error::internal(format!(
                "depth logits: hidden {:?} and {} tokens for batch {batch}, {k_n} streams, \
                 {steps} steps, d_model {}",
                hidden.dims(),
                next.len(),
                self.d_main
            )));
        }
        for (i, &tok) in next.iter().enumerate() {
            let (bi, k, si) = (i / (k_n * steps), i / steps % k_n, i % steps);
            self.check_token(tok, k, &format!("step tokens[{bi}, {k}, {}]", si + 1))?;
        }
        let n = batch * steps;
        if n == 0 {
            return self
                .vocab_sizes
                .iter()
                .map(|&v| {
                    Ok(Tensor::zeros(
                        (batch, steps, v),
                        hidden.dtype(),
                        &self.device,
                    )?)
                })
                .collect();
        }
        let h = hidden.reshape((n, 1, d))?;
        // Row n = b·S + s; depth position k reads the token of stream k - 1 at step s + 1.
        let inputs = (0..k_n)
            .map(|k| {
                let prev: Vec<i64> = match k {
                    0 => Vec::new(),
                    _ => (0..batch)
                        .flat_map(|bi| next[(bi * k_n + k - 1) * steps..][..steps].iter().copied())
                        .collect(),
                };
                self.position_input(&h, k, &prev)
            })
            .collect::<Result<Vec<_>>>()?;
        let z = Tensor::cat(&inputs, 1)?;
        let out = self.transformer.forward_full(&z, true)?;
        (0..k_n)
            .map(|k| {
                let logits = self.head(&out.narrow(1, k, 1)?.squeeze(1)?, k)?;
                Ok(logits.reshape((batch, steps, self.vocab_sizes[k]))?)
            })
            .collect()
    }

    /// Starts the depth pass of one step column for `hidden [A, d]` (one main hidden state per
    /// row); feed it position by position with [`DepthColumn::next_logits`].
    pub fn column(&self, hidden: &Tensor) -> Result<DepthColumn<'_>> {
        let (a, d) = hidden.dims2()?;
        if d != self.d_main || a == 0 {
            return Err(Error::internal(format!(
                "depth column: hidden {:?}, expected [A >= 1, {}]",
                hidden.dims(),
                self.d_main
            )));
        }
        Ok(DepthColumn {
            depth: self,
            hidden: hidden.unsqueeze(1)?,
            rows: a,
            inputs: Vec::with_capacity(self.num_streams()),
        })
    }

    /// Generation of one step column for A rows: `hidden [A, d]`; `column`, row-major `[A, K]`,
    /// holds forced ids (>= 0), -1 (no input) or -2 (pick it). Streams k = 0..K-1 in order:
    /// for every row (ascending) whose position k is -2, `pick(row, k, logits_row)` is called and
    /// the returned id stored in `column`; then the column's tokens of stream k are fed to depth
    /// position k + 1. Stops early once no -2 is left.
    pub fn fill_column(
        &self,
        hidden: &Tensor,
        column: &mut [i64],
        pick: &mut Pick<'_>,
    ) -> Result<()> {
        let k_n = self.num_streams();
        let a = hidden.dim(0)?;
        if column.len() != a * k_n {
            return Err(Error::internal(format!(
                "depth column: {} tokens for {a} rows of {k_n} streams",
                column.len()
            )));
        }
        for (i, &tok) in column.iter().enumerate() {
            if tok != SAMPLE {
                self.check_token(tok, i % k_n, &format!("column[{}, {}]", i / k_n, i % k_n))?;
            }
        }
        let mut pass = self.column(hidden)?;
        let mut prev: Vec<i64> = Vec::new();
        for k in 0..k_n {
            if !column.chunks(k_n).any(|row| row[k..].contains(&SAMPLE)) {
                break;
            }
            let logits = pass.next_logits(&prev)?;
            if column.chunks(k_n).any(|row| row[k] == SAMPLE) {
                let v = self.vocab_sizes[k];
                let values = logits.flatten_all()?.to_vec1::<f32>()?;
                for (row, tokens) in column.chunks_mut(k_n).enumerate() {
                    if tokens[k] == SAMPLE {
                        let id = pick(row, k, &values[row * v..][..v])?;
                        if id as usize >= v {
                            return Err(Error::internal(format!(
                                "picked token {id} for stream {k} outside its vocabulary {v}"
                            )));
                        }
                        tokens[k] = i64::from(id);
                    }
                }
            }
            prev = column.chunks(k_n).map(|row| row[k]).collect();
        }
        Ok(())
    }
}

/// One step column going through the depth transformer, position by position. Each position
/// re-runs the (tiny, K-long) causal depth pass over the positions fed so far, batched over all
/// rows: the same math as [`DepthTransformer::logits`], without a per-row cache loop.
pub struct DepthColumn<'a> {
    depth: &'a DepthTransformer,
    /// `[A, 1, d]`.
    hidden: Tensor,
    rows: usize,
    /// The inputs `z_0..z_{k-1}` fed so far, `[A, 1, dd]` each.
    inputs: Vec<Tensor>,
}

impl DepthColumn<'_> {
    /// The depth position (= stream) the next call feeds.
    pub fn position(&self) -> usize {
        self.inputs.len()
    }

    /// Feeds depth position k = [`DepthColumn::position`], whose input token is `prev` (the
    /// column's tokens of stream k - 1, one per row, ids or -1; empty for k = 0), and returns
    /// the logits `[A, V_k]` of stream k. The caller validated the ids.
    pub fn next_logits(&mut self, prev: &[i64]) -> Result<Tensor> {
        let k = self.inputs.len();
        let depth = self.depth;
        let want = if k == 0 { 0 } else { self.rows };
        if k >= depth.num_streams() || prev.len() != want {
            return Err(Error::internal(format!(
                "depth position {k} of {} fed {} tokens for {} rows",
                depth.num_streams(),
                prev.len(),
                self.rows
            )));
        }
        self.inputs
            .push(depth.position_input(&self.hidden, k, prev)?);
        let z = Tensor::cat(&self.inputs, 1)?;
        let out = depth.transformer.forward_full(&z, true)?;
        depth.head(&out.narrow(1, k, 1)?.squeeze(1)?, k)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};
    use speechinfer_core::weights::Checkpoint;
    use speechinfer_core::Error;

    use super::DepthTransformer;
    use crate::config::{DepthConfig, LmConfig, Role, StreamConfig};

    fn config(per_position_proj: bool) -> LmConfig {
        let stream = |k: usize, vocab: usize| StreamConfig {
            name: format!("s{k}"),
            role: Role::Audio,
            vocab_size: vocab,
            pad_id: None,
            bos_id: Some(vocab as u32 - 1),
            eos_id: None,
            delay: k,
            text_offset: 0,
        };
        let config = LmConfig {
            d_model: 32,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_dim: 48,
            max_context: 24,
            streams: vec![stream(0, 17), stream(1, 11), stream(2, 13)],
            pattern: "depth".to_string(),
            depth: Some(DepthConfig {
                d_model: 16,
                n_layers: 2,
                n_heads: 4,
                n_kv_heads: 1,
                ffn_dim: 24,
                per_position_proj,
            }),
            ..LmConfig::default()
        };
        config.validate().unwrap();
        config
    }

    fn random(config: &LmConfig) -> DepthTransformer {
        let dev = Device::Cpu;
        DepthTransformer::load(&mut Checkpoint::random(0.3, &dev), config, &dev).unwrap()
    }

    /// Ids of stream `k % 3` (vocab ≥ 11), with some -1.
    fn tokens(n: usize, k_n: usize, len: usize, seed: u64) -> Vec<i64> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n * k_n * len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 12) as i64 - 1
            })
            .collect()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn fill_column_reproduces_teacher_forced_logits_in_stream_order() {
        for per_position_proj in [false, true] {
            let config = config(per_position_proj);
            let depth = random(&config);
            let (b, s, k_n) = (2, 3, 3);
            let hidden = Tensor::randn(0f32, 1.0, (b, s, 32), &Device::Cpu).unwrap();
            let next = tokens(b, k_n, s, 7);
            let full = depth.logits(&hidden, &next, b, s).unwrap();
            for (k, l) in full.iter().enumerate() {
                assert_eq!(l.dims(), &[b, s, config.streams[k].vocab_size]);
            }
            let full: Vec<Vec<f32>> = full.iter().map(values).collect();
            // Rows a = bi·S + si; every position is picked, and the pick returns the teacher
            // token (a -1 teacher token is stored as an id below, so pick only non-negatives).
            let a_n = b * s;
            let teacher = |a: usize, k: usize| next[((a / s) * k_n + k) * s + a % s];
            let mut column: Vec<i64> = (0..a_n * k_n)
                .map(|i| match teacher(i / k_n, i % k_n) {
                    -1 => -1,
                    _ => -2,
                })
                .collect();
            let mut calls = Vec::new();
            let mut worst = 0f32;
            let flat = hidden.reshape((a_n, 32)).unwrap();
            depth
                .fill_column(&flat, &mut column, &mut |a, k, row| {
                    let v = config.streams[k].vocab_size;
                    assert_eq!(row.len(), v);
                    let want = &full[k][a * v..][..v];
                    for (x, y) in row.iter().zip(want) {
                        worst = worst.max((x - y).abs());
                    }
                    calls.push((k, a));
                    Ok(teacher(a, k) as u32)
                })
                .unwrap();
            assert!(
                worst < 1e-5,
                "per_position_proj={per_position_proj}: {worst}"
            );
            let mut sorted = calls.clone();
            sorted.sort();
            assert_eq!(calls, sorted, "picks in stream order, then row order");
            let expected: Vec<(usize, usize)> = (0..k_n)
                .flat_map(|k| (0..a_n).map(move |a| (k, a)))
                .filter(|&(k, a)| teacher(a, k) != -1)
                .collect();
            assert_eq!(calls, expected);
            let want: Vec<i64> = (0..a_n * k_n).map(|i| teacher(i / k_n, i % k_n)).collect();
            assert_eq!(column, want);

            // Everything forced: no pick, column untouched.
            let mut forced = want.clone();
            depth
                .fill_column(&flat, &mut forced, &mut |_, _, _| panic!("nothing to pick"))
                .unwrap();
            assert_eq!(forced, want);
        }
    }

    #[test]
    fn picked_tokens_feed_the_next_position() {
        // Row 0 picks stream 0 as 3, row 1 has 3 forced: their stream-1 logits agree exactly
        // when their hidden states agree.
        let config = config(true);
        let depth = random(&config);
        let h = Tensor::randn(0f32, 1.0, (1, 32), &Device::Cpu).unwrap();
        let hidden = Tensor::cat(&[&h, &h], 0).unwrap();
        let mut column = vec![-2, -2, 5, 3, -2, -1];
        let mut seen: HashMap<(usize, usize), Vec<f32>> = HashMap::new();
        depth
            .fill_column(&hidden, &mut column, &mut |a, k, row| {
                seen.insert((a, k), row.to_vec());
                Ok(if k == 0 { 3 } else { 4 })
            })
            .unwrap();
        assert_eq!(column, vec![3, 4, 5, 3, 4, -1]);
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[&(0, 1)], seen[&(1, 1)]);
        // A pick outside the vocabulary or a bad forced id is an error.
        let mut column = vec![-2, 0, 0, 0, 0, 0];
        let err = depth
            .fill_column(&hidden, &mut column, &mut |_, _, _| Ok(17))
            .unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
        let mut column = vec![0, 11, 0, 0, 0, 0];
        let err = depth
            .fill_column(&hidden, &mut column, &mut |_, _, _| Ok(0))
            .unwrap_err();
        assert!(
            matches!(&err, Error::Input(m) if m.contains("column[0, 1] = 11")),
            "{err}"
        );
    }

    #[test]
    fn column_pass_feeds_positions_in_order() {
        let config = config(false);
        let depth = random(&config);
        let hidden = Tensor::randn(0f32, 1.0, (2, 32), &Device::Cpu).unwrap();
        let mut pass = depth.column(&hidden).unwrap();
        let mut want = Vec::new();
        for (k, prev) in [vec![], vec![4, -1], vec![2, 9]].iter().enumerate() {
            assert_eq!(pass.position(), k);
            let logits = pass.next_logits(prev).unwrap();
            assert_eq!(logits.dims(), &[2, config.streams[k].vocab_size]);
            want.push(values(&logits));
        }
        assert!(matches!(pass.next_logits(&[0, 0]), Err(Error::Internal(_))));
        // The same column teacher-forced (S = 1 step per row).
        let next = vec![4, 2, 0, -1, 9, 0];
        let full = depth
            .logits(&hidden.unsqueeze(1).unwrap(), &next, 2, 1)
            .unwrap();
        for (k, l) in full.iter().enumerate() {
            let got = values(l);
            let worst = got
                .iter()
                .zip(&want[k])
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst < 1e-5, "stream {k}: {worst}");
        }
    }

    /// The tensors `docs/lm.md` lists for the depth transformer of `config`.
    fn contract_tensors(config: &LmConfig) -> Vec<(String, Vec<usize>)> {
        let depth = config.depth.as_ref().unwrap();
        let (d, dd, f) = (config.d_model, depth.d_model, depth.ffn_dim);
        let hd = dd / depth.n_heads;
        let (h, hkv) = (depth.n_heads * hd, depth.n_kv_heads * hd);
        let v: Vec<usize> = config.vocab_sizes();
        let k_n = v.len();
        let mut out = Vec::new();
        let n_proj = if depth.per_position_proj { k_n } else { 1 };
        for j in 0..n_proj {
            out.push((format!("depth.in_proj.{j}.weight"), vec![dd, d]));
        }
        for k in 1..k_n {
            out.push((format!("depth.embeddings.{k}.weight"), vec![v[k - 1], dd]));
        }
        for i in 0..depth.n_layers {
            let p = format!("depth.layers.{i}");
            out.push((format!("{p}.attn_norm.weight"), vec![dd]));
            out.push((format!("{p}.attn.q_proj.weight"), vec![h, dd]));
            out.push((format!("{p}.attn.k_proj.weight"), vec![hkv, dd]));
            out.push((format!("{p}.attn.v_proj.weight"), vec![hkv, dd]));
            out.push((format!("{p}.attn.o_proj.weight"), vec![dd, h]));
            out.push((format!("{p}.ffn_norm.weight"), vec![dd]));
            out.push((format!("{p}.ffn.gate_proj.weight"), vec![f, dd]));
            out.push((format!("{p}.ffn.up_proj.weight"), vec![f, dd]));
            out.push((format!("{p}.ffn.down_proj.weight"), vec![dd, f]));
        }
        out.push(("depth.norm.weight".to_string(), vec![dd]));
        for (k, &vk) in v.iter().enumerate() {
            out.push((format!("depth.heads.{k}.weight"), vec![vk, dd]));
        }
        out
    }

    /// A real checkpoint file holding exactly `tensors` (random values).
    fn checkpoint(tensors: &[(String, Vec<usize>)], tag: &str) -> Checkpoint {
        let dev = Device::Cpu;
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    Tensor::randn(0f32, 0.3, s.as_slice(), &dev).unwrap(),
                )
            })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "speechinfer-lm-depth-{}-{tag}.safetensors",
            std::process::id()
        ));
        candle_core::safetensors::save(&map, &path).unwrap();
        let ckpt = Checkpoint::load(&path, &dev).unwrap();
        std::fs::remove_file(&path).unwrap();
        ckpt
    }

    #[test]
    fn loads_exactly_the_contract_tensors() {
        let dev = Device::Cpu;
        for per_position_proj in [false, true] {
            let config = config(per_position_proj);
            let tensors = contract_tensors(&config);
            let mut ckpt = checkpoint(&tensors, &format!("ok-{per_position_proj}"));
            DepthTransformer::load(&mut ckpt, &config, &dev).unwrap();
            ckpt.finish().unwrap();
        }
        // Per-position weights under a shared-projection config: left over.
        let tensors = contract_tensors(&config(true));
        let mut ckpt = checkpoint(&tensors, "extra");
        DepthTransformer::load(&mut ckpt, &config(false), &dev).unwrap();
        let err = ckpt.finish().unwrap_err().to_string();
        assert!(err.contains("depth.in_proj.1.weight"), "{err}");
        // A shared projection under a per-position config: missing.
        let tensors = contract_tensors(&config(false));
        let mut ckpt = checkpoint(&tensors, "missing");
        let err = DepthTransformer::load(&mut ckpt, &config(true), &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("'depth.in_proj.1.weight' is missing"), "{err}");
    }

    #[test]
    fn teacher_forced_inputs_are_validated() {
        let config = config(false);
        let depth = random(&config);
        let hidden = Tensor::zeros((1, 2, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut next = vec![0i64; 6];
        next[3] = 11;
        let err = depth.logits(&hidden, &next, 1, 2).unwrap_err();
        assert!(
            matches!(&err, Error::Input(m) if m.contains("step tokens[0, 1, 2] = 11")),
            "{err}"
        );
        let err = depth.logits(&hidden, &next[..4], 1, 2).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
    }
}
