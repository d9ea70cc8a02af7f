//! The decoder's sizes and weights as flat row-major `f32` buffers.

use crate::KernelError;

/// The sizes of a Llama-shaped decoder and its token streams.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderSizes {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub norm_eps: f32,
    pub rope_theta: f64,
    /// KV-cache capacity per sequence.
    pub max_positions: usize,
    /// One vocabulary per stream: the input embedding tables and the heads, in stream order.
    pub vocab_sizes: Vec<usize>,
}

impl DecoderSizes {
    pub fn num_streams(&self) -> usize {
        self.vocab_sizes.len()
    }

    /// Rows of the stacked q/k/v projection.
    pub fn qkv_dim(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }

    pub fn total_vocab(&self) -> usize {
        self.vocab_sizes.iter().sum()
    }

    /// First row of each stream's table in the stacked embeddings / heads.
    pub fn vocab_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(self.vocab_sizes.len());
        let mut next = 0;
        for v in &self.vocab_sizes {
            offsets.push(next);
            next += v;
        }
        offsets
    }

    fn validate(&self) -> Result<(), KernelError> {
        let bad = |what: String| Err(KernelError::Shape(what));
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} heads cannot share {} kv heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(format!("head_dim {} must be even", self.head_dim));
        }
        if self.vocab_sizes.is_empty() || self.vocab_sizes.contains(&0) {
            return bad(format!("vocabularies {:?}", self.vocab_sizes));
        }
        Ok(())
    }
}

/// One block: `[rows, cols]` row-major projections, checkpoint layout `[out, in]`.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// q, k, v stacked: `[(h + 2·hkv)·hd, d]`.
    pub qkv: Vec<f32>,
    /// `[d, h·hd]`.
    pub o: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// gate and up stacked: `[2f, d]`.
    pub gate_up: Vec<f32>,
    /// `[d, f]`.
    pub down: Vec<f32>,
}

/// Everything one decoding step reads.
#[derive(Debug, Clone)]
pub struct DecoderWeights {
    pub sizes: DecoderSizes,
    /// Every stream's input table stacked: `[ΣV, d]`.
    pub embeddings: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// Every stream's head stacked: `[ΣV, d]` (logits of stream k are rows `offset_k..+V_k`).
    pub heads: Vec<f32>,
}

impl DecoderWeights {
    /// Fails naming the first buffer whose length does not match the sizes.
    pub fn validate(&self) -> Result<(), KernelError> {
        let s = &self.sizes;
        s.validate()?;
        let (d, f, hd) = (s.d_model, s.ffn_dim, s.head_dim);
        let check = |name: &str, got: usize, want: usize| match got == want {
            true => Ok(()),
            false => Err(KernelError::Shape(format!(
                "{name} holds {got} values, expected {want}"
            ))),
        };
        check("embeddings", self.embeddings.len(), s.total_vocab() * d)?;
        check("heads", self.heads.len(), s.total_vocab() * d)?;
        check("norm", self.norm.len(), d)?;
        check("layers", self.layers.len(), s.n_layers)?;
        for (i, l) in self.layers.iter().enumerate() {
            let name = |w: &str| format!("layer {i} {w}");
            check(&name("attn_norm"), l.attn_norm.len(), d)?;
            check(&name("qkv"), l.qkv.len(), s.qkv_dim() * d)?;
            check(&name("o"), l.o.len(), d * s.n_heads * hd)?;
            check(&name("ffn_norm"), l.ffn_norm.len(), d)?;
            check(&name("gate_up"), l.gate_up.len(), 2 * f * d)?;
            check(&name("down"), l.down.len(), d * f)?;
        }
        Ok(())
    }
}

/// The rotate-half RoPE tables `cos`, `sin`, each `[positions, head_dim / 2]`: angles in f64,
/// rounded once to f32 (as the PyTorch twin does).
pub fn rope_tables(theta: f64, head_dim: usize, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for j in 0..half {
            let inv_freq = theta.powf(-(2.0 * j as f64) / head_dim as f64);
            let angle = p as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}
