//! EnCodec's SEANet encoder and decoder under HF's names (`{encoder,decoder}.layers.{i}`).
//!
//! Indices follow the `nn.ModuleList`: the encoder is `conv, [res × n, ELU, down-conv] × L,
//! LSTM, ELU, conv`; the decoder `conv, LSTM, [ELU, up-convtr, res × n] × L, ELU, conv`. A
//! residual block is `block.{0: ELU, 1: conv k (dilation g^j), 2: ELU, 3: conv 1}` plus
//! `shortcut` (a 1x1 conv when `use_conv_shortcut`, else identity): `shortcut(x) + block(x)`.

use candle_core::Tensor;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;

use super::conv::Conv;
use super::lstm::Lstm;
use super::EncodecConfig;
use crate::conv::CausalConvTranspose1d;
use crate::mimi::take_weight;
use crate::state::Cursor;

struct ResBlock {
    conv1: Conv,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl ResBlock {
    fn load(
        ckpt: &mut Checkpoint,
        prefix: &str,
        cfg: &EncodecConfig,
        ch: usize,
        j: usize,
    ) -> Result<Self> {
        let hidden = ch / cfg.compress;
        let dilation = cfg.dilation_growth_rate.pow(j as u32);
        let reflect = cfg.pad_mode == "reflect";
        let k = cfg.residual_kernel_size;
        let conv1 = Conv::load(
            ckpt,
            &format!("{prefix}.block.1"),
            (ch, hidden, k),
            (1, dilation),
            reflect,
        )?;
        let conv2 = Conv::load(
            ckpt,
            &format!("{prefix}.block.3"),
            (hidden, ch, 1),
            (1, 1),
            reflect,
        )?;
        let shortcut = if cfg.use_conv_shortcut {
            let name = format!("{prefix}.shortcut");
            Some(Conv::load(ckpt, &name, (ch, ch, 1), (1, 1), reflect)?)
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            shortcut,
        })
    }

    fn forward(&self, x: &Tensor, cursor: &mut Cursor, finish: bool) -> Result<Tensor> {
        let h = self.conv1.forward(&x.elu(1.0)?, cursor, finish)?;
        let h = self.conv2.forward(&h.elu(1.0)?, cursor, finish)?;
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x, cursor, finish)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

fn run_blocks(
    blocks: &[ResBlock],
    mut x: Tensor,
    cursor: &mut Cursor,
    finish: bool,
) -> Result<Tensor> {
    for block in blocks {
        x = block.forward(&x, cursor, finish)?;
    }
    Ok(x)
}

fn res_blocks(
    ckpt: &mut Checkpoint,
    cfg: &EncodecConfig,
    first_index: usize,
    prefix: &str,
    ch: usize,
) -> Result<Vec<ResBlock>> {
    (0..cfg.num_residual_layers)
        .map(|j| {
            let name = format!("{prefix}.layers.{}", first_index + j);
            ResBlock::load(ckpt, &name, cfg, ch, j)
        })
        .collect()
}

struct EncoderStage {
    blocks: Vec<ResBlock>,
    down: Conv,
}

/// Wave `[B, C, T]` → latent `[B, hidden_size, ceil(T / hop)]`.
pub(crate) struct Encoder {
    conv_in: Conv,
    stages: Vec<EncoderStage>,
    lstm: Lstm,
    conv_out: Conv,
}

impl Encoder {
    pub fn load(ckpt: &mut Checkpoint, cfg: &EncodecConfig) -> Result<Self> {
        let nf = cfg.num_filters;
        let n = cfg.num_residual_layers;
        let reflect = cfg.pad_mode == "reflect";
        let conv_in = Conv::load(
            ckpt,
            "encoder.layers.0",
            (cfg.channels, nf, cfg.kernel_size),
            (1, 1),
            reflect,
        )?;
        let mut stages = Vec::new();
        for (i, &r) in cfg.upsampling_ratios.iter().rev().enumerate() {
            let ch = nf << i;
            let base = 1 + i * (n + 2);
            let blocks = res_blocks(ckpt, cfg, base, "encoder", ch)?;
            let down = Conv::load(
                ckpt,
                &format!("encoder.layers.{}", base + n + 1),
                (ch, 2 * ch, 2 * r),
                (r, 1),
                reflect,
            )?;
            stages.push(EncoderStage { blocks, down });
        }
        let levels = cfg.upsampling_ratios.len();
        let lstm_index = 1 + levels * (n + 2);
        let top = nf << levels;
        let lstm = Lstm::load(
            ckpt,
            &format!("encoder.layers.{lstm_index}"),
            top,
            cfg.num_lstm_layers,
        )?;
        let conv_out = Conv::load(
            ckpt,
            &format!("encoder.layers.{}", lstm_index + 2),
            (top, cfg.hidden_size, cfg.last_kernel_size),
            (1, 1),
            reflect,
        )?;
        Ok(Self {
            conv_in,
            stages,
            lstm,
            conv_out,
        })
    }

    /// `finish`: `x` is a whole input (HF's right padding for lengths off the stride grid).
    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor, finish: bool) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x, cursor, finish)?;
        for stage in &self.stages {
            x = run_blocks(&stage.blocks, x, cursor, finish)?;
            x = stage.down.forward(&x.elu(1.0)?, cursor, finish)?;
        }
        let x = self.lstm.forward(&x, cursor)?;
        self.conv_out.forward(&x.elu(1.0)?, cursor, finish)
    }
}

struct DecoderStage {
    up: CausalConvTranspose1d,
    blocks: Vec<ResBlock>,
}

/// Latent `[B, hidden_size, n]` → wave `[B, C, n · hop]`.
pub(crate) struct Decoder {
    conv_in: Conv,
    lstm: Lstm,
    stages: Vec<DecoderStage>,
    conv_out: Conv,
}

impl Decoder {
    pub fn load(ckpt: &mut Checkpoint, cfg: &EncodecConfig) -> Result<Self> {
        let nf = cfg.num_filters;
        let n = cfg.num_residual_layers;
        let levels = cfg.upsampling_ratios.len();
        let reflect = cfg.pad_mode == "reflect";
        let top = nf << levels;
        let conv_in = Conv::load(
            ckpt,
            "decoder.layers.0",
            (cfg.hidden_size, top, cfg.kernel_size),
            (1, 1),
            reflect,
        )?;
        let lstm = Lstm::load(ckpt, "decoder.layers.1", top, cfg.num_lstm_layers)?;
        let mut stages = Vec::new();
        for (i, &r) in cfg.upsampling_ratios.iter().enumerate() {
            let ch = nf << (levels - i);
            let base = 2 + i * (n + 2);
            let name = format!("decoder.layers.{}.conv", base + 1);
            let weight = take_weight(ckpt, &name, &[ch, ch / 2, 2 * r])?;
            let bias = ckpt
                .take(&format!("{name}.bias"), &[ch / 2])?
                .reshape((1, ch / 2, 1))?;
            let up = CausalConvTranspose1d::new(&weight, bias, r)?;
            let blocks = res_blocks(ckpt, cfg, base + 2, "decoder", ch / 2)?;
            stages.push(DecoderStage { up, blocks });
        }
        let conv_out = Conv::load(
            ckpt,
            &format!("decoder.layers.{}", 3 + levels * (n + 2)),
            (nf, cfg.channels, cfg.last_kernel_size),
            (1, 1),
            reflect,
        )?;
        Ok(Self {
            conv_in,
            lstm,
            stages,
            conv_out,
        })
    }

    pub fn forward(&self, x: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let x = self.conv_in.forward(x, cursor, false)?;
        let mut x = self.lstm.forward(&x, cursor)?;
        for stage in &self.stages {
            x = stage.up.forward(&x.elu(1.0)?, cursor)?;
            x = run_blocks(&stage.blocks, x, cursor, false)?;
        }
        self.conv_out.forward(&x.elu(1.0)?, cursor, false)
    }
}
