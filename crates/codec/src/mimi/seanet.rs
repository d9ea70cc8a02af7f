//! Mimi's SEANet encoder and decoder under their `moshi` names (`{encoder,decoder}.model.{i}`):
//! causal convs padded on the left with zeros, ELU(1.0), true-skip residual blocks.
//!
//! Module indices follow `nn.Sequential`: the encoder is `conv, [res × n, ELU, down-conv] × L,
//! ELU, conv`; the decoder `conv, [ELU, up-convtr, res × n] × L, ELU, conv`. A residual block is
//! `block.{0: ELU, 1: conv k, 2: ELU, 3: conv 1}`.

use candle_core::Tensor;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;

use super::{take_weight, MimiConfig};
use crate::conv::{CausalConv1d, CausalConvTranspose1d, Pre};
use crate::state::Cursor;

/// `{prefix}.conv.conv.{weight,bias}`: a causal conv `cin → cout`.
fn conv(
    ckpt: &mut Checkpoint,
    prefix: &str,
    (cin, cout, kernel): (usize, usize, usize),
    stride: usize,
    dilation: usize,
) -> Result<CausalConv1d> {
    let name = format!("{prefix}.conv.conv");
    let weight = take_weight(ckpt, &name, &[cout, cin, kernel])?;
    let bias = ckpt.take(&format!("{name}.bias"), &[cout])?;
    CausalConv1d::new(weight, &bias, stride, dilation, &name)
}

/// `{prefix}.convtr.convtr.{weight,bias}`: a transposed conv `cin → cout`, kernel 2·stride.
fn convtr(
    ckpt: &mut Checkpoint,
    prefix: &str,
    (cin, cout): (usize, usize),
    stride: usize,
) -> Result<CausalConvTranspose1d> {
    let name = format!("{prefix}.convtr.convtr");
    let weight = take_weight(ckpt, &name, &[cin, cout, 2 * stride])?;
    let bias = ckpt
        .take(&format!("{name}.bias"), &[cout])?
        .reshape((1, cout, 1))?;
    CausalConvTranspose1d::new(&weight, bias, stride)
}

/// `x + conv2(elu(conv1(elu(x))))` on `ch` channels (true skip).
struct ResBlock {
    conv1: CausalConv1d,
    conv2: CausalConv1d,
}

fn round_blocks(blocks: &mut [ResBlock]) -> Result<()> {
    for block in blocks {
        block.conv1.round_to_bf16()?;
        block.conv2.round_to_bf16()?;
    }
    Ok(())
}

impl ResBlock {
    fn load(
        ckpt: &mut Checkpoint,
        prefix: &str,
        cfg: &MimiConfig,
        ch: usize,
        j: usize,
    ) -> Result<Self> {
        let hidden = ch / cfg.compress;
        let dilation = cfg.dilation_base.pow(j as u32);
        let k = cfg.residual_kernel_size;
        Ok(Self {
            conv1: conv(
                ckpt,
                &format!("{prefix}.block.1"),
                (ch, hidden, k),
                1,
                dilation,
            )?,
            conv2: conv(ckpt, &format!("{prefix}.block.3"), (hidden, ch, 1), 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let h = self.conv1.forward_with(x, cursor, Pre::Elu, None)?;
        self.conv2.forward_with(&h, cursor, Pre::Elu, Some(x))
    }
}

fn run_blocks(blocks: &[ResBlock], mut x: Tensor, cursor: &mut Cursor) -> Result<Tensor> {
    for block in blocks {
        x = block.forward(&x, cursor)?;
    }
    Ok(x)
}

struct EncoderStage {
    blocks: Vec<ResBlock>,
    down: CausalConv1d,
}

/// Wave `[B, 1, T]` (T a multiple of the SEANet hop) → `[B, dimension, T / hop]` at 25 Hz.
pub(crate) struct Encoder {
    conv_in: CausalConv1d,
    stages: Vec<EncoderStage>,
    conv_out: CausalConv1d,
}

impl Encoder {
    pub fn load(ckpt: &mut Checkpoint, cfg: &MimiConfig) -> Result<Self> {
        let nf = cfg.n_filters;
        let per_stage = cfg.n_residual_layers + 2;
        let conv_in = conv(
            ckpt,
            "encoder.model.0",
            (cfg.channels, nf, cfg.kernel_size),
            1,
            1,
        )?;
        let mut stages = Vec::new();
        for (i, &r) in cfg.ratios.iter().rev().enumerate() {
            let ch = nf << i;
            let base = 1 + i * per_stage;
            let blocks = (0..cfg.n_residual_layers)
                .map(|j| ResBlock::load(ckpt, &format!("encoder.model.{}", base + j), cfg, ch, j))
                .collect::<Result<_>>()?;
            let down_idx = base + cfg.n_residual_layers + 1;
            let down = conv(
                ckpt,
                &format!("encoder.model.{down_idx}"),
                (ch, 2 * ch, 2 * r),
                r,
                1,
            )?;
            stages.push(EncoderStage { blocks, down });
        }
        let last = 1 + cfg.ratios.len() * per_stage + 1;
        let conv_out = conv(
            ckpt,
            &format!("encoder.model.{last}"),
            (nf << cfg.ratios.len(), cfg.dimension, cfg.last_kernel_size),
            1,
            1,
        )?;
        Ok(Self {
            conv_in,
            stages,
            conv_out,
        })
    }

    /// Every conv weight rounded to bfloat16.
    pub fn round_to_bf16(&mut self) -> Result<()> {
        self.conv_in.round_to_bf16()?;
        for stage in &mut self.stages {
            round_blocks(&mut stage.blocks)?;
            stage.down.round_to_bf16()?;
        }
        self.conv_out.round_to_bf16()
    }

    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x, cursor)?;
        for stage in &self.stages {
            x = run_blocks(&stage.blocks, x, cursor)?;
            x = stage.down.forward_with(&x, cursor, Pre::Elu, None)?;
        }
        self.conv_out.forward_with(&x, cursor, Pre::Elu, None)
    }
}

struct DecoderStage {
    up: CausalConvTranspose1d,
    blocks: Vec<ResBlock>,
}

/// `[B, dimension, n]` at 25 Hz → wave `[B, 1, n · hop]`.
pub(crate) struct Decoder {
    conv_in: CausalConv1d,
    stages: Vec<DecoderStage>,
    conv_out: CausalConv1d,
}

impl Decoder {
    pub fn load(ckpt: &mut Checkpoint, cfg: &MimiConfig) -> Result<Self> {
        let nf = cfg.n_filters;
        let levels = cfg.ratios.len();
        let per_stage = cfg.n_residual_layers + 2;
        let conv_in = conv(
            ckpt,
            "decoder.model.0",
            (cfg.dimension, nf << levels, cfg.kernel_size),
            1,
            1,
        )?;
        let mut stages = Vec::new();
        for (i, &r) in cfg.ratios.iter().enumerate() {
            let ch = nf << (levels - i);
            let base = 1 + i * per_stage;
            let up = convtr(
                ckpt,
                &format!("decoder.model.{}", base + 1),
                (ch, ch / 2),
                r,
            )?;
            let blocks = (0..cfg.n_residual_layers)
                .map(|j| {
                    let idx = base + 2 + j;
                    ResBlock::load(ckpt, &format!("decoder.model.{idx}"), cfg, ch / 2, j)
                })
                .collect::<Result<_>>()?;
            stages.push(DecoderStage { up, blocks });
        }
        let last = 1 + levels * per_stage + 1;
        let conv_out = conv(
            ckpt,
            &format!("decoder.model.{last}"),
            (nf, cfg.channels, cfg.last_kernel_size),
            1,
            1,
        )?;
        Ok(Self {
            conv_in,
            stages,
            conv_out,
        })
    }

    /// Every conv weight rounded to bfloat16.
    pub fn round_to_bf16(&mut self) -> Result<()> {
        self.conv_in.round_to_bf16()?;
        for stage in &mut self.stages {
            stage.up.round_to_bf16()?;
            round_blocks(&mut stage.blocks)?;
        }
        self.conv_out.round_to_bf16()
    }

    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x, cursor)?;
        for stage in &self.stages {
            x = stage.up.forward_with(&x, cursor, Pre::Elu)?;
            x = run_blocks(&stage.blocks, x, cursor)?;
        }
        self.conv_out.forward_with(&x, cursor, Pre::Elu, None)
    }
}
