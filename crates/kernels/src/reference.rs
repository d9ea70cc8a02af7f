//! The decoding step in plain Rust: one function per CUDA kernel (`cuda/kernels.cu`), same
//! buffer layouts, same index arithmetic. Slow on purpose (no SIMD, no threads): it exists to
//! pin down what the GPU computes, and is tested against the engine's own forward.

use std::sync::Arc;

use crate::layout::{rope_tables, DecoderSizes, DecoderWeights};
use crate::KernelError;

/// `out[d] = Σ_k table[offset_k + ids[k]]`, id `-1` contributing nothing (`embed_sum`).
pub fn embed_sum(weights: &DecoderWeights, ids: &[i64], out: &mut [f32]) {
    let d = weights.sizes.d_model;
    out.fill(0.0);
    for (&id, offset) in ids.iter().zip(weights.sizes.vocab_offsets()) {
        if id < 0 {
            continue;
        }
        let row = &weights.embeddings[(offset + id as usize) * d..][..d];
        out.iter_mut().zip(row).for_each(|(o, &e)| *o += e);
    }
}

/// `out = x / sqrt(mean(x²) + eps) · w` over one row (`rms_norm`).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2: f32 = x.iter().map(|v| v * v).sum();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v / m * g;
    }
}

/// `out[r, j] = (residual[r, j] +) Σ_i x[r, i] · w[j, i]` with `w [n, k]` (`matmul_xwt`).
pub fn matmul_xwt(x: &[f32], w: &[f32], k: usize, residual: Option<&[f32]>, out: &mut [f32]) {
    let n = w.len() / k;
    for (r, row) in x.chunks_exact(k).enumerate() {
        for j in 0..n {
            let acc: f32 = row.iter().zip(&w[j * k..][..k]).map(|(a, b)| a * b).sum();
            out[r * n + j] = residual.map_or(acc, |res| res[r * n + j] + acc);
        }
    }
}

/// Rotate-half RoPE of `heads` consecutive head vectors at one position (`rope_kv_write`).
pub fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for j in 0..half {
            let (a, b) = (head[j], head[j + half]);
            head[j] = a * cos[j] - b * sin[j];
            head[j + half] = b * cos[j] + a * sin[j];
        }
    }
}

/// One query row `q [h, hd]` over the first `len` positions of one slot's cache
/// `[hkv, capacity, hd]`; query head `i` reads kv head `i / (h / hkv)` (`attend_one`).
pub fn attend_one(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    len: usize,
    sizes: &DecoderSizes,
    out: &mut [f32],
) {
    let hd = sizes.head_dim;
    let rep = sizes.n_heads / sizes.n_kv_heads;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let mut scores = vec![0f32; len];
    for (head, (qh, oh)) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)).enumerate() {
        let base = (head / rep) * sizes.max_positions * hd;
        for (j, s) in scores.iter_mut().enumerate() {
            let kj = &k_cache[base + j * hd..][..hd];
            *s = qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
        let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        scores.iter_mut().for_each(|s| *s = (*s - m).exp());
        let sum: f32 = scores.iter().sum();
        oh.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let vj = &v_cache[base + j * hd..][..hd];
            oh.iter_mut().zip(vj).for_each(|(o, &v)| *o += p / sum * v);
        }
    }
}

/// `out[j] = silu(gate_up[j]) · gate_up[f + j]` for one row (`silu_mul`).
pub fn silu_mul(gate_up: &[f32], out: &mut [f32]) {
    let f = out.len();
    for (j, o) in out.iter_mut().enumerate() {
        let g = gate_up[j];
        *o = g / (1.0 + (-g).exp()) * gate_up[f + j];
    }
}

/// Checks `ids [B, K]` against the vocabularies (`-1` = no input).
pub fn check_ids(sizes: &DecoderSizes, ids: &[i64], batch: usize) -> Result<(), KernelError> {
    let k_n = sizes.num_streams();
    if ids.len() != batch * k_n {
        return Err(KernelError::Input(format!(
            "a step takes {batch}×{k_n} token ids, got {}",
            ids.len()
        )));
    }
    for (i, &id) in ids.iter().enumerate() {
        let vocab = sizes.vocab_sizes[i % k_n];
        if id < -1 || id >= vocab as i64 {
            return Err(KernelError::Input(format!(
                "token id {id} of stream {} is outside its vocabulary of {vocab} (or -1)",
                i % k_n
            )));
        }
    }
    Ok(())
}

/// A batch of sequences decoded one step at a time with the reference kernels.
pub struct ReferenceDecoder {
    weights: Arc<DecoderWeights>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Per layer `[B, hkv, capacity, hd]`.
    k_cache: Vec<Vec<f32>>,
    v_cache: Vec<Vec<f32>>,
    positions: Vec<usize>,
}

impl ReferenceDecoder {
    pub fn new(weights: Arc<DecoderWeights>, batch: usize) -> Result<Self, KernelError> {
        weights.validate()?;
        let s = &weights.sizes;
        let (cos, sin) = rope_tables(s.rope_theta, s.head_dim, s.max_positions);
        let cache = vec![0f32; batch * s.n_kv_heads * s.max_positions * s.head_dim];
        Ok(Self {
            cos,
            sin,
            k_cache: vec![cache.clone(); s.n_layers],
            v_cache: vec![cache; s.n_layers],
            positions: vec![0; batch],
            weights,
        })
    }

    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Feeds `ids [B, K]` (one step of every sequence) and returns the logits `[B, ΣV]`.
    pub fn step(&mut self, ids: &[i64]) -> Result<Vec<f32>, KernelError> {
        let w = Arc::clone(&self.weights);
        let s = &w.sizes;
        let batch = self.positions.len();
        check_ids(s, ids, batch)?;
        if let Some(&full) = self.positions.iter().find(|&&p| p >= s.max_positions) {
            return Err(KernelError::Input(format!(
                "the sequence needs {} positions but the cache holds {}",
                full + 1,
                s.max_positions
            )));
        }
        let (d, hd, f) = (s.d_model, s.head_dim, s.ffn_dim);
        let (h, hkv) = (s.n_heads, s.n_kv_heads);
        let mut x = vec![0f32; batch * d];
        for (row, out) in ids.chunks_exact(s.num_streams()).zip(x.chunks_exact_mut(d)) {
            embed_sum(&w, row, out);
        }
        let mut normed = vec![0f32; batch * d];
        let mut qkv = vec![0f32; batch * s.qkv_dim()];
        let mut attn = vec![0f32; batch * h * hd];
        let mut gate_up = vec![0f32; batch * 2 * f];
        let mut act = vec![0f32; batch * f];
        let slot = hkv * s.max_positions * hd;
        for (layer, lw) in w.layers.iter().enumerate() {
            norm_rows(&x, &lw.attn_norm, s.norm_eps, &mut normed);
            matmul_xwt(&normed, &lw.qkv, d, None, &mut qkv);
            for b in 0..batch {
                let pos = self.positions[b];
                let row = &mut qkv[b * s.qkv_dim()..][..s.qkv_dim()];
                let (cos, sin) = (&self.cos[pos * hd / 2..], &self.sin[pos * hd / 2..]);
                rope(&mut row[..(h + hkv) * hd], hd, cos, sin);
                let (k, v) = row[h * hd..].split_at(hkv * hd);
                for kv_head in 0..hkv {
                    let at = b * slot + (kv_head * s.max_positions + pos) * hd;
                    self.k_cache[layer][at..at + hd].copy_from_slice(&k[kv_head * hd..][..hd]);
                    self.v_cache[layer][at..at + hd].copy_from_slice(&v[kv_head * hd..][..hd]);
                }
                attend_one(
                    &row[..h * hd],
                    &self.k_cache[layer][b * slot..][..slot],
                    &self.v_cache[layer][b * slot..][..slot],
                    pos + 1,
                    s,
                    &mut attn[b * h * hd..][..h * hd],
                );
            }
            let residual = x.clone();
            matmul_xwt(&attn, &lw.o, h * hd, Some(&residual), &mut x);
            norm_rows(&x, &lw.ffn_norm, s.norm_eps, &mut normed);
            matmul_xwt(&normed, &lw.gate_up, d, None, &mut gate_up);
            for (gu, a) in gate_up.chunks_exact(2 * f).zip(act.chunks_exact_mut(f)) {
                silu_mul(gu, a);
            }
            let residual = x.clone();
            matmul_xwt(&act, &lw.down, f, Some(&residual), &mut x);
        }
        norm_rows(&x, &w.norm, s.norm_eps, &mut normed);
        let mut logits = vec![0f32; batch * s.total_vocab()];
        matmul_xwt(&normed, &w.heads, d, None, &mut logits);
        self.positions.iter_mut().for_each(|p| *p += 1);
        Ok(logits)
    }
}

fn norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rms_norm(row, w, eps, o);
    }
}
