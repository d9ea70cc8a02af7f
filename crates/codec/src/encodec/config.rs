//! HF's `EncodecConfig` as `save_pretrained` writes it. Keys the engine does not need
//! (`architectures`, `dtype`, `transformers_version`, …) are ignored; a missing key takes
//! `EncodecConfig`'s default, as `from_pretrained` would. Values outside the 24 kHz architecture
//! (chunking, normalisation, group norm, non-causal convs) are refused, naming the key.

use serde::Serialize;
use serde_json::{Map, Value};
use speechinfer_core::{Error, Result};

/// The served architecture; serialized as the codec's `config_json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncodecConfig {
    pub model_type: String,
    pub sample_rate: usize,
    pub channels: usize,
    pub target_bandwidths: Vec<f64>,
    pub hidden_size: usize,
    pub num_filters: usize,
    pub num_residual_layers: usize,
    /// Decoder order; the encoder applies them reversed.
    pub upsampling_ratios: Vec<usize>,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    /// `"reflect"` (the release) or `"constant"` (zeros).
    pub pad_mode: String,
    pub compress: usize,
    pub num_lstm_layers: usize,
    pub codebook_size: usize,
    pub use_conv_shortcut: bool,
    /// Codebooks the checkpoint holds (HF's `num_quantizers`, for the largest bandwidth).
    pub total_codebooks: usize,
    /// Codebooks used by `encode` (and the most `decode` accepts).
    pub num_codebooks: usize,
}

fn bad(key: &str, value: &Value, why: &str) -> Error {
    Error::config(format!("key '{key}' = {value}: {why}"))
}

struct Keys<'a>(&'a Map<String, Value>);

impl Keys<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n < (1 << 31) => Ok(n as usize),
                _ => Err(bad(key, v, "expected a positive integer")),
            },
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| bad(key, v, "expected true or false")),
        }
    }

    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| bad(key, v, "expected a number")),
        }
    }

    fn str(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(key, v, "expected a string")),
        }
    }

    fn list<T>(
        &self,
        key: &str,
        default: Vec<T>,
        item: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                let items: Option<Vec<T>> =
                    v.as_array().and_then(|a| a.iter().map(&item).collect());
                match items {
                    Some(items) if !items.is_empty() => Ok(items),
                    _ => Err(bad(key, v, "expected a non-empty list of positive numbers")),
                }
            }
        }
    }
}

impl EncodecConfig {
    pub const MODEL_TYPE: &'static str = "encodec";

    /// Parse `config.json` text; `num_codebooks` must be a count that one of the
    /// `target_bandwidths` gives (`None`: the largest).
    pub fn parse(text: &str, num_codebooks: Option<usize>) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::config(format!("invalid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| Error::config("the config must be a JSON object"))?;
        let k = Keys(object);
        let model_type = k.str("model_type", "")?;
        if model_type != Self::MODEL_TYPE {
            return Err(Error::config(format!(
                "model_type is '{model_type}', expected '{}'",
                Self::MODEL_TYPE
            )));
        }
        // The 48 kHz model's chunked, normalised encoding and non-causal variants are refused.
        if let Some(v) = k.get("chunk_length_s") {
            return Err(bad(
                "chunk_length_s",
                v,
                "chunked encoding (the 48 kHz EnCodec) is not supported; only the causal 24 kHz \
                 architecture (chunk_length_s null) is served",
            ));
        }
        if k.bool("normalize", false)? {
            return Err(bad(
                "normalize",
                &Value::Bool(true),
                "per-chunk loudness normalisation (audio_scales) is not supported",
            ));
        }
        let norm_type = k.str("norm_type", "weight_norm")?;
        if norm_type != "weight_norm" {
            return Err(bad(
                "norm_type",
                &Value::String(norm_type),
                "only 'weight_norm' is supported",
            ));
        }
        if !k.bool("use_causal_conv", true)? {
            return Err(bad(
                "use_causal_conv",
                &Value::Bool(false),
                "only causal convolutions are supported",
            ));
        }
        let trim = k.f64("trim_right_ratio", 1.0)?;
        if trim != 1.0 {
            return Err(bad(
                "trim_right_ratio",
                &serde_json::json!(trim),
                "only 1.0 (causal transposed convs) is supported",
            ));
        }
        let pad_mode = k.str("pad_mode", "reflect")?;
        if pad_mode != "reflect" && pad_mode != "constant" {
            return Err(bad(
                "pad_mode",
                &Value::String(pad_mode),
                "only 'reflect' and 'constant' are supported",
            ));
        }
        let hidden_size = k.usize("hidden_size", 128)?;
        let codebook_dim = k.usize("codebook_dim", hidden_size)?;
        if codebook_dim != hidden_size {
            return Err(bad(
                "codebook_dim",
                &serde_json::json!(codebook_dim),
                &format!("must equal hidden_size ({hidden_size}): EnCodec has no VQ projection"),
            ));
        }
        let codebook_size = k.usize("codebook_size", 1024)?;
        if !codebook_size.is_power_of_two() {
            return Err(bad(
                "codebook_size",
                &serde_json::json!(codebook_size),
                "must be a power of 2",
            ));
        }
        let channels = k.usize("audio_channels", 1)?;
        if channels > 2 {
            return Err(bad(
                "audio_channels",
                &serde_json::json!(channels),
                "EnCodec takes 1 or 2 channels",
            ));
        }
        let num_filters = k.usize("num_filters", 32)?;
        let compress = k.usize("compress", 2)?;
        if num_filters / compress == 0 {
            return Err(bad(
                "compress",
                &serde_json::json!(compress),
                "leaves no hidden channels",
            ));
        }
        let mut config = Self {
            model_type,
            sample_rate: k.usize("sampling_rate", 24000)?,
            channels,
            target_bandwidths: k.list(
                "target_bandwidths",
                vec![1.5, 3.0, 6.0, 12.0, 24.0],
                |v| v.as_f64().filter(|x| *x > 0.0),
            )?,
            hidden_size,
            num_filters,
            num_residual_layers: k.usize("num_residual_layers", 1)?,
            upsampling_ratios: k.list("upsampling_ratios", vec![8, 5, 4, 2], |v| {
                v.as_u64()
                    .filter(|x| *x > 0 && *x < 1 << 16)
                    .map(|x| x as usize)
            })?,
            kernel_size: k.usize("kernel_size", 7)?,
            last_kernel_size: k.usize("last_kernel_size", 7)?,
            residual_kernel_size: k.usize("residual_kernel_size", 3)?,
            dilation_growth_rate: k.usize("dilation_growth_rate", 2)?,
            pad_mode,
            compress,
            num_lstm_layers: k.usize("num_lstm_layers", 2)?,
            codebook_size,
            use_conv_shortcut: k.bool("use_conv_shortcut", true)?,
            total_codebooks: 0,
            num_codebooks: 0,
        };
        let allowed = config.allowed_codebooks();
        config.total_codebooks = config.num_quantizers();
        if config.total_codebooks == 0 || allowed.iter().any(|&q| q > config.total_codebooks) {
            return Err(Error::config(format!(
                "target_bandwidths {:?} give no usable number of codebooks",
                config.target_bandwidths
            )));
        }
        let largest = allowed.iter().copied().max().unwrap_or(1);
        config.num_codebooks = match num_codebooks {
            None => largest,
            Some(q) if allowed.contains(&q) => q,
            Some(q) => {
                return Err(Error::input(format!(
                    "num_codebooks={q} is not allowed: this EnCodec's target_bandwidths {:?} kbps \
                     give {:?} codebooks",
                    config.target_bandwidths, allowed
                )))
            }
        };
        Ok(config)
    }

    /// Samples per code frame.
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// HF's integer `frame_rate`: `ceil(sampling_rate / hop)`.
    fn int_frame_rate(&self) -> f64 {
        self.sample_rate.div_ceil(self.hop_length()) as f64
    }

    /// HF's `num_quantizers`: the codebooks of the largest bandwidth, held by the checkpoint.
    fn num_quantizers(&self) -> usize {
        let bits = (self.codebook_size as f64).log2().ceil();
        let top = self.target_bandwidths.last().copied().unwrap_or(0.0);
        ((1000.0 * top) / (self.int_frame_rate() * bits)).floor() as usize
    }

    /// Codebooks per target bandwidth (`get_num_quantizers_for_bandwidth`).
    pub fn allowed_codebooks(&self) -> Vec<usize> {
        let per_q = (self.codebook_size as f64).log2() * self.int_frame_rate();
        self.target_bandwidths
            .iter()
            .map(|bw| ((bw * 1000.0 / per_q).floor() as usize).max(1))
            .collect()
    }
}
