//! The codec model: load from a model directory (or a Kyutai Mimi checkpoint, or a Hugging Face
//! EnCodec directory), encode, decode,
//! and their streaming forms.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use speechinfer_core::config::read_config;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};
use speechinfer_kernels::codec::CodecDecoderWeights;

use crate::config::CodecConfig;
use crate::encodec::{is_encodec_dir, Encodec, EncodecConfig};
use crate::mimi::{is_mimi_checkpoint, mimi_codebooks_in, Mimi, MimiConfig};
use crate::rvq::ResidualVq;
use crate::seanet::{Decoder, Encoder};
use crate::state::{Cursor, StreamState};

/// Which architecture and checkpoint layout a codec was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecFormat {
    /// A speechinfer model directory (`config.json` + `model.safetensors`, `docs/codec.md`).
    Native,
    /// A Kyutai Mimi `.safetensors` file (the `moshi` / `rustymimi` layout).
    Mimi,
    /// A Hugging Face `EncodecModel` directory (`config.json` with `model_type: "encodec"`).
    Encodec,
}

impl CodecFormat {
    pub fn name(self) -> &'static str {
        match self {
            CodecFormat::Native => "speechinfer",
            CodecFormat::Mimi => "mimi",
            CodecFormat::Encodec => "encodec",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "speechinfer" | "native" => Ok(CodecFormat::Native),
            "mimi" => Ok(CodecFormat::Mimi),
            "encodec" => Ok(CodecFormat::Encodec),
            other => Err(Error::input(format!(
                "unknown codec format '{other}': expected 'speechinfer', 'mimi' or 'encodec'"
            ))),
        }
    }
}

/// How a codec holds its conv and linear weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodecWeights {
    /// As the checkpoint has them, in f32.
    #[default]
    F32,
    /// Rounded to bfloat16; streaming steps stream the bf16 copies (Mimi only, see
    /// `Mimi::round_to_bf16`).
    Bf16,
}

impl CodecWeights {
    pub fn name(self) -> &'static str {
        match self {
            CodecWeights::F32 => "float32",
            CodecWeights::Bf16 => "bf16",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "f32" | "float32" => Ok(CodecWeights::F32),
            "bf16" | "bfloat16" => Ok(CodecWeights::Bf16),
            other => Err(Error::input(format!(
                "weights must be 'float32' or 'bf16', got '{other}'"
            ))),
        }
    }
}

/// Options of [`Codec::load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `None`: a directory is an EnCodec model when its `config.json` says `model_type:
    /// "encodec"`, else a speechinfer model; a file is detected from its tensor names.
    pub format: Option<CodecFormat>,
    /// Mimi: codebooks to use (default 8, at most what the file holds). EnCodec: one of the
    /// counts its `target_bandwidths` give (default the largest). Not for speechinfer models.
    pub num_codebooks: Option<usize>,
    /// bfloat16 weights are for Mimi checkpoints only.
    pub weights: CodecWeights,
}

struct Native {
    config: CodecConfig,
    encoder: Encoder,
    quantizer: ResidualVq,
    decoder: Decoder,
}

/// Long calls run as a stream of chunks of about this many samples per batch item. Every model
/// here is causal with carried state, so the result is the same as one whole call, but a layer's
/// input and output stay in the L3 cache and the allocator reuses its buffers: a whole 10 s Mimi
/// decode took 1.0 s, in chunks of 49152 samples 0.71 s, of 24576 0.55 s (38400 and up cross
/// the 32 MB L3 of the 2-core machine and are slower again; encoding is flat from 24k to 128k).
const CHUNK_SAMPLES: usize = 24576;

enum Backend {
    Native(Box<Native>),
    Mimi(Box<Mimi>),
    Encodec(Box<Encodec>),
}

pub struct Codec {
    backend: Backend,
    device: Device,
    weights: CodecWeights,
}

impl Codec {
    /// Load `dir/config.json` and `dir/model.safetensors`, or a Mimi `.safetensors` file
    /// (with 8 codebooks); see [`Codec::load_with`].
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Load a speechinfer model directory or a Kyutai Mimi `.safetensors` file.
    pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Self> {
        let device = Device::Cpu;
        let format = match options.format {
            Some(format) => format,
            None if path.is_file() => {
                if !is_mimi_checkpoint(path)? {
                    return Err(Error::checkpoint(format!(
                        "{} is a file, but not a Kyutai Mimi checkpoint (no 'quantizer.rvq_first.*' \
                         tensors); pass a speechinfer model directory or a Mimi .safetensors file",
                        path.display()
                    )));
                }
                CodecFormat::Mimi
            }
            None if is_encodec_dir(path) => CodecFormat::Encodec,
            None => CodecFormat::Native,
        };
        if options.weights == CodecWeights::Bf16 && format != CodecFormat::Mimi {
            return Err(Error::input(format!(
                "weights='bf16' applies to Mimi checkpoints only, not to a {} codec",
                format.name()
            )));
        }
        match format {
            CodecFormat::Native => {
                if let Some(q) = options.num_codebooks {
                    return Err(Error::input(format!(
                        "num_codebooks={q} applies to Mimi checkpoints only (and to Hugging Face \
                         EnCodec models); a speechinfer model directory always uses the \
                         codebooks its config.json names"
                    )));
                }
                let config: CodecConfig = read_config(path, CodecConfig::REQUIRED_KEYS)?;
                let ckpt = Checkpoint::load_model_dir(path, &device)?;
                Self::from_checkpoint(config, ckpt, device)
            }
            CodecFormat::Mimi => {
                if !path.is_file() {
                    return Err(Error::checkpoint(format!(
                        "{} is not a file: a Mimi checkpoint is a single .safetensors file",
                        path.display()
                    )));
                }
                let q = options
                    .num_codebooks
                    .unwrap_or(MimiConfig::DEFAULT_NUM_CODEBOOKS);
                // Reject an impossible request before reading hundreds of MB.
                MimiConfig::new(q, mimi_codebooks_in(path)?)?;
                let mut mimi = Mimi::load(path, q, &device)?;
                if options.weights == CodecWeights::Bf16 {
                    mimi.round_to_bf16()?;
                }
                Ok(Self {
                    backend: Backend::Mimi(Box::new(mimi)),
                    device,
                    weights: options.weights,
                })
            }
            CodecFormat::Encodec => {
                let encodec = Encodec::load(path, options.num_codebooks, &device)?;
                Ok(Self {
                    backend: Backend::Encodec(Box::new(encodec)),
                    device,
                    weights: CodecWeights::F32,
                })
            }
        }
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
            backend: Backend::Native(Box::new(Native {
                config,
                encoder,
                quantizer,
                decoder,
            })),
            device,
            weights: CodecWeights::F32,
        })
    }

    /// A Mimi codec from a checkpoint with Mimi's tensor names, using `num_codebooks`.
    pub fn mimi_from_checkpoint(
        ckpt: Checkpoint,
        num_codebooks: usize,
        device: Device,
    ) -> Result<Self> {
        Self::mimi_from_checkpoint_with(ckpt, num_codebooks, CodecWeights::F32, device)
    }

    /// [`Codec::mimi_from_checkpoint`] holding its weights as `weights` says.
    pub fn mimi_from_checkpoint_with(
        ckpt: Checkpoint,
        num_codebooks: usize,
        weights: CodecWeights,
        device: Device,
    ) -> Result<Self> {
        let mut mimi = Mimi::from_checkpoint(ckpt, num_codebooks)?;
        if weights == CodecWeights::Bf16 {
            mimi.round_to_bf16()?;
        }
        Ok(Self {
            backend: Backend::Mimi(Box::new(mimi)),
            device,
            weights,
        })
    }

    /// How this codec holds its weights.
    pub fn weights(&self) -> CodecWeights {
        self.weights
    }

    pub fn format(&self) -> CodecFormat {
        match &self.backend {
            Backend::Native(_) => CodecFormat::Native,
            Backend::Mimi(_) => CodecFormat::Mimi,
            Backend::Encodec(_) => CodecFormat::Encodec,
        }
    }

    /// The `config.json` of a native codec (`None` for Mimi: see [`Codec::mimi_config`]).
    pub fn config(&self) -> Option<&CodecConfig> {
        match &self.backend {
            Backend::Native(n) => Some(&n.config),
            Backend::Mimi(_) | Backend::Encodec(_) => None,
        }
    }

    pub fn encodec_config(&self) -> Option<&EncodecConfig> {
        match &self.backend {
            Backend::Encodec(e) => Some(e.config()),
            _ => None,
        }
    }

    pub fn mimi_config(&self) -> Option<&MimiConfig> {
        match &self.backend {
            Backend::Native(_) | Backend::Encodec(_) => None,
            Backend::Mimi(m) => Some(m.config()),
        }
    }

    /// The config as JSON (a native `config.json`, or Mimi's fixed architecture).
    pub fn config_json(&self) -> String {
        match &self.backend {
            Backend::Native(n) => serde_json::to_string(&n.config),
            Backend::Mimi(m) => serde_json::to_string(m.config()),
            Backend::Encodec(e) => serde_json::to_string(e.config()),
        }
        .unwrap_or_default()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn sample_rate(&self) -> usize {
        match &self.backend {
            Backend::Native(n) => n.config.sample_rate,
            Backend::Mimi(m) => m.config().sample_rate,
            Backend::Encodec(e) => e.config().sample_rate,
        }
    }

    pub fn channels(&self) -> usize {
        match &self.backend {
            Backend::Native(n) => n.config.channels,
            Backend::Mimi(m) => m.config().channels,
            Backend::Encodec(e) => e.config().channels,
        }
    }

    /// Codebooks produced by `encode`; `decode` accepts up to this many.
    pub fn num_codebooks(&self) -> usize {
        match &self.backend {
            Backend::Native(n) => n.config.num_codebooks,
            Backend::Mimi(m) => m.config().num_codebooks,
            Backend::Encodec(e) => e.config().num_codebooks,
        }
    }

    pub fn codebook_size(&self) -> usize {
        match &self.backend {
            Backend::Native(n) => n.config.codebook_size,
            Backend::Mimi(m) => m.config().codebook_size,
            Backend::Encodec(e) => e.config().codebook_size,
        }
    }

    /// Samples per code frame.
    pub fn hop_length(&self) -> usize {
        match &self.backend {
            Backend::Native(n) => n.config.hop_length(),
            Backend::Mimi(m) => m.config().hop_length(),
            Backend::Encodec(e) => e.config().hop_length(),
        }
    }

    /// Code frames per second.
    pub fn frame_rate(&self) -> f64 {
        self.sample_rate() as f64 / self.hop_length() as f64
    }

    /// Frames per chunk when a long call runs as a stream of chunks (see `CHUNK_SAMPLES`).
    fn chunk_frames(&self, batch: usize) -> usize {
        (CHUNK_SAMPLES / (self.hop_length() * batch.max(1))).max(1)
    }

    /// Whole frames of audio `[B, C, n·hop]` → codes `[B, Q, n]`, the convs in chunks.
    fn encode_frames(&self, wave: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let chunk = self.chunk_frames(wave.dim(0)?) * self.hop_length();
        match &self.backend {
            Backend::Native(n) => {
                n.quantizer
                    .encode(&cursor.in_chunks(wave, chunk, |c, cur| n.encoder.forward(c, cur))?)
            }
            Backend::Mimi(m) => m.encode_frames(wave, cursor, chunk),
            Backend::Encodec(e) => e.encode_frames(wave, cursor, chunk),
        }
    }

    /// Checked codes `[B, q, n]` → audio `[B, C, n·hop]`, the convs in chunks.
    fn decode_frames(&self, codes: &Tensor, cursor: &mut Cursor) -> Result<Tensor> {
        let chunk = self.chunk_frames(codes.dim(0)?);
        match &self.backend {
            Backend::Native(n) => cursor.in_chunks(&n.quantizer.decode(codes)?, chunk, |c, cur| {
                n.decoder.forward(c, cur)
            }),
            Backend::Mimi(m) => m.decode_frames(codes, cursor, chunk),
            Backend::Encodec(e) => e.decode_frames(codes, cursor, chunk),
        }
    }

    /// The decoder (codebooks and every conv) in the kernels' layout: what the reference and
    /// CUDA codec decodes run. Native codecs only.
    pub fn decoder_weights(&self) -> Result<CodecDecoderWeights> {
        let Backend::Native(n) = &self.backend else {
            return Err(Error::input(format!(
                "the kernels' codec decode covers speechinfer codecs, not {}",
                self.format().name()
            )));
        };
        let weights = CodecDecoderWeights {
            dimension: n.config.dimension,
            codebook_size: n.config.codebook_size,
            codebooks: n.quantizer.stacked_codebooks()?,
            layers: n.decoder.export()?,
        };
        weights
            .validate()
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(weights)
    }

    /// Waveform `[B, channels, T]` (f32) → codes `[B, Q, ceil(T / hop)]` (i64).
    pub fn encode(&self, wave: &Tensor) -> Result<Tensor> {
        let (_, _, t) = self.check_wave(wave)?;
        if t == 0 {
            return Err(Error::input("cannot encode an empty waveform (0 samples)"));
        }
        if let Backend::Encodec(e) = &self.backend {
            // HF pads a length off the frame grid by reflection inside each strided conv.
            return e.encode(wave);
        }
        let padded = pad_to_multiple(wave, self.hop_length())?;
        let mut state = StreamState::new(wave.dim(0)?);
        self.encode_frames(&padded, &mut state.cursor())
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
        self.decode_frames(codes, &mut state.cursor())
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
            let q = self.num_codebooks();
            return Ok(Tensor::zeros((b, q, 0), DType::I64, &self.device)?);
        }
        self.encode_frames(&joined.narrow(2, 0, whole)?, &mut state.cursor())
    }

    fn check_wave(&self, wave: &Tensor) -> Result<(usize, usize, usize)> {
        let (b, c, t) = wave.dims3().map_err(|_| {
            Error::input(format!(
                "wave must have shape [batch, channels, samples], got {:?}",
                wave.dims()
            ))
        })?;
        if c != self.channels() {
            return Err(Error::input(format!(
                "wave has {c} channel(s), the codec expects {}",
                self.channels()
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
        let max_q = self.num_codebooks();
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
        let size = self.codebook_size() as i64;
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
