//! Grouped-query self-attention with rotary position embeddings, and the preallocated per-slot
//! KV cache (`docs/lm.md`).

use candle_core::{DType, Device, Tensor};
use speechinfer_core::tensor_ops::with_cpu_f32;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};
use speechinfer_kernels::rope_tables;

use crate::cached_attention::{attend_cached, CachedShape};
use crate::linear::Linear;
use crate::transformer::Sizes;

/// `cos` / `sin` tables `[positions, head_dim / 2]` of the rotate-half RoPE.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(sizes: &Sizes, device: &Device) -> Result<Self> {
        let (half, positions) = (sizes.head_dim() / 2, sizes.max_positions);
        let (cos, sin) = rope_tables(sizes.rope_theta, sizes.head_dim(), positions);
        Ok(Self {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
        })
    }

    /// Rotates `x` `[B, heads, S, hd]` whose first step sits at position `offset`.
    fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let s = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, s)?;
        let sin = self.sin.narrow(0, offset, s)?;
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
    }
}

/// Keys and values of one layer for every sequence slot, `[slots, Hkv, capacity, hd]` each.
pub struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// The KV cache of a batch: one preallocated buffer per layer with a slot per sequence, each
/// slot with its own length, so sequences of different lengths share batched projections while
/// attending only to their own positions.
pub struct KvCache {
    layers: Vec<LayerCache>,
    lens: Vec<usize>,
    capacity: usize,
}

impl KvCache {
    pub fn new(sizes: &Sizes, batch_size: usize, device: &Device) -> Result<Self> {
        let shape = (
            batch_size,
            sizes.n_kv_heads,
            sizes.max_positions,
            sizes.head_dim(),
        );
        let layers = (0..sizes.n_layers)
            .map(|_| {
                Ok(LayerCache {
                    k: Tensor::zeros(shape, DType::F32, device)?,
                    v: Tensor::zeros(shape, DType::F32, device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            lens: vec![0; batch_size],
            capacity: sizes.max_positions,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.lens.len()
    }

    /// Positions stored for `slot` (= the position of its next step).
    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forget every slot (the buffers are kept).
    pub fn reset(&mut self) {
        self.lens.iter_mut().for_each(|len| *len = 0);
    }

    /// Forget one slot (its next step is position 0 again); the others keep theirs.
    pub fn reset_slot(&mut self, slot: usize) {
        self.lens[slot] = 0;
    }

    /// Fails unless `steps` more positions fit in every slot of `rows`.
    pub fn check_room(&self, rows: &[usize], steps: usize) -> Result<()> {
        for &slot in rows {
            let len = self.lens[slot];
            if len + steps > self.capacity {
                return Err(Error::input(format!(
                    "the sequence needs {} positions but max_context is {} (already used {len})",
                    len + steps,
                    self.capacity
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn layer(&self, layer: usize) -> &LayerCache {
        &self.layers[layer]
    }

    pub(crate) fn advance(&mut self, rows: &[usize], steps: usize) {
        for &slot in rows {
            self.lens[slot] += steps;
        }
    }

    /// Splits `rows` (input row `a` → slot `rows[a]`) into runs of consecutive input rows whose
    /// slots are consecutive and hold the same length: each run is one batched attention.
    fn runs(&self, rows: &[usize]) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for a in 0..rows.len() {
            match runs.last_mut() {
                Some((start, len))
                    if rows[a] == rows[a - 1] + 1
                        && self.lens[rows[a]] == self.lens[rows[*start]] =>
                {
                    *len += 1
                }
                _ => runs.push((a, 1)),
            }
        }
        runs
    }
}

pub struct Attention {
    /// `q_proj`, `k_proj`, `v_proj` stacked `[(h + 2·hkv)·hd, d]`: one pass per decoding step.
    qkv_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

/// `x [B, S, in] · wᵀ` with `w [out, in]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    let out = w.dim(0)?;
    Ok(linear_rows(&x.reshape((b * s, d))?, w, s == 1)?.reshape((b, s, out))?)
}

pub(crate) use speechinfer_core::tensor_ops::linear_rows;

/// Where the keys and values of a forward come from.
pub enum KvSource<'a> {
    /// Row `a` of the input belongs to cache slot `rows[a]`, whose stored positions it extends.
    Cache {
        cache: &'a KvCache,
        layer: usize,
        rows: &'a [usize],
    },
    /// No cache: the input is the whole sequence, at positions `0..S`, causal or bidirectional.
    Full { causal: bool },
}

impl Attention {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, sizes: &Sizes) -> Result<Self> {
        let (d, hd) = (sizes.d_model, sizes.head_dim());
        let (h, hkv) = (sizes.n_heads, sizes.n_kv_heads);
        Ok(Self {
            qkv_proj: Linear::new(Tensor::cat(
                &[
                    &ckpt.take(&format!("{prefix}.q_proj.weight"), &[h * hd, d])?,
                    &ckpt.take(&format!("{prefix}.k_proj.weight"), &[hkv * hd, d])?,
                    &ckpt.take(&format!("{prefix}.v_proj.weight"), &[hkv * hd, d])?,
                ],
                0,
            )?),
            o_proj: Linear::new(ckpt.take(&format!("{prefix}.o_proj.weight"), &[d, h * hd])?),
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: hd,
        })
    }

    /// The stacked q/k/v and the output projections.
    pub(crate) fn projections(&self) -> (&Linear, &Linear) {
        (&self.qkv_proj, &self.o_proj)
    }

    /// Store the projections as int8 ([`Linear::quantize_int8`]).
    pub fn quantize_int8(&mut self) -> Result<()> {
        // Per-row scales: stacking rows changes no row's quantization.
        for w in [&mut self.qkv_proj, &mut self.o_proj] {
            w.quantize_int8()?;
        }
        Ok(())
    }

    /// `x [B, S, d]` → `[B, S, d]`. With a cache, row `a` sits at positions
    /// `len(rows[a]) .. + S` and its keys/values are written there (the caller checked the room
    /// and advances the lengths).
    pub fn forward(&self, x: &Tensor, rope: &Rope, source: &KvSource) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (h, hkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let qkv = self.qkv_proj.forward(x)?;
        let heads = |start: usize, n: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, start * hd, n * hd)?
                .contiguous()?
                .reshape((b, s, n, hd))?
                .transpose(1, 2)?)
        };
        let (q, k, v) = (heads(0, h)?, heads(h, hkv)?, heads(h + hkv, hkv)?);
        let out = match source {
            KvSource::Full { causal } => {
                let (q, k) = (rope.apply(&q, 0)?, rope.apply(&k, 0)?);
                let mask = causal.then(|| causal_mask(s, 0, x.device())).transpose()?;
                self.attend(&q, &k, &v.contiguous()?, mask.as_ref())?
            }
            KvSource::Cache { cache, layer, rows } => {
                let lc = cache.layer(*layer);
                let mut outs = Vec::new();
                for (start, n) in cache.runs(rows) {
                    let (slot, offset) = (rows[start], cache.len(rows[start]));
                    let q = rope.apply(&q.narrow(0, start, n)?, offset)?;
                    let k = rope.apply(&k.narrow(0, start, n)?, offset)?;
                    let v = v.narrow(0, start, n)?.contiguous()?;
                    let (kc, vc) = (lc.k.narrow(0, slot, n)?, lc.v.narrow(0, slot, n)?);
                    kc.slice_set(&k, 2, offset)?;
                    vc.slice_set(&v, 2, offset)?;
                    if s <= DIRECT_STEPS {
                        let shape = CachedShape {
                            n_heads: h,
                            n_kv_heads: hkv,
                            head_dim: hd,
                            capacity: cache.capacity(),
                            first_slot: slot,
                            n,
                            s,
                            offset,
                        };
                        if let Some(out) = attend_direct(&q, lc, &shape)? {
                            outs.push(out);
                            continue;
                        }
                    }
                    let total = offset + s;
                    let mask = (s > 1)
                        .then(|| causal_mask(s, offset, x.device()))
                        .transpose()?;
                    let (keys, values) = (kc.narrow(2, 0, total)?, vc.narrow(2, 0, total)?);
                    outs.push(self.attend(&q, &keys, &values, mask.as_ref())?);
                }
                match outs.len() {
                    1 => outs.remove(0),
                    _ => Tensor::cat(&outs, 0)?,
                }
            }
        };
        let out = out.transpose(1, 2)?.reshape((b, s, h * hd))?;
        self.o_proj.forward(&out)
    }

    /// Softmax attention of `q [B, H, S, hd]` over `k, v [B, Hkv, L, hd]` with an optional
    /// additive mask `[S, L]`. The query heads sharing a kv head are stacked as rows,
    /// `[B, Hkv, rep·S, hd]`, so keys and values are read where they are (a view of the cache)
    /// instead of being copied once per query head.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let rep = self.n_heads / self.n_kv_heads;
        let (b, h, s, hd) = q.dims4()?;
        let q = q.contiguous()?.reshape((b, h / rep, rep * s, hd))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(&mask.repeat((rep, 1))?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(probs.matmul(v)?.reshape((b, h, s, hd))?)
    }
}

/// New positions per sequence up to which cached attention reads the cache directly
/// (`cached_attention`); longer inputs (prefill) take the GEMMs.
const DIRECT_STEPS: usize = 8;

/// [`attend_cached`] on CPU f32 tensors (`None` for any other device or dtype).
fn attend_direct(q: &Tensor, lc: &LayerCache, shape: &CachedShape) -> Result<Option<Tensor>> {
    let computed = with_cpu_f32(&lc.k, |k| {
        with_cpu_f32(&lc.v, |v| {
            with_cpu_f32(q, |q| attend_cached(q, k, v, shape))
        })
    })?;
    let out = match computed {
        Some(inner) => match inner? {
            Some(inner) => inner?,
            None => None,
        },
        None => None,
    };
    let Some(out) = out else {
        return Ok(None);
    };
    let dims = (shape.n, shape.n_heads, shape.s, shape.head_dim);
    Ok(Some(Tensor::from_vec(out, dims, q.device())?))
}

/// `[S, offset + S]` additive mask: query i (position offset + i) sees keys j ≤ offset + i.
fn causal_mask(s: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let total = offset + s;
    let values: Vec<f32> = (0..s)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(values, (s, total), device)?)
}
