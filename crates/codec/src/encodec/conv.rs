//! HF's `EncodecConv1d` (causal): padded on the left by `(k-1)·d + 1 - s` samples, by
//! *reflection* of the input (`pad_mode="reflect"`) or with zeros (`"constant"`), and on the right
//! by `_get_extra_padding_for_conv1d` (same mode) so that a length that is not a multiple of the
//! stride still yields `ceil(T / s)` outputs.
//!
//! Streaming: a stream's first chunk is padded as HF pads a whole input (reflection from that
//! chunk); later chunks take the previous chunk's last samples as left context. Chunked calls
//! therefore equal one whole call whenever the first chunk is longer than the padding (HF's
//! reflection then reads the same samples); a shorter first chunk reflects fewer real samples.

use candle_core::{DType, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;

use crate::conv::Conv1dCore;
use crate::mimi::take_weight;
use crate::state::Cursor;

pub(crate) struct Conv {
    /// Weight `[Cout, Cin, k]` (weight norm folded) and bias.
    core: Conv1dCore,
    stride: usize,
    context: usize,
    reflect: bool,
}

impl Conv {
    /// `{prefix}.conv.{bias, weight | parametrizations.weight.original0/1 | weight_g/weight_v}`.
    pub fn load(
        ckpt: &mut Checkpoint,
        prefix: &str,
        (cin, cout, kernel): (usize, usize, usize),
        (stride, dilation): (usize, usize),
        reflect: bool,
    ) -> Result<Self> {
        let name = format!("{prefix}.conv");
        let weight = take_weight(ckpt, &name, &[cout, cin, kernel])?;
        let bias = ckpt.take(&format!("{name}.bias"), &[cout])?;
        let span = (kernel - 1) * dilation + 1;
        Ok(Self {
            core: Conv1dCore::new(weight, &bias, stride, dilation)?,
            stride,
            context: span.saturating_sub(stride),
            reflect,
        })
    }

    /// `x`: `[B, Cin, T]` → `[B, Cout, ceil(T / stride)]`. `finish`: the input ends here, so a T
    /// that is not a multiple of the stride gets HF's extra right padding (streaming chunks are
    /// whole frames and never need it).
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor, finish: bool) -> Result<Tensor> {
        let len = x.dim(2)?;
        let extra = if finish {
            (self.stride - len % self.stride) % self.stride
        } else {
            0
        };
        let input = if self.context == 0 {
            pad1d(x, 0, extra, self.reflect)?
        } else {
            // Slot 1: the last `context` samples; slot 2: a `[B, 1, 1]` "has history" flag
            // (zeroed by `StreamState::reset_item`, so that a reset stream pads afresh).
            let (previous_slot, started_slot) = cursor.next_pair();
            let previous = previous_slot.take();
            let started = started_slot.take();
            let fresh = || pad1d(x, self.context, extra, self.reflect);
            let input = match (previous, started) {
                (Some(previous), Some(started)) => {
                    let carried = Tensor::cat(&[&previous, &pad1d(x, 0, extra, self.reflect)?], 2)?;
                    let flags: Vec<f32> = started.flatten_all()?.to_vec1()?;
                    if flags.iter().all(|&f| f == 1.0) {
                        carried
                    } else {
                        let fresh = fresh()?;
                        let keep = started.broadcast_as(carried.shape())?;
                        ((carried - &fresh)?.mul(&keep)? + fresh)?
                    }
                }
                _ => fresh()?,
            };
            let b = x.dim(0)?;
            let tail = input.narrow(2, len, self.context)?.contiguous()?;
            *previous_slot = Some(tail);
            *started_slot = Some(Tensor::ones((b, 1, 1), DType::F32, x.device())?);
            input
        };
        self.core.forward(&input)
    }
}

/// `torch.nn.functional.pad` as HF's `EncodecConv1d._pad1d` calls it: reflection (an input no
/// longer than the padding is first extended with zeros, which are dropped again at the end) or
/// zeros.
pub(crate) fn pad1d(x: &Tensor, left: usize, right: usize, reflect: bool) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    if !reflect {
        return Ok(x.pad_with_zeros(2, left, right)?);
    }
    let len = x.dim(2)?;
    let max_pad = left.max(right);
    let zeros = if len <= max_pad { max_pad - len + 1 } else { 0 };
    let xe = x.pad_with_zeros(2, 0, zeros)?;
    let n = len + zeros;
    let reversed = |start: usize, count: usize| -> Result<Tensor> {
        // xe[.., start + count - 1], …, xe[.., start]
        let idx: Vec<u32> = (0..count).rev().map(|i| i as u32).collect();
        let idx = Tensor::from_vec(idx, count, x.device())?;
        Ok(xe
            .narrow(2, start, count)?
            .contiguous()?
            .index_select(&idx, 2)?)
    };
    let mut parts = Vec::with_capacity(3);
    if left > 0 {
        parts.push(reversed(1, left)?); // x[left], …, x[1]
    }
    parts.push(xe.clone());
    if right > 0 {
        parts.push(reversed(n - 1 - right, right)?); // x[n-2], …, x[n-1-right]
    }
    let padded = Tensor::cat(&parts, 2)?;
    let total = padded.dim(2)?;
    Ok(padded.narrow(2, 0, total - zeros)?)
}
