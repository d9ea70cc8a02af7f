//! The learnt resampling between the SEANet rate (25 Hz) and the code rate (12.5 Hz):
//! `downsample` is a causal stride-2 conv (kernel 4, no bias) whose left context starts as the
//! first input frame repeated (moshi's `pad_mode="replicate"`); `upsample` a depthwise transposed
//! conv (groups = channels, kernel 4, stride 2, no bias) whose overlap tail streams like the
//! SEANet decoder's.

use candle_core::{DType, Tensor};
use speechinfer_core::tensor_ops::round_to_bf16;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use super::{take_weight, MimiConfig};
use crate::state::Cursor;

pub(crate) struct Downsample {
    /// `[C, C, 2·stride]`
    weight: Tensor,
    stride: usize,
    context: usize,
}

impl Downsample {
    pub fn load(ckpt: &mut Checkpoint, cfg: &MimiConfig) -> Result<Self> {
        let (c, s) = (cfg.dimension, cfg.resample_stride);
        let weight = take_weight(ckpt, "downsample.conv.conv.conv", &[c, c, 2 * s])?;
        Ok(Self {
            weight,
            stride: s,
            context: s,
        })
    }

    pub fn round_to_bf16(&mut self) -> Result<()> {
        self.weight = round_to_bf16(&self.weight)?;
        Ok(())
    }

    /// `[B, C, n·stride]` → `[B, C, n]`.
    ///
    /// State: a `[B, 1, 1]` "started" flag (0 after a reset, so that a reset stream replicates
    /// its first frame again) and the last `context` input frames.
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let (b, c, _) = x.dims3()?;
        let started_slot = cursor.next_slot();
        let started = started_slot.take();
        *started_slot = Some(Tensor::ones((b, 1, 1), DType::F32, x.device())?);
        let prev_slot = cursor.next_slot();
        let first = x.narrow(2, 0, 1)?.broadcast_as((b, c, self.context))?;
        let previous = match (prev_slot.take(), started) {
            (Some(prev), Some(flag)) => {
                let fresh = flag.affine(-1.0, 1.0)?;
                (prev.broadcast_mul(&flag)? + first.broadcast_mul(&fresh)?)?
            }
            _ => first.contiguous()?,
        };
        let joined = Tensor::cat(&[&previous, x], 2)?;
        let len = joined.dim(2)?;
        *prev_slot = Some(
            joined
                .narrow(2, len - self.context, self.context)?
                .contiguous()?,
        );
        Ok(joined.conv1d(&self.weight, 0, self.stride, 1, 1)?)
    }
}

pub(crate) struct Upsample {
    /// Kernel taps, each `[1, C, 1]`.
    taps: Vec<Tensor>,
    stride: usize,
}

impl Upsample {
    pub fn load(ckpt: &mut Checkpoint, cfg: &MimiConfig) -> Result<Self> {
        let (c, s) = (cfg.dimension, cfg.resample_stride);
        let weight = take_weight(ckpt, "upsample.convtr.convtr.convtr", &[c, 1, 2 * s])?;
        Self::from_weight(&weight, s)
    }

    /// From a torch depthwise transposed-conv weight `[C, 1, k]`, k a multiple of `stride`.
    pub fn from_weight(weight: &Tensor, stride: usize) -> Result<Self> {
        let (c, _, k) = weight.dims3()?;
        if k == 0 || k % stride != 0 {
            return Err(Error::config(format!(
                "upsample kernel {k} is not a positive multiple of its stride {stride}"
            )));
        }
        let taps = (0..k)
            .map(|j| Ok(weight.narrow(2, j, 1)?.reshape((1, c, 1))?))
            .collect::<Result<_>>()?;
        Ok(Self { taps, stride })
    }

    /// `[B, C, n]` → `[B, C, n·stride]`: `y[c, t·s + j] += x[c, t] · w[c, j]`, the last
    /// `k - s` outputs carried to the next call.
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let (b, c, n) = x.dims3()?;
        let s = self.stride;
        let spans = self.taps.len() / s;
        let mut full: Option<Tensor> = None;
        for p in 0..spans {
            let phases = self.taps[p * s..(p + 1) * s]
                .iter()
                .map(|w| x.broadcast_mul(w))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let block = Tensor::stack(&phases, 3)?
                .reshape((b, c, n * s))?
                .pad_with_zeros(2, p * s, (spans - 1 - p) * s)?;
            full = Some(match full {
                Some(acc) => (acc + block)?,
                None => block,
            });
        }
        let mut y =
            full.ok_or_else(|| Error::internal("upsample kernel shorter than its stride"))?;
        let tail = (spans - 1) * s;
        let emitted = n * s;
        let slot = cursor.next_slot();
        if tail > 0 {
            if let Some(previous) = slot.take() {
                let len = y.dim(2)?;
                let head = (y.narrow(2, 0, tail)? + previous)?;
                y = Tensor::cat(&[&head, &y.narrow(2, tail, len - tail)?], 2)?;
            }
            *slot = Some(y.narrow(2, emitted, tail)?.contiguous()?);
        }
        Ok(y.narrow(2, 0, emitted)?)
    }
}
