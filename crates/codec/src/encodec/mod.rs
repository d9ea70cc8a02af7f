//! Hugging Face EnCodec (`transformers.EncodecModel`, the 24 kHz architecture), served from a
//! model directory as `save_pretrained` writes it: `config.json` (`model_type: "encodec"`) and
//! `model.safetensors` under HF's tensor names. SEANet encoder (with a 2-layer LSTM) → residual
//! VQ → codes, and back through the SEANet decoder. Every conv is causal, so it streams with the
//! same [`StreamState`](crate::StreamState) as the other backends; see `docs/codec.md` for where
//! streaming and batch differ (HF's reflect padding at the start of a stream).

mod config;
mod conv;
mod lstm;
mod quantizer;
mod seanet;

use std::path::Path;

use candle_core::{Device, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::rvq::ResidualVq;
use crate::state::{Cursor, StreamState};
pub use config::EncodecConfig;
use seanet::{Decoder, Encoder};

/// Whether `dir/config.json` names `model_type: "encodec"` (false when unreadable).
pub fn is_encodec_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(speechinfer_core::config::CONFIG_FILE)) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("model_type")?.as_str().map(|s| s == "encodec"))
        .unwrap_or(false)
}

/// The EnCodec model: encoder, quantizer and decoder.
pub struct Encodec {
    config: EncodecConfig,
    encoder: Encoder,
    quantizer: ResidualVq,
    decoder: Decoder,
}

impl Encodec {
    /// Load a `save_pretrained` directory, using `num_codebooks` codebooks (one of the counts the
    /// config's `target_bandwidths` give; `None`: the largest).
    pub fn load(dir: &Path, num_codebooks: Option<usize>, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::config(format!(
                "{} is not a model directory",
                dir.display()
            )));
        }
        let path = dir.join(speechinfer_core::config::CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        let config = EncodecConfig::parse(&text, num_codebooks)
            .map_err(|e| prefix_error(e, &path.display().to_string()))?;
        let ckpt = Checkpoint::load_model_dir(dir, device)?;
        Self::from_checkpoint(config, ckpt)
    }

    /// Build from a parsed config and a checkpoint with HF's names; every tensor must be used.
    pub fn from_checkpoint(config: EncodecConfig, mut ckpt: Checkpoint) -> Result<Self> {
        let encoder = Encoder::load(&mut ckpt, &config)?;
        let decoder = Decoder::load(&mut ckpt, &config)?;
        let quantizer = quantizer::load(&mut ckpt, &config)?;
        ckpt.finish()?;
        Ok(Self {
            config,
            encoder,
            quantizer,
            decoder,
        })
    }

    pub fn config(&self) -> &EncodecConfig {
        &self.config
    }

    /// A whole waveform `[B, C, T]` (any T ≥ 1) → codes `[B, Q, ceil(T / hop)]`, exactly as
    /// `EncodecModel.encode`: a T that is not a multiple of a strided conv's stride is padded on
    /// the right by reflection (HF's `_get_extra_padding_for_conv1d`), not with zeros.
    pub(crate) fn encode(&self, wave: &Tensor) -> Result<Tensor> {
        let mut state = StreamState::new(wave.dim(0)?);
        let latent = self.encoder.forward(wave, &mut state.cursor(), true)?;
        self.quantizer.encode(&latent)
    }

    /// Whole frames `[B, C, n·hop]` → codes `[B, Q, n]`, carrying state through `cursor`; the
    /// encoder runs in chunks of `chunk_samples` (a multiple of the hop).
    pub(crate) fn encode_frames(
        &self,
        wave: &Tensor,
        cursor: &mut Cursor,
        chunk_samples: usize,
    ) -> Result<Tensor> {
        let latent = cursor.in_chunks(wave, chunk_samples, |c, cur| {
            self.encoder.forward(c, cur, false)
        })?;
        self.quantizer.encode(&latent)
    }

    /// Codes `[B, q, n]` (range-checked, q ≤ Q) → wave `[B, C, n·hop]`; the decoder runs in
    /// chunks of `chunk_frames`.
    pub(crate) fn decode_frames(
        &self,
        codes: &Tensor,
        cursor: &mut Cursor,
        chunk_frames: usize,
    ) -> Result<Tensor> {
        let latent = self.quantizer.decode(codes)?;
        cursor.in_chunks(&latent, chunk_frames, |c, cur| self.decoder.forward(c, cur))
    }
}

fn prefix_error(e: Error, prefix: &str) -> Error {
    match e {
        Error::Config(msg) => Error::config(format!("{prefix}: {msg}")),
        Error::Input(msg) => Error::input(format!("{prefix}: {msg}")),
        other => other,
    }
}

#[cfg(test)]
mod tests;
