//! Grouped-query causal self-attention with rotary position embeddings and a preallocated
//! KV cache (`docs/lm.md`).

use candle_core::{DType, Device, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::config::LmConfig;

/// `cos` / `sin` tables `[max_context, head_dim / 2]` of the rotate-half RoPE.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(config: &LmConfig, device: &Device) -> Result<Self> {
        let half = config.head_dim() / 2;
        let positions = config.max_context;
        let hd = config.head_dim() as f64;
        // Angles in f64, then rounded once to f32 (the twin does the same).
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for j in 0..half {
                let inv_freq = config.rope_theta.powf(-(2.0 * j as f64) / hd);
                let angle = p as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
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

/// Keys and values of one layer for `B` sequence slots, preallocated to `capacity` positions.
/// All slots advance together (one `len`).
pub struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// The KV cache of a whole model: one [`LayerCache`] per layer and the number of positions
/// already stored.
pub struct KvCache {
    layers: Vec<LayerCache>,
    batch_size: usize,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(config: &LmConfig, batch_size: usize, device: &Device) -> Result<Self> {
        let shape = (
            batch_size,
            config.n_kv_heads,
            config.max_context,
            config.head_dim(),
        );
        let layers = (0..config.n_layers)
            .map(|_| {
                Ok(LayerCache {
                    k: Tensor::zeros(shape, DType::F32, device)?,
                    v: Tensor::zeros(shape, DType::F32, device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            batch_size,
            len: 0,
            capacity: config.max_context,
        })
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Positions already stored (= the position of the next step).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forget everything (the buffers are kept).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Fails unless `steps` more positions fit.
    pub fn check_room(&self, steps: usize) -> Result<()> {
        if self.len + steps > self.capacity {
            return Err(Error::input(format!(
                "the sequence needs {} positions but max_context is {} (already used {})",
                self.len + steps,
                self.capacity,
                self.len
            )));
        }
        Ok(())
    }

    pub(crate) fn layer(&self, i: usize) -> &LayerCache {
        &self.layers[i]
    }

    pub(crate) fn advance(&mut self, steps: usize) {
        self.len += steps;
    }
}

pub struct Attention {
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

/// `x [B, S, in] · wᵀ` with `w [out, in]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, s, d) = x.dims3()?;
    let out = w.dim(0)?;
    let y = x.reshape((b * s, d))?.matmul(&w.t()?)?;
    Ok(y.reshape((b, s, out))?)
}

impl Attention {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, config: &LmConfig) -> Result<Self> {
        let (d, hd) = (config.d_model, config.head_dim());
        let (h, hkv) = (config.n_heads, config.n_kv_heads);
        Ok(Self {
            q_proj: ckpt.take(&format!("{prefix}.q_proj.weight"), &[h * hd, d])?,
            k_proj: ckpt.take(&format!("{prefix}.k_proj.weight"), &[hkv * hd, d])?,
            v_proj: ckpt.take(&format!("{prefix}.v_proj.weight"), &[hkv * hd, d])?,
            o_proj: ckpt.take(&format!("{prefix}.o_proj.weight"), &[d, h * hd])?,
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: hd,
        })
    }

    /// `x [B, S, d]` at positions `offset .. offset + S` → `[B, S, d]`; appends the new keys and
    /// values to `cache` at `offset` (the caller checked the room and advances the length).
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: &LayerCache,
        offset: usize,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let (h, hkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let heads = |w: &Tensor, n: usize| -> Result<Tensor> {
            Ok(linear(x, w)?.reshape((b, s, n, hd))?.transpose(1, 2)?)
        };
        let q = rope.apply(&heads(&self.q_proj, h)?, offset)?;
        let k = rope.apply(&heads(&self.k_proj, hkv)?, offset)?;
        let v = heads(&self.v_proj, hkv)?.contiguous()?;
        cache.k.slice_set(&k, 2, offset)?;
        cache.v.slice_set(&v, 2, offset)?;
        let total = offset + s;
        let k = repeat_kv(&cache.k.narrow(2, 0, total)?, h / hkv)?;
        let v = repeat_kv(&cache.v.narrow(2, 0, total)?, h / hkv)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = scores.broadcast_add(&causal_mask(s, offset, x.device())?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, h * hd))?;
        linear(&out, &self.o_proj)
    }
}

/// `[B, Hkv, L, hd]` → `[B, Hkv·rep, L, hd]`, query head `h` reading kv head `h / rep`.
fn repeat_kv(x: &Tensor, rep: usize) -> Result<Tensor> {
    let (b, hkv, l, hd) = x.dims4()?;
    if rep == 1 {
        return Ok(x.contiguous()?);
    }
    Ok(x.unsqueeze(2)?
        .expand((b, hkv, rep, l, hd))?
        .reshape((b, hkv * rep, l, hd))?)
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
