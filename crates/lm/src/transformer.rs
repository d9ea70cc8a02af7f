//! The Llama-shaped decoder stack: pre-norm blocks of attention and a SwiGLU feed-forward. The
//! same stack (with its own sizes and tensor prefix) serves the main LM, the depth transformer
//! and the non-autoregressive stage model.

use candle_core::{Device, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;
use speechinfer_kernels::LayerWeights;

use crate::attention::{Attention, KvCache, KvSource, Rope};
use crate::linear::{host_values, Linear};

/// The sizes that shape one transformer stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn_dim: usize,
    pub rope_theta: f64,
    pub norm_eps: f64,
    /// RoPE table length and KV-cache capacity.
    pub max_positions: usize,
}

impl Sizes {
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }
}

/// RMSNorm with a learned scale.
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(ckpt: &mut Checkpoint, name: &str, sizes: &Sizes) -> Result<Self> {
        Ok(Self {
            weight: ckpt.take(name, &[sizes.d_model])?,
            eps: sizes.norm_eps as f32,
        })
    }

    fn host_weight(&self) -> Result<Vec<f32>> {
        host_values(&self.weight)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

/// `down(silu(gate(x)) * up(x))`, with `gate` and `up` stacked into one `[2f, d]` projection:
/// a decoding step streams both in one pass (one parallel dispatch instead of two).
pub struct SwiGlu {
    gate_up: Linear,
    down: Linear,
    ffn_dim: usize,
}

impl SwiGlu {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, sizes: &Sizes) -> Result<Self> {
        let (d, f) = (sizes.d_model, sizes.ffn_dim);
        let gate = ckpt.take(&format!("{prefix}.gate_proj.weight"), &[f, d])?;
        let up = ckpt.take(&format!("{prefix}.up_proj.weight"), &[f, d])?;
        Ok(Self {
            gate_up: Linear::new(Tensor::cat(&[&gate, &up], 0)?),
            down: Linear::new(ckpt.take(&format!("{prefix}.down_proj.weight"), &[d, f])?),
            ffn_dim: f,
        })
    }

    pub fn quantize_int8(&mut self) -> Result<()> {
        // Per-row scales: stacking rows changes no row's quantization.
        for w in [&mut self.gate_up, &mut self.down] {
            w.quantize_int8()?;
        }
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.ffn_dim;
        let gate_up = self.gate_up.forward(x)?;
        let gate = candle_nn::ops::silu(&gate_up.narrow(2, 0, f)?)?;
        let hidden = (gate * gate_up.narrow(2, f, f)?)?;
        self.down.forward(&hidden)
    }
}

pub struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    ffn: SwiGlu,
}

impl Block {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, sizes: &Sizes) -> Result<Self> {
        Ok(Self {
            attn_norm: RmsNorm::load(ckpt, &format!("{prefix}.attn_norm.weight"), sizes)?,
            attn: Attention::load(ckpt, &format!("{prefix}.attn"), sizes)?,
            ffn_norm: RmsNorm::load(ckpt, &format!("{prefix}.ffn_norm.weight"), sizes)?,
            ffn: SwiGlu::load(ckpt, &format!("{prefix}.ffn"), sizes)?,
        })
    }

    fn export(&self) -> Result<LayerWeights> {
        let (qkv, o) = self.attn.projections();
        Ok(LayerWeights {
            attn_norm: self.attn_norm.host_weight()?,
            qkv: qkv.host_weight()?,
            o: o.host_weight()?,
            ffn_norm: self.ffn_norm.host_weight()?,
            gate_up: self.ffn.gate_up.host_weight()?,
            down: self.ffn.down.host_weight()?,
        })
    }

    fn quantize_int8(&mut self) -> Result<()> {
        self.attn.quantize_int8()?;
        self.ffn.quantize_int8()
    }

    fn forward(&self, x: &Tensor, rope: &Rope, source: &KvSource) -> Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let x = (x + self.attn.forward(&h, rope, source)?)?;
        let h = self.ffn_norm.forward(&x)?;
        Ok((&x + self.ffn.forward(&h)?)?)
    }
}

/// The blocks, the final norm and the RoPE tables.
pub struct Transformer {
    sizes: Sizes,
    blocks: Vec<Block>,
    norm: RmsNorm,
    rope: Rope,
    device: Device,
}

impl Transformer {
    /// Loads `{prefix}layers.{i}.*` and `{prefix}norm.weight` (prefix `""` for the main LM,
    /// e.g. `"depth."` for the depth transformer).
    pub fn load(
        ckpt: &mut Checkpoint,
        prefix: &str,
        sizes: Sizes,
        device: &Device,
    ) -> Result<Self> {
        let blocks = (0..sizes.n_layers)
            .map(|i| Block::load(ckpt, &format!("{prefix}layers.{i}"), &sizes))
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: RmsNorm::load(ckpt, &format!("{prefix}norm.weight"), &sizes)?,
            rope: Rope::new(&sizes, device)?,
            blocks,
            sizes,
            device: device.clone(),
        })
    }

    /// Store every block's projections as int8 ([`crate::linear::Linear::quantize_int8`]).
    pub fn quantize_int8(&mut self) -> Result<()> {
        self.blocks.iter_mut().try_for_each(Block::quantize_int8)
    }

    /// Every block's weights and the final norm as flat f32 buffers (the kernels' layout).
    pub(crate) fn export(&self) -> Result<(Vec<LayerWeights>, Vec<f32>)> {
        let layers = self
            .blocks
            .iter()
            .map(Block::export)
            .collect::<Result<_>>()?;
        Ok((layers, self.norm.host_weight()?))
    }

    pub fn sizes(&self) -> &Sizes {
        &self.sizes
    }

    /// An empty KV cache for `batch_size` sequence slots.
    pub fn new_cache(&self, batch_size: usize) -> Result<KvCache> {
        KvCache::new(&self.sizes, batch_size, &self.device)
    }

    /// Input embeddings `[A, S, d]` → final hidden states `[A, S, d]` (normed). Row `a`
    /// continues cache slot `rows[a]`; those slots grow by S. Fails with an input error naming
    /// `max_context` when the steps do not fit.
    pub fn forward(&self, x: &Tensor, cache: &mut KvCache, rows: &[usize]) -> Result<Tensor> {
        let s = x.dim(1)?;
        cache.check_room(rows, s)?;
        let mut x = x.clone();
        for (layer, block) in self.blocks.iter().enumerate() {
            let source = KvSource::Cache { cache, layer, rows };
            x = block.forward(&x, &self.rope, &source)?;
        }
        cache.advance(rows, s);
        self.norm.forward(&x)
    }

    /// A whole sequence `[B, S, d]` at positions `0..S` without a cache, causal or
    /// bidirectional → normed hidden states `[B, S, d]`.
    pub fn forward_full(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let mut x = x.clone();
        let source = KvSource::Full { causal };
        for block in &self.blocks {
            x = block.forward(&x, &self.rope, &source)?;
        }
        self.norm.forward(&x)
    }
}
