//! HF's `EncodecLSTM`: a stacked `torch.nn.LSTM` (hidden = input = C) over the time axis with a
//! skip, `y = lstm(x) + x`. Gates follow torch (`i, f, g, o` rows of `weight_ih`/`weight_hh`):
//! `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)`. The input projections of a whole chunk are
//! one matmul; the recurrence runs step by step. Streaming carries every layer's `(h, c)`.

use candle_core::Tensor;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;

use crate::state::Cursor;

struct Layer {
    /// `[C, 4C]`: `weight_ih` transposed.
    w_ih: Tensor,
    /// `[C, 4C]`: `weight_hh` transposed.
    w_hh: Tensor,
    /// `[1, 1, 4C]`: `bias_ih + bias_hh`.
    bias: Tensor,
}

pub(crate) struct Lstm {
    layers: Vec<Layer>,
    dim: usize,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Lstm {
    /// `{prefix}.lstm.{weight_ih,weight_hh,bias_ih,bias_hh}_l{k}` for `k < layers`.
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, dim: usize, layers: usize) -> Result<Self> {
        let layers = (0..layers)
            .map(|k| {
                let name = |what: &str| format!("{prefix}.lstm.{what}_l{k}");
                let w_ih = ckpt.take(&name("weight_ih"), &[4 * dim, dim])?;
                let w_hh = ckpt.take(&name("weight_hh"), &[4 * dim, dim])?;
                let b_ih = ckpt.take(&name("bias_ih"), &[4 * dim])?;
                let b_hh = ckpt.take(&name("bias_hh"), &[4 * dim])?;
                Ok(Layer {
                    w_ih: w_ih.t()?.contiguous()?,
                    w_hh: w_hh.t()?.contiguous()?,
                    bias: (b_ih + b_hh)?.reshape((1, 1, 4 * dim))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers, dim })
    }

    /// `x`: `[B, C, T]` → `[B, C, T]`. State slot: `[B, 2·layers, C]` holding each layer's `h`
    /// then `c` (zeros at the start of a stream, and after `StreamState::reset_item`).
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let n = self.layers.len();
        let slot = cursor.next_slot();
        let mut state: Vec<f32> = match slot.take() {
            Some(s) => s.flatten_all()?.to_vec1()?,
            None => vec![0f32; b * 2 * n * c],
        };
        let skip = x.transpose(1, 2)?.contiguous()?; // [B, T, C]
        let mut seq = skip.clone();
        for (k, layer) in self.layers.iter().enumerate() {
            let pre: Vec<f32> = seq
                .broadcast_matmul(&layer.w_ih)?
                .broadcast_add(&layer.bias)?
                .flatten_all()?
                .to_vec1()?;
            // Gather this layer's (h, c) per batch item.
            let mut h = vec![0f32; b * c];
            let mut cell = vec![0f32; b * c];
            for bi in 0..b {
                let base = (bi * 2 * n + 2 * k) * c;
                h[bi * c..(bi + 1) * c].copy_from_slice(&state[base..base + c]);
                cell[bi * c..(bi + 1) * c].copy_from_slice(&state[base + c..base + 2 * c]);
            }
            let mut out = vec![0f32; b * t * c];
            for step in 0..t {
                let hh: Vec<f32> = Tensor::from_slice(&h, (b, c), x.device())?
                    .matmul(&layer.w_hh)?
                    .flatten_all()?
                    .to_vec1()?;
                for bi in 0..b {
                    let p = &pre[(bi * t + step) * 4 * c..(bi * t + step + 1) * 4 * c];
                    let g = &hh[bi * 4 * c..(bi + 1) * 4 * c];
                    for j in 0..c {
                        let i_gate = sigmoid(p[j] + g[j]);
                        let f_gate = sigmoid(p[c + j] + g[c + j]);
                        let g_gate = (p[2 * c + j] + g[2 * c + j]).tanh();
                        let o_gate = sigmoid(p[3 * c + j] + g[3 * c + j]);
                        let cj = f_gate * cell[bi * c + j] + i_gate * g_gate;
                        cell[bi * c + j] = cj;
                        let hj = o_gate * cj.tanh();
                        h[bi * c + j] = hj;
                        out[(bi * t + step) * c + j] = hj;
                    }
                }
            }
            for bi in 0..b {
                let base = (bi * 2 * n + 2 * k) * c;
                state[base..base + c].copy_from_slice(&h[bi * c..(bi + 1) * c]);
                state[base + c..base + 2 * c].copy_from_slice(&cell[bi * c..(bi + 1) * c]);
            }
            seq = Tensor::from_vec(out, (b, t, c), x.device())?;
        }
        *slot = Some(Tensor::from_vec(state, (b, 2 * n, self.dim), x.device())?);
        Ok((seq + skip)?.transpose(1, 2)?.contiguous()?)
    }
}
