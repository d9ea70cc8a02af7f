//! The codec decode in plain Rust: one function per CUDA kernel (`cuda/codec_kernels.cu`), same
//! layouts and summation order. Slow on purpose; the codec crate tests it against its own
//! decode, so the decomposition the GPU runs is checked on every machine.

use super::{CodecDecoderWeights, ConvKind, ConvLayer, Skip};
use crate::KernelError;

/// `latent[b, d, f] = Σ_{i < q} codebooks[i, codes[b, i, f], d]`, in codebook order (`rvq_sum`).
pub fn rvq_sum(
    w: &CodecDecoderWeights,
    codes: &[i64],
    batch: usize,
    q: usize,
    frames: usize,
) -> Vec<f32> {
    let dim = w.dimension;
    let mut latent = vec![0f32; batch * dim * frames];
    for b in 0..batch {
        for d in 0..dim {
            for f in 0..frames {
                let mut acc = 0f32;
                for i in 0..q {
                    let code = codes[(b * q + i) * frames + f] as usize;
                    acc += w.codebooks[(i * w.codebook_size + code) * dim + d];
                }
                latent[(b * dim + d) * frames + f] = acc;
            }
        }
    }
    latent
}

/// ELU with α = 1 (`elu_copy`).
pub fn elu(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| if v > 0.0 { v } else { v.exp_m1() })
        .collect()
}

/// Causal conv of `x [B, cin, t]` → `[B, cout, t / stride]`, `residual` (same shape as the
/// output) added last (`conv1d_causal`).
pub fn conv1d(
    l: &ConvLayer,
    x: &[f32],
    batch: usize,
    t: usize,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (cin, cout, k) = (l.cin, l.cout, l.kernel);
    let t_out = l.output_len(t);
    let ctx = l.context() as isize;
    let mut out = vec![0f32; batch * cout * t_out];
    for b in 0..batch {
        for co in 0..cout {
            for o in 0..t_out {
                let mut acc = 0f32;
                for ci in 0..cin {
                    let xs = &x[(b * cin + ci) * t..][..t];
                    let ws = &l.weight[(co * cin + ci) * k..][..k];
                    for (j, &wv) in ws.iter().enumerate() {
                        let i = (o * l.stride + j * l.dilation) as isize - ctx;
                        if i >= 0 {
                            acc += xs[i as usize] * wv;
                        }
                    }
                }
                let at = (b * cout + co) * t_out + o;
                let y = acc + l.bias[co];
                out[at] = residual.map_or(y, |r| r[at] + y);
            }
        }
    }
    out
}

/// Causal transposed conv of `x [B, cin, t]` → the first `t · stride` outputs
/// (`conv_transpose1d_causal`).
pub fn conv_transpose1d(l: &ConvLayer, x: &[f32], batch: usize, t: usize) -> Vec<f32> {
    let (cin, cout, k, s) = (l.cin, l.cout, l.kernel, l.stride);
    let t_out = t * s;
    let mut out = vec![0f32; batch * cout * t_out];
    for b in 0..batch {
        for co in 0..cout {
            for o in 0..t_out {
                let mut acc = 0f32;
                for ci in 0..cin {
                    let ws = &l.weight[(ci * cout + co) * k..][..k];
                    // Taps j ≡ o (mod s) with j ≤ o: input frame (o - j) / s.
                    for j in (o % s..k.min(o + 1)).step_by(s) {
                        acc += x[(b * cin + ci) * t + (o - j) / s] * ws[j];
                    }
                }
                out[(b * cout + co) * t_out + o] = acc + l.bias[co];
            }
        }
    }
    out
}

/// Codes `[batch, q, frames]` → audio `[batch, channels, frames · hop]`.
pub fn decode(
    w: &CodecDecoderWeights,
    codes: &[i64],
    batch: usize,
    q: usize,
    frames: usize,
) -> Result<Vec<f32>, KernelError> {
    w.validate()?;
    w.check_codes(codes, batch, q, frames)?;
    let mut x = rvq_sum(w, codes, batch, q, frames);
    let mut t = frames;
    let mut saved: Option<Vec<f32>> = None;
    for l in &w.layers {
        if l.skip == Skip::Save {
            saved = Some(x.clone());
        }
        let input = if l.elu_input { elu(&x) } else { x };
        let residual = match l.skip {
            Skip::Add => saved.take(),
            _ => None,
        };
        x = match l.kind {
            ConvKind::Conv => conv1d(l, &input, batch, t, residual.as_deref()),
            ConvKind::Transposed => conv_transpose1d(l, &input, batch, t),
        };
        t = l.output_len(t);
    }
    Ok(x)
}
