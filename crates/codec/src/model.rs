//! The codec model: load from a model directory, encode, decode, and their streaming forms.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use speechinfer_core::config::read_config;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::config::CodecConfig;
use crate::rvq::ResidualVq;
use crate::seanet::{Decoder, Encoder};
use crate::state::StreamState;

pub struct Codec {
    config: CodecConfig,
    encoder: Encoder,
    quantizer: ResidualVq,
    decoder: Decoder,
    device: Device,
}

impl Codec {
    /// Load `dir/config.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config: CodecConfig = read_config(dir, CodecConfig::REQUIRED_KEYS)?;
        let device = Device::Cpu;
        let ckpt = Checkpoint::load_model_dir(dir, &device)?;
        Self::from_checkpoint(config, ckpt, device)
    }

    /// Build from an already-read config and checkpoint; every tensor must be used.
    pub fn from_checkpoint(
        config: CodecConfig,
        mut ckpt: Checkpoint,
        device: Device,
    ) -> Result<Self> {
        config.validate()?;
        let encoder = Encoder::load(&mut ckpt, &config)?;
        let quantizer = ResidualVq::load(&mut ckpt, &config)?;
        let decoder = Decoder::load(&mut ckpt, &config)?;
        ckpt.finish()?;
        Ok(Self {
            config,
            encoder,
            quantizer,
            decoder,
            device,
        })
    }

    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn hop_length(&self) -> usize {
        self.config.hop_length()
    }

    /// Waveform `[B, channels, T]` (f32) → codes `[B, Q, ceil(T / hop)]` (i64).
    pub fn encode(&self, wave: &Tensor) -> Result<Tensor> {
        let (_, _, t) = self.check_wave(wave)?;
        if t == 0 {
            return Err(Error::input("cannot encode an empty waveform (0 samples)"));
        }
        let padded = pad_to_multiple(wave, self.hop_length())?;
        let mut state = StreamState::new(wave.dim(0)?);
        let latent = self.encoder.forward(&padded, &mut state.cursor())?;
        self.quantizer.encode(&latent)
    }

    /// Codes `[B, q, F]` with q ≤ Q (any integer dtype) → waveform `[B, channels, F * hop]`.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let mut state = StreamState::new(codes.dims().first().copied().unwrap_or(0));
        self.decode_step(&mut state, codes)
    }

    /// Decode the next frames of a stream: returns exactly `F * hop` samples per stream.
    pub fn decode_step(&self, state: &mut StreamState, codes: &Tensor) -> Result<Tensor> {
        self.check_codes(codes)?;
        state.check_batch(codes.dim(0)?, "codes")?;
        let latent = self.quantizer.decode(codes)?;
        self.decoder.forward(&latent, &mut state.cursor())
    }

    /// Encode the next samples of a stream: returns the codes of every frame completed so far
    /// (`[B, Q, n]`, possibly n = 0); samples short of a whole frame wait for the next call.
    pub fn encode_step(&self, state: &mut StreamState, wave: &Tensor) -> Result<Tensor> {
        let (b, _, _) = self.check_wave(wave)?;
        state.check_batch(b, "wave")?;
        let joined = match state.pending.take() {
            Some(pending) => Tensor::cat(&[&pending, wave], 2)?,
            None => wave.clone(),
        };
        let hop = self.hop_length();
        let total = joined.dim(2)?;
        let whole = total / hop * hop;
        if whole < total {
            state.pending = Some(joined.narrow(2, whole, total - whole)?.contiguous()?);
        }
        if whole == 0 {
            let q = self.config.num_codebooks;
            return Ok(Tensor::zeros((b, q, 0), DType::I64, &self.device)?);
        }
        let ready = joined.narrow(2, 0, whole)?;
        let latent = self.encoder.forward(&ready, &mut state.cursor())?;
        self.quantizer.encode(&latent)
    }

    fn check_wave(&self, wave: &Tensor) -> Result<(usize, usize, usize)> {
        let (b, c, t) = wave.dims3().map_err(|_| {
            Error::input(format!(
                "wave must have shape [batch, channels, samples], got {:?}",
                wave.dims()
            ))
        })?;
        if c != self.config.channels {
            return Err(Error::input(format!(
                "wave has {c} channel(s), the codec expects {}",
                self.config.channels
            )));
        }
        if b == 0 {
            return Err(Error::input("wave has batch size 0"));
        }
        if wave.dtype() != DType::F32 {
            return Err(Error::input(format!(
                "wave must be float32, got {:?}",
                wave.dtype()
            )));
        }
        Ok((b, c, t))
    }

    fn check_codes(&self, codes: &Tensor) -> Result<()> {
        let (b, q, f) = codes.dims3().map_err(|_| {
            Error::input(format!(
                "codes must have shape [batch, codebooks, frames], got {:?}",
                codes.dims()
            ))
        })?;
        let max_q = self.config.num_codebooks;
        if b == 0 || q == 0 || f == 0 {
            return Err(Error::input(format!(
                "codes must not be empty, got shape [{b}, {q}, {f}]"
            )));
        }
        if q > max_q {
            return Err(Error::input(format!(
                "codes hold {q} codebooks, but the codec has only {max_q}"
            )));
        }
        let values = codes.to_dtype(DType::I64)?.flatten_all()?;
        let lo = values.min(0)?.to_scalar::<i64>()?;
        let hi = values.max(0)?.to_scalar::<i64>()?;
        let size = self.config.codebook_size as i64;
        if lo < 0 || hi >= size {
            let bad = if lo < 0 { lo } else { hi };
            return Err(Error::input(format!(
                "code {bad} is out of range: codes must lie in [0, {size}) (codebook_size {size})"
            )));
        }
        Ok(())
    }
}

fn pad_to_multiple(wave: &Tensor, hop: usize) -> Result<Tensor> {
    let t = wave.dim(2)?;
    let rem = t % hop;
    if rem == 0 {
        return Ok(wave.clone());
    }
    Ok(wave.pad_with_zeros(2, 0, hop - rem)?)
}
