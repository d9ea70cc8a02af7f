//! Causal convolutions with carried state, so that chunked calls equal one whole call.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use speechinfer_core::activation::elu_into;
use speechinfer_core::conv::{PackedConv1d, PackedConvTranspose1d};
use speechinfer_core::tensor_ops::{is_cpu_f32, round_to_bf16, with_cpu_f32};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};
use speechinfer_kernels::codec::{ConvKind, ConvLayer, Skip};

use crate::state::{zeros_like_context, Cursor};

fn cpu_f32_values(t: &Tensor) -> Result<Option<Vec<f32>>> {
    with_cpu_f32(t, <[f32]>::to_vec)
}

/// A conv1d over an input already padded by the caller, with bias: the direct kernel of
/// `speechinfer_core::conv` for CPU f32, candle's conv1d otherwise.
pub(crate) struct Conv1dCore {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    dilation: usize,
    packed: Option<PackedConv1d>,
}

impl Conv1dCore {
    /// `weight`: `[Cout, Cin, k]`; `bias`: `[Cout]`.
    pub fn new(weight: Tensor, bias: &Tensor, stride: usize, dilation: usize) -> Result<Self> {
        let (cout, cin, kernel) = weight.dims3()?;
        let packed = match (cpu_f32_values(&weight)?, cpu_f32_values(bias)?) {
            (Some(w), Some(b)) => Some(PackedConv1d::new(
                &w,
                &b,
                (cout, cin, kernel),
                stride,
                dilation,
            )),
            _ => None,
        };
        Ok(Self {
            weight,
            bias: bias.reshape((1, cout, 1))?,
            stride,
            dilation,
            packed,
        })
    }

    /// `input`: `[B, Cin, T]` → `[B, Cout, (T - span) / stride + 1]`.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        if let Some(packed) = &self.packed {
            let (b, _, t) = input.dims3()?;
            let run = with_cpu_f32(input, |x| packed.forward(x, b, t))?;
            if let Some(y) = run {
                let t_out = packed.output_len(t);
                return Ok(Tensor::from_vec(
                    y,
                    (b, packed.cout(), t_out),
                    &Device::Cpu,
                )?);
            }
        }
        let y = input.conv1d(&self.weight, 0, self.stride, self.dilation, 1)?;
        Ok(y.broadcast_add(&self.bias)?)
    }
}

/// Conv1d padded on the left by `(k-1)*d + 1 - s` samples, taken from the previous chunk.
pub(crate) struct CausalConv1d {
    core: Conv1dCore,
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
        let (_, _, kernel) = weight.dims3()?;
        let span = (kernel - 1) * dilation + 1;
        if span < stride {
            return Err(Error::config(format!(
                "{name}: kernel span {span} is shorter than stride {stride}"
            )));
        }
        Ok(Self {
            core: Conv1dCore::new(weight, bias, stride, dilation)?,
            context: span - stride,
        })
    }

    /// `x`: `[B, Cin, T]` with T a multiple of the stride → `[B, Cout, T / stride]`.
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        self.forward_with(x, cursor, Pre::Identity, None)
    }

    /// Rounds the weight (not the bias) to bfloat16; streaming steps read it as such.
    pub fn round_to_bf16(&mut self) -> Result<()> {
        self.core.weight = round_to_bf16(&self.core.weight)?;
        if let Some(packed) = &mut self.core.packed {
            packed.round_to_bf16();
        }
        Ok(())
    }

    /// `forward(pre(x)) + residual`, fused into one pass over the input and the output on CPU.
    pub fn forward_with(
        &self,
        x: &Tensor,
        cursor: &mut Cursor,
        pre: Pre,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let slot = cursor.next_slot();
        if let Some(packed) = &self.core.packed {
            if is_cpu_f32(x) && residual.is_none_or(is_cpu_f32) {
                return self.forward_direct(packed, x, slot, pre, residual);
            }
        }
        let x = pre.apply(x)?;
        let input = if self.context > 0 {
            let previous = match slot.take() {
                Some(prev) => prev,
                None => zeros_like_context(&x, self.context)?,
            };
            let joined = Tensor::cat(&[&previous, &x], 2)?;
            let len = joined.dim(2)?;
            *slot = Some(
                joined
                    .narrow(2, len - self.context, self.context)?
                    .contiguous()?,
            );
            joined
        } else {
            x
        };
        let y = self.core.forward(&input)?;
        Ok(match residual {
            Some(r) => (y + r)?,
            None => y,
        })
    }

    /// The CPU path: the carried context and `pre(x)` joined in one pass, then the kernel.
    fn forward_direct(
        &self,
        packed: &PackedConv1d,
        x: &Tensor,
        slot: &mut Option<Tensor>,
        pre: Pre,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, cin, t) = x.dims3()?;
        let ctx = self.context;
        let width = ctx + t;
        let previous = match slot.take() {
            Some(p) => cpu_f32_values(&p)?,
            None => None,
        };
        let mut joined = vec![0f32; b * cin * width];
        with_cpu_f32(x, |xs| {
            joined
                .par_chunks_mut(width)
                .enumerate()
                .for_each(|(row, out)| {
                    if let Some(prev) = &previous {
                        out[..ctx].copy_from_slice(&prev[row * ctx..(row + 1) * ctx]);
                    }
                    pre.apply_slice(&xs[row * t..(row + 1) * t], &mut out[ctx..]);
                })
        })?;
        if ctx > 0 {
            let tail: Vec<f32> = joined
                .chunks(width)
                .flat_map(|row| &row[t..])
                .copied()
                .collect();
            *slot = Some(Tensor::from_vec(tail, (b, cin, ctx), &Device::Cpu)?);
        }
        let y = match residual {
            Some(r) => with_cpu_f32(r, |r| packed.forward_onto(&joined, b, width, Some(r)))?
                .ok_or_else(|| Error::internal("conv residual is not CPU f32"))?,
            None => packed.forward(&joined, b, width),
        };
        let t_out = packed.output_len(width);
        Ok(Tensor::from_vec(
            y,
            (b, packed.cout(), t_out),
            &Device::Cpu,
        )?)
    }
}

/// What a conv applies to its input first (fused into the conv's input pass on CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pre {
    Identity,
    /// ELU with α = 1.
    Elu,
}

impl Pre {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Pre::Identity => x.clone(),
            Pre::Elu => x.elu(1.0)?,
        })
    }

    fn apply_slice(self, src: &[f32], dst: &mut [f32]) {
        match self {
            Pre::Identity => dst.copy_from_slice(src),
            Pre::Elu => elu_into(src, dst),
        }
    }

    /// `pre(x)` as a new CPU buffer, rows in parallel.
    fn apply_values(self, x: &[f32], row: usize) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(row.max(1))
            .zip(x.par_chunks(row.max(1)))
            .for_each(|(d, s)| self.apply_slice(s, d));
        out
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
    /// The direct kernel and the bias values, for CPU f32 weights.
    packed: Option<(PackedConvTranspose1d, Vec<f32>)>,
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
        let packed = match (cpu_f32_values(weight)?, cpu_f32_values(&bias)?) {
            (Some(w), Some(b)) => Some((
                PackedConvTranspose1d::new(&w, (cin, cout, kernel), stride),
                b,
            )),
            _ => None,
        };
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
            packed,
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

    /// Rounds the weight (not the bias) to bfloat16; streaming steps read it as such.
    pub fn round_to_bf16(&mut self) -> Result<()> {
        self.columns = round_to_bf16(&self.columns)?;
        if let Some((packed, _)) = &mut self.packed {
            packed.round_to_bf16();
        }
        Ok(())
    }

    /// `x`: `[B, Cin, n]` → `[B, Cout, n * stride]`.
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        self.forward_with(x, cursor, Pre::Identity)
    }

    /// `forward(pre(x))`.
    pub fn forward_with(&self, x: &Tensor, cursor: &mut Cursor, pre: Pre) -> Result<Tensor> {
        let slot = cursor.next_slot();
        if let Some((packed, bias)) = &self.packed {
            let (b, _, n) = x.dims3()?;
            if n > 0 {
                let run = with_cpu_f32(x, |v| match pre {
                    Pre::Identity => packed.forward(v, b, n),
                    _ => packed.forward(&pre.apply_values(v, n), b, n),
                })?;
                if let Some(full) = run {
                    return self.finish_direct(full, bias, b * self.cout, n, slot);
                }
            }
        }
        let x = &pre.apply(x)?;
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

impl CausalConvTranspose1d {
    /// Completes the direct kernel's full output `[rows, n * stride + tail]`: adds the carried
    /// tail, keeps the new one, emits `[rows, n * stride]` with bias.
    fn finish_direct(
        &self,
        mut full: Vec<f32>,
        bias: &[f32],
        rows: usize,
        n: usize,
        slot: &mut Option<Tensor>,
    ) -> Result<Tensor> {
        let (emitted, tail) = (n * self.stride, self.tail);
        let len = emitted + tail;
        if let Some(previous) = slot.take() {
            with_cpu_f32(&previous, |p| {
                for r in 0..rows {
                    let head = &mut full[r * len..r * len + tail];
                    head.iter_mut()
                        .zip(&p[r * tail..(r + 1) * tail])
                        .for_each(|(y, c)| *y += c);
                }
            })?
            .ok_or_else(|| Error::internal("transposed conv state is not CPU f32"))?;
        }
        let mut out = vec![0f32; rows * emitted];
        // One slot per row even without a tail, so that the zip below visits every row.
        let mut carried = vec![0f32; rows * tail.max(1)];
        out.par_chunks_mut(emitted.max(1))
            .zip(carried.par_chunks_mut(tail.max(1)))
            .enumerate()
            .for_each(|(r, (out, carried))| {
                let row = &full[r * len..(r + 1) * len];
                let b = bias[r % self.cout];
                out.iter_mut()
                    .zip(&row[..emitted])
                    .for_each(|(o, y)| *o = y + b);
                carried[..tail].copy_from_slice(&row[emitted..]);
            });
        let batch = rows / self.cout;
        if tail > 0 {
            *slot = Some(Tensor::from_vec(
                carried,
                (batch, self.cout, tail),
                &Device::Cpu,
            )?);
        }
        Ok(Tensor::from_vec(
            out,
            (batch, self.cout, emitted),
            &Device::Cpu,
        )?)
    }
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}

impl CausalConv1d {
    /// This conv in the kernels' layout (weights `[cout, cin, k]`).
    pub(crate) fn export(&self, name: &str, elu_input: bool, skip: Skip) -> Result<ConvLayer> {
        let (cout, cin, kernel) = self.core.weight.dims3()?;
        Ok(ConvLayer {
            name: name.to_string(),
            kind: ConvKind::Conv,
            cin,
            cout,
            kernel,
            stride: self.core.stride,
            dilation: self.core.dilation,
            elu_input,
            skip,
            weight: f32_values(&self.core.weight)?,
            bias: f32_values(&self.core.bias)?,
        })
    }
}

impl CausalConvTranspose1d {
    /// This transposed conv in the kernels' layout (weights `[cin, cout, k]`, recovered from
    /// the padded columns `[cout · spans · stride, cin]`).
    pub(crate) fn export(&self, name: &str, elu_input: bool) -> Result<ConvLayer> {
        let (cout, kernel) = (self.cout, self.tail + self.stride);
        let cin = self.columns.dim(1)?;
        let weight = self
            .columns
            .t()?
            .reshape((cin, cout, self.spans * self.stride))?
            .narrow(2, 0, kernel)?;
        Ok(ConvLayer {
            name: name.to_string(),
            kind: ConvKind::Transposed,
            cin,
            cout,
            kernel,
            stride: self.stride,
            dilation: 1,
            elu_input,
            skip: Skip::None,
            weight: f32_values(&weight)?,
            bias: f32_values(&self.bias)?,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The kernels themselves are checked against the definition in `speechinfer_core::conv`;
    //! here the CPU f32 path (kernels, fused ELU/residual, carried context and tails) must agree
    //! with candle's path, which f64 tensors take, over a stream of uneven chunks.

    use candle_core::{DType, Device};

    use super::*;
    use crate::state::StreamState;
    use speechinfer_core::testing::max_abs_diff;

    fn values(len: usize, phase: f64) -> Vec<f64> {
        (0..len).map(|i| (i as f64 * 0.37 + phase).sin()).collect()
    }

    fn tensor(v: &[f64], shape: (usize, usize, usize), dtype: DType) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Runs `forward` on chunks of `lengths` frames in both dtypes and compares the outputs.
    fn agree(
        lengths: &[usize],
        cin: usize,
        b: usize,
        forward: impl Fn(DType, &Tensor, &mut StreamState) -> Tensor,
    ) {
        let mut states = [StreamState::new(b), StreamState::new(b)];
        for (c, &n) in lengths.iter().enumerate() {
            let x = values(b * cin * n, c as f64);
            let [s32, s64] = &mut states;
            let y32 = forward(DType::F32, &tensor(&x, (b, cin, n), DType::F32), s32);
            let y64 = forward(DType::F64, &tensor(&x, (b, cin, n), DType::F64), s64);
            let diff = max_abs_diff(&y32, &y64.to_dtype(DType::F32).unwrap());
            assert!(diff < 1e-5, "chunk {c}: max diff {diff}");
        }
    }

    #[test]
    fn conv_paths_agree_with_elu_residual_and_context() {
        for &(b, cin, cout, k, s, d) in
            &[(2, 3, 3, 3, 1, 2), (1, 4, 5, 4, 2, 1), (2, 2, 2, 1, 1, 1)]
        {
            let w = values(cout * cin * k, 1.0);
            let bias = values(cout, 2.0);
            let convs: Vec<CausalConv1d> = [DType::F32, DType::F64]
                .iter()
                .map(|&dt| {
                    let weight = tensor(&w, (cout, cin, k), dt);
                    let bias = tensor(&bias, (1, 1, cout), dt).flatten_all().unwrap();
                    CausalConv1d::new(weight, &bias, s, d, "test").unwrap()
                })
                .collect();
            // Output length = input / stride; the residual exists when shapes allow it.
            agree(&[4 * s, 2 * s, 6 * s], cin, b, |dt, x, state| {
                let conv = &convs[usize::from(dt == DType::F64)];
                let residual = (cin == cout && s == 1).then_some(x);
                conv.forward_with(x, &mut state.cursor(), Pre::Elu, residual)
                    .unwrap()
            });
        }
    }

    #[test]
    fn transposed_conv_paths_agree_across_chunks() {
        for &(b, cin, cout, k, s) in &[
            (2, 3, 2, 4, 2),
            (3, 2, 3, 5, 2),
            (2, 4, 1, 3, 3),
            (1, 2, 2, 2, 2),
        ] {
            let w = values(cin * cout * k, 1.5);
            let bias = values(cout, 0.5);
            let convs: Vec<CausalConvTranspose1d> = [DType::F32, DType::F64]
                .iter()
                .map(|&dt| {
                    let weight = tensor(&w, (cin, cout, k), dt);
                    CausalConvTranspose1d::new(&weight, tensor(&bias, (1, cout, 1), dt), s).unwrap()
                })
                .collect();
            agree(&[3, 1, 4], cin, b, |dt, x, state| {
                let conv = &convs[usize::from(dt == DType::F64)];
                conv.forward_with(x, &mut state.cursor(), Pre::Elu).unwrap()
            });
        }
    }
}
