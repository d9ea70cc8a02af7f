//! Causal convolutions with carried state, so that chunked calls equal one whole call.

use candle_core::Tensor;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::state::{zeros_like_context, Cursor};

/// Conv1d padded on the left by `(k-1)*d + 1 - s` samples, taken from the previous chunk.
pub(crate) struct CausalConv1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    dilation: usize,
    context: usize,
}

pub(crate) struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
}

impl CausalConv1d {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, spec: ConvSpec) -> Result<Self> {
        let weight = ckpt.take(
            &format!("{prefix}.weight"),
            &[spec.cout, spec.cin, spec.kernel],
        )?;
        let bias = ckpt.take(&format!("{prefix}.bias"), &[spec.cout])?;
        Self::new(weight, &bias, spec.stride, spec.dilation, prefix)
    }

    /// From a weight `[Cout, Cin, k]` and a bias `[Cout]` already taken from a checkpoint.
    pub fn new(
        weight: Tensor,
        bias: &Tensor,
        stride: usize,
        dilation: usize,
        name: &str,
    ) -> Result<Self> {
        let (cout, _, kernel) = weight.dims3()?;
        let span = (kernel - 1) * dilation + 1;
        if span < stride {
            return Err(Error::config(format!(
                "{name}: kernel span {span} is shorter than stride {stride}"
            )));
        }
        Ok(Self {
            weight,
            bias: bias.reshape((1, cout, 1))?,
            stride,
            dilation,
            context: span - stride,
        })
    }

    /// `x`: `[B, Cin, T]` with T a multiple of the stride → `[B, Cout, T / stride]`.
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let slot = cursor.next_slot();
        let input = if self.context > 0 {
            let previous = match slot.take() {
                Some(prev) => prev,
                None => zeros_like_context(x, self.context)?,
            };
            let joined = Tensor::cat(&[&previous, x], 2)?;
            let len = joined.dim(2)?;
            *slot = Some(
                joined
                    .narrow(2, len - self.context, self.context)?
                    .contiguous()?,
            );
            joined
        } else {
            x.clone()
        };
        let y = input.conv1d(&self.weight, 0, self.stride, self.dilation, 1)?;
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// ConvTranspose1d whose last `k - s` outputs are an overlap tail completed by the next chunk.
///
/// Computed as one matmul (every input frame times the whole kernel) followed by an overlap-add,
/// rather than candle's `conv_transpose1d`, which mixes batch items in candle 0.11.1 on CPU.
pub(crate) struct CausalConvTranspose1d {
    /// `[cout * m * stride, cin]`: the kernel zero-padded to `m * stride` taps, transposed.
    columns: Tensor,
    bias: Tensor,
    cout: usize,
    stride: usize,
    /// Kernel length in strides, rounded up.
    spans: usize,
    tail: usize,
}

impl CausalConvTranspose1d {
    pub fn load(ckpt: &mut Checkpoint, prefix: &str, spec: ConvSpec) -> Result<Self> {
        let weight = ckpt.take(
            &format!("{prefix}.weight"),
            &[spec.cin, spec.cout, spec.kernel],
        )?;
        let bias = ckpt
            .take(&format!("{prefix}.bias"), &[spec.cout])?
            .reshape((1, spec.cout, 1))?;
        if spec.kernel < spec.stride {
            return Err(Error::config(format!(
                "{prefix}: transposed-conv kernel {} is shorter than stride {}",
                spec.kernel, spec.stride
            )));
        }
        Self::new(&weight, bias, spec.stride)
    }

    /// From a torch-layout weight `[Cin, Cout, k]` (k ≥ stride) and a bias `[1, Cout, 1]`.
    pub fn new(weight: &Tensor, bias: Tensor, stride: usize) -> Result<Self> {
        let (cin, cout, kernel) = weight.dims3()?;
        let spans = kernel.div_ceil(stride);
        let padded = weight.pad_with_zeros(2, 0, spans * stride - kernel)?;
        let columns = padded
            .reshape((cin, cout * spans * stride))?
            .t()?
            .contiguous()?;
        Ok(Self {
            columns,
            bias,
            cout,
            stride,
            spans,
            tail: kernel - stride,
        })
    }

    /// Full transposed-conv output without bias: `[B, Cout, (n + spans - 1) * stride]`.
    fn overlap_add(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, n) = x.dims3()?;
        let s = self.stride;
        let cols = self
            .columns
            .broadcast_matmul(x)?
            .reshape((b, self.cout, self.spans, s, n))?;
        let mut sum: Option<Tensor> = None;
        for p in 0..self.spans {
            let block = cols
                .narrow(2, p, 1)?
                .squeeze(2)?
                .transpose(2, 3)?
                .reshape((b, self.cout, n * s))?
                .pad_with_zeros(2, p * s, (self.spans - 1 - p) * s)?;
            sum = Some(match sum {
                Some(acc) => (acc + block)?,
                None => block,
            });
        }
        sum.ok_or_else(|| Error::internal("transposed conv with an empty kernel"))
    }

    /// `x`: `[B, Cin, n]` → `[B, Cout, n * stride]`.
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let slot = cursor.next_slot();
        let mut y = self.overlap_add(x)?;
        let emitted = x.dim(2)? * self.stride;
        if self.tail > 0 {
            if let Some(previous) = slot.take() {
                let len = y.dim(2)?;
                let head = (y.narrow(2, 0, self.tail)? + previous)?;
                y = Tensor::cat(&[&head, &y.narrow(2, self.tail, len - self.tail)?], 2)?;
            }
            *slot = Some(y.narrow(2, emitted, self.tail)?.contiguous()?);
        }
        Ok(y.narrow(2, 0, emitted)?.broadcast_add(&self.bias)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::state::StreamState;

    /// Direct definition: `y[b, o, t*s + j] += x[b, i, t] * w[i, o, j]`.
    fn naive(x: &[f32], w: &[f32], dims: (usize, usize, usize, usize, usize, usize)) -> Vec<f32> {
        let (b, cin, cout, k, s, n) = dims;
        let len = (n - 1) * s + k;
        let mut y = vec![0f32; b * cout * len];
        for bi in 0..b {
            for i in 0..cin {
                for o in 0..cout {
                    for t in 0..n {
                        for j in 0..k {
                            y[(bi * cout + o) * len + t * s + j] +=
                                x[(bi * cin + i) * n + t] * w[(i * cout + o) * k + j];
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn transposed_conv_matches_definition_per_batch_item() {
        let dev = Device::Cpu;
        for &(b, cin, cout, k, s, n) in
            &[(2, 3, 2, 4, 2, 3), (3, 2, 3, 5, 2, 4), (2, 4, 1, 3, 3, 2)]
        {
            let x: Vec<f32> = (0..b * cin * n).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..cin * cout * k)
                .map(|i| (i as f32 * 0.11).cos())
                .collect();
            let weight = Tensor::from_slice(&w, (cin, cout, k), &dev).unwrap();
            let bias = Tensor::zeros((1, cout, 1), candle_core::DType::F32, &dev).unwrap();
            let conv = CausalConvTranspose1d::new(&weight, bias, s).unwrap();
            let xt = Tensor::from_slice(&x, (b, cin, n), &dev).unwrap();
            let mut state = StreamState::new(b);
            let y = conv.forward(&xt, &mut state.cursor()).unwrap();
            let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            let reference = naive(&x, &w, (b, cin, cout, k, s, n));
            let full = (n - 1) * s + k;
            for bi in 0..b {
                for o in 0..cout {
                    for t in 0..n * s {
                        let got = y[(bi * cout + o) * n * s + t];
                        let want = reference[(bi * cout + o) * full + t];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "b={bi} o={o} t={t}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
