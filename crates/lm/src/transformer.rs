//! The Llama-shaped decoder stack: pre-norm blocks of attention and a SwiGLU feed-forward.

use candle_core::{Device, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;

use crate::attention::{linear, Attention, KvCache, Rope};
use crate::config::LmConfig;

/// RMSNorm with a learned scale.
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(ckpt: &mut Checkpoint, name: &str, config: &LmConfig) -> Result<Self> {
        Ok(Self {
            weight: ckpt.take(name, &[config.d_model])?,
            eps: config.norm_eps as f32,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
    }
}

/// `down(silu(gate(x)) * up(x))`.
pub struct SwiGlu {
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

impl SwiGlu {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, config: &LmConfig) -> Result<Self> {
        let (d, f) = (config.d_model, config.ffn_dim);
        Ok(Self {
            gate: ckpt.take(&format!("{prefix}.gate_proj.weight"), &[f, d])?,
            up: ckpt.take(&format!("{prefix}.up_proj.weight"), &[f, d])?,
            down: ckpt.take(&format!("{prefix}.down_proj.weight"), &[d, f])?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&linear(x, &self.gate)?)?;
        let hidden = (gate * linear(x, &self.up)?)?;
        linear(&hidden, &self.down)
    }
}

pub struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    ffn: SwiGlu,
}

impl Block {
    pub fn load(ckpt: &mut Checkpoint, i: usize, config: &LmConfig) -> Result<Self> {
        let p = format!("layers.{i}");
        Ok(Self {
            attn_norm: RmsNorm::load(ckpt, &format!("{p}.attn_norm.weight"), config)?,
            attn: Attention::load(ckpt, &format!("{p}.attn"), config)?,
            ffn_norm: RmsNorm::load(ckpt, &format!("{p}.ffn_norm.weight"), config)?,
            ffn: SwiGlu::load(ckpt, &format!("{p}.ffn"), config)?,
        })
    }
}

/// The blocks, the final norm and the RoPE tables.
pub struct Transformer {
    blocks: Vec<Block>,
    norm: RmsNorm,
    rope: Rope,
}

impl Transformer {
    pub fn load(ckpt: &mut Checkpoint, config: &LmConfig, device: &Device) -> Result<Self> {
        let blocks = (0..config.n_layers)
            .map(|i| Block::load(ckpt, i, config))
            .collect::<Result<_>>()?;
        Ok(Self {
            blocks,
            norm: RmsNorm::load(ckpt, "norm.weight", config)?,
            rope: Rope::new(config, device)?,
        })
    }

    /// Input embeddings `[B, S, d]` of the steps following `cache.len()` → final hidden states
    /// `[B, S, d]` (normed); the cache grows by S. Fails with an input error naming
    /// `max_context` when the steps do not fit.
    pub fn forward(&self, x: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let s = x.dim(1)?;
        cache.check_room(s)?;
        let offset = cache.len();
        let mut x = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.attn_norm.forward(&x)?;
            let attn = block.attn.forward(&h, &self.rope, cache.layer(i), offset)?;
            x = (x + attn)?;
            let h = block.ffn_norm.forward(&x)?;
            x = (&x + block.ffn.forward(&h)?)?;
        }
        cache.advance(s);
        self.norm.forward(&x)
    }
}
