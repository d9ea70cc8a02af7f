//! SEANet-style causal conv encoder and decoder (see `docs/codec.md` for the exact layout).

use candle_core::Tensor;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;

use speechinfer_kernels::codec::{ConvLayer, Skip};

use crate::config::CodecConfig;
use crate::conv::{CausalConv1d, CausalConvTranspose1d, ConvSpec, Pre};
use crate::state::Cursor;

fn conv(cin: usize, cout: usize, kernel: usize) -> ConvSpec {
    ConvSpec {
        cin,
        cout,
        kernel,
        stride: 1,
        dilation: 1,
    }
}

/// `x + conv2(elu(conv1(elu(x))))`.
struct ResidualUnit {
    conv1: CausalConv1d,
    conv2: CausalConv1d,
}

impl ResidualUnit {
    fn load(
        ckpt: &mut Checkpoint,
        prefix: &str,
        cfg: &CodecConfig,
        ch: usize,
        j: usize,
    ) -> Result<Self> {
        let hidden = ch / cfg.compress;
        let conv1 = CausalConv1d::load(
            ckpt,
            &format!("{prefix}.conv1"),
            ConvSpec {
                dilation: cfg.dilation_base.pow(j as u32),
                ..conv(ch, hidden, cfg.residual_kernel_size)
            },
        )?;
        let conv2 = CausalConv1d::load(ckpt, &format!("{prefix}.conv2"), conv(hidden, ch, 1))?;
        Ok(Self { conv1, conv2 })
    }

    fn export(&self, prefix: &str) -> Result<[ConvLayer; 2]> {
        Ok([
            self.conv1
                .export(&format!("{prefix}.conv1"), true, Skip::Save)?,
            self.conv2
                .export(&format!("{prefix}.conv2"), true, Skip::Add)?,
        ])
    }

    fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let h = self.conv1.forward_with(x, cursor, Pre::Elu, None)?;
        self.conv2.forward_with(&h, cursor, Pre::Elu, Some(x))
    }
}

fn load_units(
    ckpt: &mut Checkpoint,
    prefix: &str,
    cfg: &CodecConfig,
    ch: usize,
) -> Result<Vec<ResidualUnit>> {
    (0..cfg.n_residual_layers)
        .map(|j| ResidualUnit::load(ckpt, &format!("{prefix}.res.{j}"), cfg, ch, j))
        .collect()
}

fn run_units(units: &[ResidualUnit], mut x: Tensor, cursor: &mut Cursor) -> Result<Tensor> {
    for unit in units {
        x = unit.forward(&x, cursor)?;
    }
    Ok(x)
}

struct EncoderBlock {
    units: Vec<ResidualUnit>,
    down: CausalConv1d,
}

/// Waveform `[B, channels, T]` (T a multiple of hop) → latent `[B, dimension, T / hop]`.
pub(crate) struct Encoder {
    conv_in: CausalConv1d,
    blocks: Vec<EncoderBlock>,
    conv_out: CausalConv1d,
}

impl Encoder {
    pub fn load(ckpt: &mut Checkpoint, cfg: &CodecConfig) -> Result<Self> {
        let nf = cfg.n_filters;
        let conv_in = CausalConv1d::load(
            ckpt,
            "encoder.conv_in",
            conv(cfg.channels, nf, cfg.kernel_size),
        )?;
        let mut blocks = Vec::new();
        for (i, &r) in cfg.ratios.iter().rev().enumerate() {
            let ch = nf << i;
            let prefix = format!("encoder.blocks.{i}");
            let units = load_units(ckpt, &prefix, cfg, ch)?;
            let down = CausalConv1d::load(
                ckpt,
                &format!("{prefix}.down"),
                ConvSpec {
                    stride: r,
                    ..conv(ch, 2 * ch, 2 * r)
                },
            )?;
            blocks.push(EncoderBlock { units, down });
        }
        let conv_out = CausalConv1d::load(
            ckpt,
            "encoder.conv_out",
            conv(nf << cfg.ratios.len(), cfg.dimension, cfg.last_kernel_size),
        )?;
        Ok(Self {
            conv_in,
            blocks,
            conv_out,
        })
    }

    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x, cursor)?;
        for block in &self.blocks {
            x = run_units(&block.units, x, cursor)?;
            x = block.down.forward_with(&x, cursor, Pre::Elu, None)?;
        }
        self.conv_out.forward_with(&x, cursor, Pre::Elu, None)
    }
}

struct DecoderBlock {
    up: CausalConvTranspose1d,
    units: Vec<ResidualUnit>,
}

/// Latent `[B, dimension, F]` → waveform `[B, channels, F * hop]`.
pub(crate) struct Decoder {
    conv_in: CausalConv1d,
    blocks: Vec<DecoderBlock>,
    conv_out: CausalConv1d,
}

impl Decoder {
    pub fn load(ckpt: &mut Checkpoint, cfg: &CodecConfig) -> Result<Self> {
        let nf = cfg.n_filters;
        let levels = cfg.ratios.len();
        let conv_in = CausalConv1d::load(
            ckpt,
            "decoder.conv_in",
            conv(cfg.dimension, nf << levels, cfg.kernel_size),
        )?;
        let mut blocks = Vec::new();
        for (i, &r) in cfg.ratios.iter().enumerate() {
            let ch = nf << (levels - i);
            let prefix = format!("decoder.blocks.{i}");
            let up = CausalConvTranspose1d::load(
                ckpt,
                &format!("{prefix}.up"),
                ConvSpec {
                    stride: r,
                    ..conv(ch, ch / 2, 2 * r)
                },
            )?;
            let units = load_units(ckpt, &prefix, cfg, ch / 2)?;
            blocks.push(DecoderBlock { up, units });
        }
        let conv_out = CausalConv1d::load(
            ckpt,
            "decoder.conv_out",
            conv(nf, cfg.channels, cfg.last_kernel_size),
        )?;
        Ok(Self {
            conv_in,
            blocks,
            conv_out,
        })
    }

    /// Every layer in the kernels' layout, in order (what `forward` runs).
    pub fn export(&self) -> Result<Vec<ConvLayer>> {
        let mut layers = vec![self.conv_in.export("decoder.conv_in", false, Skip::None)?];
        for (i, block) in self.blocks.iter().enumerate() {
            let prefix = format!("decoder.blocks.{i}");
            layers.push(block.up.export(&format!("{prefix}.up"), true)?);
            for (j, unit) in block.units.iter().enumerate() {
                layers.extend(unit.export(&format!("{prefix}.res.{j}"))?);
            }
        }
        layers.push(self.conv_out.export("decoder.conv_out", true, Skip::None)?);
        Ok(layers)
    }

    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x, cursor)?;
        for block in &self.blocks {
            x = block.up.forward_with(&x, cursor, Pre::Elu)?;
            x = run_units(&block.units, x, cursor)?;
        }
        self.conv_out.forward_with(&x, cursor, Pre::Elu, None)
    }
}
