//! Mimi's encoder/decoder transformer (moshi's `ProjectedTransformer` with `d_model` equal to the
//! SEANet dimension, so no projections): norm-first layers of causal self-attention with
//! interleaved RoPE and a sliding window of `context` steps, then a GELU MLP, each branch scaled
//! by a learnt layer scale. LayerNorms have biases; linears do not.
//!
//! A query at position p attends to keys at positions p - context + 1 ..= p. Streaming keeps the
//! last `context - 1` keys and values of every layer, so chunked calls equal one whole call
//! (moshi's own streaming cache keeps `context` entries, which matches its batch mask only for
//! the first `context` steps; the two agree everywhere a test can reach in a few seconds).

use candle_core::{Device, Tensor};
use speechinfer_core::tensor_ops::LinearWeight;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use super::MimiConfig;
use crate::state::Cursor;

struct Layer {
    norm1: (Tensor, Tensor),
    /// `[3d, d]`: `in_proj_weight` (rows q; k; v).
    in_proj: LinearWeight,
    /// `[d, d]`.
    out_proj: LinearWeight,
    norm2: (Tensor, Tensor),
    /// `[ff, d]` and `[d, ff]`.
    linear1: LinearWeight,
    linear2: LinearWeight,
    scale1: Tensor,
    scale2: Tensor,
}

/// A linear weight `[out, in]` under `name`.
fn linear(ckpt: &mut Checkpoint, name: &str, out: usize, inp: usize) -> Result<LinearWeight> {
    Ok(LinearWeight::new(ckpt.take(name, &[out, inp])?))
}

impl Layer {
    fn load(ckpt: &mut Checkpoint, prefix: &str, cfg: &MimiConfig) -> Result<Self> {
        let d = cfg.dimension;
        let ff = cfg.dim_feedforward;
        let mut norm = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                ckpt.take(&format!("{prefix}.{name}.weight"), &[d])?,
                ckpt.take(&format!("{prefix}.{name}.bias"), &[d])?,
            ))
        };
        let norm1 = norm("norm1")?;
        let norm2 = norm("norm2")?;
        // The release names `in_proj_weight`/`out_proj.weight`; a raw PyTorch state dict has
        // `in_projs.0.weight`/`out_projs.0.weight`.
        let attn = format!("{prefix}.self_attn");
        let pick = |ckpt: &Checkpoint, released: String, raw: String| {
            if !ckpt.contains(&released) && ckpt.contains(&raw) {
                raw
            } else {
                released
            }
        };
        let in_name = pick(
            ckpt,
            format!("{attn}.in_proj_weight"),
            format!("{attn}.in_projs.0.weight"),
        );
        let out_name = pick(
            ckpt,
            format!("{attn}.out_proj.weight"),
            format!("{attn}.out_projs.0.weight"),
        );
        Ok(Self {
            norm1,
            in_proj: linear(ckpt, &in_name, 3 * d, d)?,
            out_proj: linear(ckpt, &out_name, d, d)?,
            norm2,
            linear1: linear(ckpt, &format!("{prefix}.linear1.weight"), ff, d)?,
            linear2: linear(ckpt, &format!("{prefix}.linear2.weight"), d, ff)?,
            scale1: ckpt.take(&format!("{prefix}.layer_scale_1.scale"), &[d])?,
            scale2: ckpt.take(&format!("{prefix}.layer_scale_2.scale"), &[d])?,
        })
    }
}

pub(crate) struct Transformer {
    layers: Vec<Layer>,
    num_heads: usize,
    head_dim: usize,
    context: usize,
    max_period: f64,
    eps: f32,
}

impl Transformer {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, cfg: &MimiConfig) -> Result<Self> {
        if !cfg.dimension.is_multiple_of(2 * cfg.num_heads) {
            return Err(Error::config(format!(
                "dimension {} does not split into {} heads of even size",
                cfg.dimension, cfg.num_heads
            )));
        }
        let layers = (0..cfg.num_layers)
            .map(|i| Layer::load(ckpt, &format!("{prefix}.transformer.layers.{i}"), cfg))
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            num_heads: cfg.num_heads,
            head_dim: cfg.dimension / cfg.num_heads,
            context: cfg.context,
            max_period: cfg.max_period,
            eps: cfg.norm_eps as f32,
        })
    }

    /// Every linear weight rounded to bfloat16 (norms and layer scales stay f32).
    pub fn round_to_bf16(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            for w in [
                &mut layer.in_proj,
                &mut layer.out_proj,
                &mut layer.linear1,
                &mut layer.linear2,
            ] {
                w.round_to_bf16()?;
            }
        }
        Ok(())
    }

    /// `[B, d, T]` (conv layout) → `[B, d, T]`.
    ///
    /// State: a `[B, 1, 1]` count of the steps each stream has seen (0 after a reset), then per
    /// layer its cached keys and values `[B, H, L, head_dim]` (RoPE already applied to the
    /// keys), kept in the layout attention reads so a step copies each cache once.
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let (b, d, t) = x.dims3()?;
        let device = x.device();
        let offset_slot = cursor.next_slot();
        let offsets: Vec<f32> = match offset_slot.take() {
            Some(o) => o.flatten_all()?.to_vec1()?,
            None => vec![0.0; b],
        };
        let advanced: Vec<f32> = offsets.iter().map(|o| o + t as f32).collect();
        *offset_slot = Some(Tensor::from_vec(advanced, (b, 1, 1), device)?);
        let offsets: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();

        let (cos, sin) = self.rope_tables(&offsets, t, device)?;
        let mut x = x.transpose(1, 2)?.contiguous()?;
        let mut blocks: Option<Vec<Block>> = None;
        for layer in &self.layers {
            let k_slot = cursor.next_slot();
            let cached_k = k_slot.take();
            let cache_len = cached_k.as_ref().map_or(Ok(0), |k| k.dim(2))?;
            if blocks.is_none() {
                // Every layer caches the same number of steps: the masks are built once.
                blocks = Some(self.blocks(&offsets, t, cache_len, device)?);
            }
            let blocks = blocks
                .as_ref()
                .ok_or_else(|| Error::internal("attention masks not built"))?;
            let h = candle_nn::ops::layer_norm(&x, &layer.norm1.0, &layer.norm1.1, self.eps)?;
            let qkv = matmul2d(&h, &layer.in_proj)?;
            let q = self.heads(&qkv.narrow(2, 0, d)?)?;
            let k = self.heads(&qkv.narrow(2, d, d)?)?;
            let v = qkv.narrow(2, 2 * d, d)?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let keys = self.extend(cached_k, &k, k_slot)?;
            let v_slot = cursor.next_slot();
            let cached_v = v_slot.take();
            let values = self.extend(cached_v, &self.heads(&v)?, v_slot)?;

            let scale = 1.0 / (self.head_dim as f64).sqrt();
            let mut outputs = Vec::with_capacity(blocks.len());
            for block in blocks {
                let q = q.narrow(2, block.query_start, block.query_len)?;
                let k = keys.narrow(2, block.key_start, block.key_len)?;
                let v = values.narrow(2, block.key_start, block.key_len)?;
                let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&block.mask)?;
                let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                outputs.push(probs.matmul(&v.contiguous()?)?);
            }
            let attn = Tensor::cat(&outputs, 2)?
                .transpose(1, 2)?
                .reshape((b, t, d))?;
            let update = matmul2d(&attn, &layer.out_proj)?;
            x = (x + update.broadcast_mul(&layer.scale1)?)?;

            let h = candle_nn::ops::layer_norm(&x, &layer.norm2.0, &layer.norm2.1, self.eps)?;
            let h = matmul2d(&matmul2d(&h, &layer.linear1)?.gelu_erf()?, &layer.linear2)?;
            x = (x + h.broadcast_mul(&layer.scale2)?)?;
        }
        Ok(x.transpose(1, 2)?.contiguous()?)
    }

    /// `[B, T', d]` → `[B, H, T', head_dim]` (contiguous).
    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        Ok(x.reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Cached `[B, H, L, hd]` + new `[B, H, T, hd]` → all keys `[B, H, L + T, hd]`; the slot
    /// keeps a view of the last `context - 1` (the next step's `cat` copies them once).
    fn extend(
        &self,
        cached: Option<Tensor>,
        new: &Tensor,
        slot: &mut Option<Tensor>,
    ) -> Result<Tensor> {
        let all = match cached {
            Some(c) => Tensor::cat(&[&c, new], 2)?,
            None => new.contiguous()?,
        };
        let len = all.dim(2)?;
        let keep = len.min(self.context.saturating_sub(1));
        *slot = Some(all.narrow(2, len - keep, keep)?);
        Ok(all)
    }

    /// cos/sin `[B, T, head_dim / 2]` for positions `offset_b + t`, computed as moshi does in f32:
    /// `freq_i = exp(i · (-ln(max_period) · 2 / head_dim))`, angle `= freq_i · position`.
    fn rope_tables(
        &self,
        offsets: &[usize],
        t: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.head_dim / 2;
        let step = (-(self.max_period.ln()) * 2.0 / self.head_dim as f64) as f32;
        let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * step).exp()).collect();
        let len = offsets.len() * t * half;
        let (mut cos, mut sin) = (Vec::with_capacity(len), Vec::with_capacity(len));
        for &offset in offsets {
            for pos in offset..offset + t {
                for &f in &freqs {
                    let angle = (f * pos as f32) as f64;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let shape = (offsets.len(), t, half);
        Ok((
            Tensor::from_vec(cos, shape, device)?,
            Tensor::from_vec(sin, shape, device)?,
        ))
    }

    /// The attention of `t` new queries over `cached` + `t` keys, in blocks of at most `context`
    /// queries, each with only the keys its window can reach: memory and time stay linear in `t`.
    ///
    /// Query i (index `cached + i` among the keys, position `offset + i`) may see key j when the
    /// key is no older than the stream (`j ≥ cached - offset`), not in the future and within the
    /// window: `0 ≤ cached + i - j < context`.
    fn blocks(
        &self,
        offsets: &[usize],
        t: usize,
        cached: usize,
        device: &Device,
    ) -> Result<Vec<Block>> {
        let size = self.context.max(1);
        let mut blocks = Vec::with_capacity(t.div_ceil(size));
        for query_start in (0..t).step_by(size) {
            let query_len = size.min(t - query_start);
            let key_start = (cached + query_start).saturating_sub(self.context.saturating_sub(1));
            let key_len = cached + query_start + query_len - key_start;
            let mut values = Vec::with_capacity(offsets.len() * query_len * key_len);
            for &offset in offsets {
                let oldest = cached.saturating_sub(offset);
                for i in 0..query_len {
                    let qi = cached + query_start + i;
                    for j in key_start..key_start + key_len {
                        let ok = j >= oldest && j <= qi && qi - j < self.context;
                        values.push(if ok { 0f32 } else { f32::NEG_INFINITY });
                    }
                }
            }
            let shape = (offsets.len(), 1, query_len, key_len);
            blocks.push(Block {
                query_start,
                query_len,
                key_start,
                key_len,
                mask: Tensor::from_vec(values, shape, device)?,
            });
        }
        Ok(blocks)
    }
}

/// A block of queries and the keys their windows reach.
struct Block {
    query_start: usize,
    query_len: usize,
    key_start: usize,
    key_len: usize,
    /// `[B, 1, query_len, key_len]`: 0 where a query may attend, -inf elsewhere.
    mask: Tensor,
}

/// Rows up to which a linear streams its weight through the dot-product kernel (a streaming
/// step: 2 rows per stream) instead of the GEMM.
const FEW_ROWS: usize = 8;

/// `[B, T, in] · wᵀ` with `w [out, in]` → `[B, T, out]` as one 2-D product.
fn matmul2d(x: &Tensor, w: &LinearWeight) -> Result<Tensor> {
    let (b, t, i) = x.dims3()?;
    let out = w.weight().dim(0)?;
    let rows = x.reshape((b * t, i))?;
    Ok(w.forward(&rows, b * t <= FEW_ROWS)?.reshape((b, t, out))?)
}

/// Reference checks of the masking rule on small cases.
#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(context: usize) -> Transformer {
        Transformer {
            layers: Vec::new(),
            num_heads: 1,
            head_dim: 2,
            context,
            max_period: 10000.0,
            eps: 1e-5,
        }
    }

    fn allowed(block: &Block) -> Vec<bool> {
        let m: Vec<f32> = block.mask.flatten_all().unwrap().to_vec1().unwrap();
        m.iter().map(|&v| v == 0.0).collect()
    }

    #[test]
    fn mask_is_a_causal_window_and_hides_keys_from_before_a_reset() {
        let blocks = tiny(3).blocks(&[5, 1], 2, 2, &Device::Cpu).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!((blocks[0].key_start, blocks[0].key_len), (0, 4));
        let m = allowed(&blocks[0]);
        // Stream 0 (long history): query 0 sees keys 0..=2, query 1 sees 1..=3.
        assert_eq!(m[..8], [true, true, true, false, false, true, true, true]);
        // Stream 1 (one step since a reset): key 0 is older than the stream.
        assert_eq!(m[8..], [false, true, true, false, false, true, true, true]);
    }

    #[test]
    fn long_inputs_split_into_query_blocks_with_their_windows() {
        // context 3, no cache, 7 queries: blocks [0,3) [3,6) [6,7).
        let blocks = tiny(3).blocks(&[0], 7, 0, &Device::Cpu).unwrap();
        let spans: Vec<_> = blocks
            .iter()
            .map(|b| (b.query_start, b.query_len, b.key_start, b.key_len))
            .collect();
        assert_eq!(spans, [(0, 3, 0, 3), (3, 3, 1, 5), (6, 1, 4, 3)]);
        // Query 3 (first of block 1) sees keys 1..=3, i.e. local 0..=2.
        let m = allowed(&blocks[1]);
        assert_eq!(m[..5], [true, true, true, false, false]);
        assert_eq!(allowed(&blocks[2]), [true, true, true]);
    }
}
