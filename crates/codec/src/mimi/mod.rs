//! Kyutai's Mimi codec, served straight from its single-file `tokenizer-….safetensors` (the
//! layout of the PyTorch `moshi` package and `rustymimi`): SEANet encoder → transformer →
//! stride-2 conv (25 → 12.5 Hz) → split RVQ, and back through a depthwise transposed conv,
//! a transformer and the SEANet decoder. Everything is causal, so it streams frame by frame with
//! the same [`StreamState`](crate::StreamState) as the native codec.

mod quantizer;
mod resample;
mod seanet;
mod transformer;

use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::state::Cursor;
use quantizer::SplitRvq;
use resample::{Downsample, Upsample};
use seanet::{Decoder, Encoder};
use transformer::Transformer;

/// Names that mark a Mimi checkpoint.
const MARKER: &str = "quantizer.rvq_first.";
const REST_LAYERS: &str = "quantizer.rvq_rest.vq.layers.";

/// The released Mimi architecture (`moshi.models.loaders._mimi_config`); only the number of
/// codebooks varies. Serialized as the codec's `config_json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MimiConfig {
    pub model_type: String,
    pub sample_rate: usize,
    pub channels: usize,
    pub frame_rate: f64,
    /// SEANet.
    pub n_filters: usize,
    pub ratios: Vec<usize>,
    pub kernel_size: usize,
    pub residual_kernel_size: usize,
    pub last_kernel_size: usize,
    pub n_residual_layers: usize,
    pub dilation_base: usize,
    pub compress: usize,
    pub dimension: usize,
    /// Transformers (encoder and decoder alike).
    pub num_heads: usize,
    pub num_layers: usize,
    pub dim_feedforward: usize,
    pub context: usize,
    pub max_period: f64,
    pub norm_eps: f64,
    /// 25 Hz ↔ 12.5 Hz.
    pub resample_stride: usize,
    /// Split RVQ.
    pub codebook_dim: usize,
    pub codebook_size: usize,
    pub num_semantic_codebooks: usize,
    /// Codebooks used by `encode` (and the most `decode` accepts).
    pub num_codebooks: usize,
    /// Codebooks held by the checkpoint.
    pub total_codebooks: usize,
}

impl MimiConfig {
    pub const MODEL_TYPE: &'static str = "mimi";
    pub const DEFAULT_NUM_CODEBOOKS: usize = 8;

    /// The released config with `num_codebooks` active out of `total_codebooks`.
    pub fn new(num_codebooks: usize, total_codebooks: usize) -> Result<Self> {
        if num_codebooks == 0 || num_codebooks > total_codebooks {
            return Err(Error::input(format!(
                "num_codebooks must be between 1 and {total_codebooks} (the codebooks this Mimi \
                 checkpoint holds), got {num_codebooks}"
            )));
        }
        Ok(Self {
            model_type: Self::MODEL_TYPE.to_string(),
            sample_rate: 24000,
            channels: 1,
            frame_rate: 12.5,
            n_filters: 64,
            ratios: vec![8, 6, 5, 4],
            kernel_size: 7,
            residual_kernel_size: 3,
            last_kernel_size: 3,
            n_residual_layers: 1,
            dilation_base: 2,
            compress: 2,
            dimension: 512,
            num_heads: 8,
            num_layers: 8,
            dim_feedforward: 2048,
            context: 250,
            max_period: 10000.0,
            norm_eps: 1e-5,
            resample_stride: 2,
            codebook_dim: 256,
            codebook_size: 2048,
            num_semantic_codebooks: 1,
            num_codebooks,
            total_codebooks,
        })
    }

    /// Samples per SEANet step (25 Hz).
    pub fn seanet_hop(&self) -> usize {
        self.ratios.iter().product()
    }

    /// Samples per code frame (12.5 Hz): 1920.
    pub fn hop_length(&self) -> usize {
        self.seanet_hop() * self.resample_stride
    }
}

/// Whether the safetensors file at `path` holds a Mimi checkpoint (reads only its header).
pub fn is_mimi_checkpoint(path: &Path) -> Result<bool> {
    Ok(tensor_names(path)?.iter().any(|n| n.starts_with(MARKER)))
}

/// Codebooks held by the Mimi file at `path` (reads only its header).
pub fn mimi_codebooks_in(path: &Path) -> Result<usize> {
    let names = tensor_names(path)?;
    Ok(1 + rest_layers(names.iter().map(String::as_str)))
}

/// The tensor names in a safetensors header.
fn tensor_names(path: &Path) -> Result<Vec<String>> {
    let bad = |why: String| {
        Error::checkpoint(format!(
            "{} is not a valid safetensors file: {why}",
            path.display()
        ))
    };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| bad(format!("cannot read its header length ({e})")))?;
    let len = u64::from_le_bytes(len);
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > size.saturating_sub(8) || len > 100_000_000 {
        return Err(bad(format!("header length {len} exceeds the file")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("truncated header ({e})")))?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON ({e})")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    Ok(object
        .keys()
        .filter(|k| k.as_str() != "__metadata__")
        .cloned()
        .collect())
}

/// A conv weight of `shape`, from `{prefix}.weight` or folded from a weight-norm pair
/// (`weight_g`/`weight_v`, or torch's `parametrizations.weight.original0/1`):
/// `weight = g · v / ‖v‖`, the norm taken over every dim but the first.
pub(crate) fn take_weight(ckpt: &mut Checkpoint, prefix: &str, shape: &[usize]) -> Result<Tensor> {
    let plain = format!("{prefix}.weight");
    let pairs = [
        (format!("{prefix}.weight_g"), format!("{prefix}.weight_v")),
        (
            format!("{prefix}.parametrizations.weight.original0"),
            format!("{prefix}.parametrizations.weight.original1"),
        ),
    ];
    if !ckpt.contains(&plain) {
        for (g_name, v_name) in &pairs {
            if ckpt.contains(g_name) && ckpt.contains(v_name) {
                let v = ckpt.take(v_name, shape)?;
                let mut g_shape = vec![1; shape.len()];
                g_shape[0] = shape[0];
                let g = ckpt.take(g_name, &g_shape)?;
                let norm = v.sqr()?.flatten_from(1)?.sum_keepdim(1)?.sqrt()?;
                let norm = norm.reshape(g_shape.as_slice())?;
                return Ok(v.broadcast_mul(&g.broadcast_div(&norm)?)?);
            }
        }
    }
    ckpt.take(&plain, shape)
}

/// The Mimi model: every stage of encode and decode.
pub struct Mimi {
    config: MimiConfig,
    encoder: Encoder,
    encoder_transformer: Transformer,
    downsample: Downsample,
    quantizer: SplitRvq,
    upsample: Upsample,
    decoder_transformer: Transformer,
    decoder: Decoder,
}

impl Mimi {
    /// Load a Mimi `.safetensors` file, using its first `num_codebooks` codebooks.
    pub fn load(path: &Path, num_codebooks: usize, device: &Device) -> Result<Self> {
        let ckpt = Checkpoint::load(path, device)?;
        Self::from_checkpoint(ckpt, num_codebooks)
    }

    /// Build from a checkpoint with Mimi's tensor names; every tensor must be used.
    pub fn from_checkpoint(mut ckpt: Checkpoint, num_codebooks: usize) -> Result<Self> {
        let rest = rest_layers(ckpt.names());
        let config = MimiConfig::new(num_codebooks, 1 + rest)?;
        let encoder = Encoder::load(&mut ckpt, &config)?;
        let encoder_transformer = Transformer::load(&mut ckpt, "encoder_transformer", &config)?;
        let downsample = Downsample::load(&mut ckpt, &config)?;
        let quantizer = SplitRvq::load(&mut ckpt, &config)?;
        let upsample = Upsample::load(&mut ckpt, &config)?;
        let decoder_transformer = Transformer::load(&mut ckpt, "decoder_transformer", &config)?;
        let decoder = Decoder::load(&mut ckpt, &config)?;
        ckpt.finish()?;
        Ok(Self {
            config,
            encoder,
            encoder_transformer,
            downsample,
            quantizer,
            upsample,
            decoder_transformer,
            decoder,
        })
    }

    pub fn config(&self) -> &MimiConfig {
        &self.config
    }

    /// Rounds the conv and linear weights of the SEANets, transformers and downsampling to
    /// bfloat16 (biases, norms, layer scales, codebooks and the small depthwise upsampling stay
    /// f32). Whole calls multiply the rounded values in f32; streaming steps read the bf16
    /// copies, half the bytes of the weights a step streams.
    pub fn round_to_bf16(&mut self) -> Result<()> {
        self.encoder.round_to_bf16()?;
        self.encoder_transformer.round_to_bf16()?;
        self.downsample.round_to_bf16()?;
        self.decoder_transformer.round_to_bf16()?;
        self.decoder.round_to_bf16()
    }

    /// Wave `[B, 1, n·hop]` → codes `[B, Q, n]` (i64), carrying state through `cursor`. The
    /// SEANet runs in chunks of `chunk_samples` (a multiple of the hop); the transformer, the
    /// resampling and the quantizer see all frames at once (their weights are read once).
    pub(crate) fn encode_frames(
        &self,
        wave: &Tensor,
        cursor: &mut Cursor,
        chunk_samples: usize,
    ) -> Result<Tensor> {
        let x = cursor.in_chunks(wave, chunk_samples, |c, cur| self.encoder.forward(c, cur))?;
        let x = self.encoder_transformer.forward(&x, cursor)?;
        let x = self.downsample.forward(&x, cursor)?;
        self.quantizer.encode(&x)
    }

    /// Codes `[B, q, n]` (range-checked, q ≤ Q) → wave `[B, 1, n·hop]`; the SEANet runs in
    /// chunks of `chunk_frames` code frames, the rest on all frames at once.
    pub(crate) fn decode_frames(
        &self,
        codes: &Tensor,
        cursor: &mut Cursor,
        chunk_frames: usize,
    ) -> Result<Tensor> {
        let x = self.quantizer.decode(codes)?;
        let x = self.upsample.forward(&x, cursor)?;
        let x = self.decoder_transformer.forward(&x, cursor)?;
        let step = chunk_frames.saturating_mul(self.config.resample_stride);
        cursor.in_chunks(&x, step, |c, cur| self.decoder.forward(c, cur))
    }
}

/// Number of `rvq_rest` codebooks: one past the highest layer index named (31 in the release).
/// A checkpoint naming none (a random one, or a broken file whose loading then names the first
/// missing tensor) counts as the release's 31.
fn rest_layers<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names
        .filter_map(|n| n.strip_prefix(REST_LAYERS))
        .filter_map(|n| n.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(31, |i| i + 1)
}

#[cfg(test)]
mod tests;
