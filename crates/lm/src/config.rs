//! The LM's `config.json`, every key defaulted as documented in `docs/lm.md`.

use serde::{Deserialize, Serialize};
use speechinfer_core::config::check_model_type_and_positive;
use speechinfer_core::pattern::PatternKind;
use speechinfer_core::{Error, Result};

use crate::transformer::Sizes;

pub const MODEL_TYPE: &str = "speechinfer-lm";

/// Largest vocabulary a stream may declare (token ids are u32 in the sampler).
const MAX_VOCAB: usize = 1 << 31;

/// What a stream of the grid carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Text,
    Audio,
    Speaker,
}

/// One row of the token grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub role: Role,
    pub vocab_size: usize,
    pub pad_id: Option<u32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub delay: usize,
    /// Id of the first text token inside this stream's vocabulary: tokenizer id `i` is stream id
    /// `i + text_offset` (`SpeechLm::tokenize`). Optional in `config.json`, default 0.
    #[serde(default)]
    pub text_offset: u32,
}

impl StreamConfig {
    fn audio(q: usize) -> Self {
        Self {
            name: format!("audio{q}"),
            role: Role::Audio,
            vocab_size: 1027,
            pad_id: Some(1025),
            bos_id: Some(1026),
            eos_id: Some(1024),
            delay: q,
            text_offset: 0,
        }
    }

    /// The token fed where the pattern places no frame (validated to exist).
    pub fn special_id(&self) -> i64 {
        self.bos_id.map_or(0, i64::from)
    }
}

/// Sizes of the depth transformer (`pattern: "depth"`, `docs/lm.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepthConfig {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn_dim: usize,
    pub per_position_proj: bool,
}

/// How the grid is decoded (`pattern` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    Parallel,
    Delay,
    Flatten,
    Depth,
    CoarseFirst,
}

impl Decoding {
    pub const NAMES: &'static str =
        "\"parallel\", \"delay\", \"flatten\", \"depth\" or \"coarse_first\"";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "parallel" => Self::Parallel,
            "delay" => Self::Delay,
            "flatten" => Self::Flatten,
            "depth" => Self::Depth,
            "coarse_first" => Self::CoarseFirst,
            _ => return None,
        })
    }

    /// Whether stream delays shift the layout.
    pub fn honours_delays(self) -> bool {
        matches!(self, Self::Delay | Self::Depth)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LmConfig {
    pub model_type: String,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn_dim: usize,
    pub rope_theta: f64,
    pub norm_eps: f64,
    pub max_context: usize,
    pub tie_embeddings: bool,
    pub streams: Vec<StreamConfig>,
    pub pattern: String,
    pub depth: Option<DepthConfig>,
    pub end_stream: usize,
}

impl Default for LmConfig {
    fn default() -> Self {
        Self {
            model_type: MODEL_TYPE.to_string(),
            d_model: 256,
            n_layers: 4,
            n_heads: 8,
            n_kv_heads: 4,
            ffn_dim: 704,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            max_context: 2048,
            tie_embeddings: false,
            streams: (0..4).map(StreamConfig::audio).collect(),
            pattern: "delay".to_string(),
            depth: None,
            end_stream: 0,
        }
    }
}

impl LmConfig {
    /// Keys a `config.json` must hold (everything that shapes the architecture).
    pub const REQUIRED_KEYS: &'static [&'static str] = &[
        "d_model",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "ffn_dim",
        "rope_theta",
        "norm_eps",
        "max_context",
        "tie_embeddings",
        "streams",
        "pattern",
    ];

    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    pub fn vocab_sizes(&self) -> Vec<usize> {
        self.streams.iter().map(|s| s.vocab_size).collect()
    }

    /// The special (bos) id of every stream, in stream order.
    pub fn special_ids(&self) -> Vec<i64> {
        self.streams.iter().map(StreamConfig::special_id).collect()
    }

    pub fn decoding(&self) -> Result<Decoding> {
        Decoding::parse(&self.pattern).ok_or_else(|| {
            Error::config(format!(
                "pattern '{}' is not supported; expected {}",
                self.pattern,
                Decoding::NAMES
            ))
        })
    }

    /// Streams the main transformer reads and predicts: all of them, except under
    /// `"coarse_first"` where the autoregressive model sees stream 0 only.
    pub fn main_streams(&self) -> usize {
        match self.decoding() {
            Ok(Decoding::CoarseFirst) => 1,
            _ => self.num_streams(),
        }
    }

    /// The main transformer's step layout kind (after [`LmConfig::validate`]).
    pub fn pattern_kind(&self) -> Result<PatternKind> {
        let delays = || self.streams.iter().map(|s| s.delay).collect();
        Ok(match self.decoding()? {
            Decoding::Parallel | Decoding::CoarseFirst => PatternKind::Parallel,
            Decoding::Delay | Decoding::Depth => PatternKind::delay(delays()),
            Decoding::Flatten => PatternKind::flatten(self.num_streams()),
        })
    }

    /// The main transformer's sizes.
    pub fn sizes(&self) -> Sizes {
        Sizes {
            d_model: self.d_model,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            ffn_dim: self.ffn_dim,
            rope_theta: self.rope_theta,
            norm_eps: self.norm_eps,
            max_positions: self.max_context,
        }
    }

    /// The depth transformer's sizes (its positions are the K streams of one step).
    pub fn depth_sizes(&self) -> Option<Sizes> {
        self.depth.as_ref().map(|d| Sizes {
            d_model: d.d_model,
            n_layers: d.n_layers,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            ffn_dim: d.ffn_dim,
            rope_theta: self.rope_theta,
            norm_eps: self.norm_eps,
            max_positions: self.num_streams(),
        })
    }

    pub fn validate(&self) -> Result<()> {
        check_model_type_and_positive(
            &self.model_type,
            MODEL_TYPE,
            &[
                ("d_model", self.d_model),
                ("n_layers", self.n_layers),
                ("n_heads", self.n_heads),
                ("n_kv_heads", self.n_kv_heads),
                ("ffn_dim", self.ffn_dim),
                ("max_context", self.max_context),
            ],
        )?;
        if !self.d_model.is_multiple_of(self.n_heads) || !self.head_dim().is_multiple_of(2) {
            return Err(Error::config(format!(
                "d_model {} must be n_heads {} times an even head_dim",
                self.d_model, self.n_heads
            )));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(Error::config(format!(
                "n_kv_heads {} must divide n_heads {}",
                self.n_kv_heads, self.n_heads
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::config(format!(
                "rope_theta must be positive, got {}",
                self.rope_theta
            )));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(Error::config(format!(
                "norm_eps must be positive, got {}",
                self.norm_eps
            )));
        }
        if self.max_context > 1 << 24 {
            return Err(Error::config(format!(
                "max_context {} is absurdly large",
                self.max_context
            )));
        }
        if self.streams.is_empty() {
            return Err(Error::config("streams must list at least one stream"));
        }
        let decoding = self.decoding()?;
        for (k, s) in self.streams.iter().enumerate() {
            self.validate_stream(k, s, decoding)?;
        }
        if self.end_stream >= self.num_streams() {
            return Err(Error::config(format!(
                "end_stream {} must name one of the {} streams",
                self.end_stream,
                self.num_streams()
            )));
        }
        self.validate_decoding(decoding)
    }

    fn validate_decoding(&self, decoding: Decoding) -> Result<()> {
        match (decoding, &self.depth) {
            (Decoding::Depth, None) => {
                return Err(Error::config(
                    "pattern \"depth\" needs a `depth` object with the depth transformer's sizes",
                ))
            }
            (Decoding::Depth, Some(depth)) => validate_depth(depth)?,
            (_, Some(_)) => {
                return Err(Error::config(format!(
                    "`depth` is only used by pattern \"depth\", not \"{}\"",
                    self.pattern
                )))
            }
            (_, None) => {}
        }
        if decoding == Decoding::Depth && self.tie_embeddings {
            return Err(Error::config(
                "pattern \"depth\" has no main heads to tie: tie_embeddings must be false",
            ));
        }
        if decoding == Decoding::CoarseFirst && self.end_stream != 0 {
            return Err(Error::config(
                "pattern \"coarse_first\" ends on the AR stream: end_stream must be 0",
            ));
        }
        if decoding == Decoding::CoarseFirst && self.num_streams() < 2 {
            return Err(Error::config(
                "pattern \"coarse_first\" needs at least 2 streams (AR stream 0 + NAR stages)",
            ));
        }
        Ok(())
    }

    fn validate_stream(&self, k: usize, s: &StreamConfig, decoding: Decoding) -> Result<()> {
        let name = &s.name;
        if s.vocab_size == 0 || s.vocab_size > MAX_VOCAB {
            return Err(Error::config(format!(
                "streams[{k}] ('{name}'): vocab_size must be in [1, {MAX_VOCAB}], got {}",
                s.vocab_size
            )));
        }
        let ids = [
            ("pad_id", s.pad_id),
            ("bos_id", s.bos_id),
            ("eos_id", s.eos_id),
        ];
        for (key, id) in ids {
            if let Some(id) = id.filter(|&id| id as usize >= s.vocab_size) {
                return Err(Error::config(format!(
                    "streams[{k}] ('{name}'): {key} {id} is outside the vocabulary (vocab_size {})",
                    s.vocab_size
                )));
            }
        }
        if s.text_offset as usize >= s.vocab_size {
            return Err(Error::config(format!(
                "streams[{k}] ('{name}'): text_offset {} is outside the vocabulary (vocab_size {})",
                s.text_offset, s.vocab_size
            )));
        }
        if s.bos_id.is_none() {
            return Err(Error::config(format!(
                "streams[{k}] ('{name}'): bos_id must be set; it is the special token of step 0 \
                 and masked positions"
            )));
        }
        if !decoding.honours_delays() && s.delay != 0 {
            return Err(Error::config(format!(
                "streams[{k}] ('{name}'): delay {} needs pattern \"delay\" or \"depth\"; \"{}\" \
                 means all delays are 0",
                s.delay, self.pattern
            )));
        }
        if s.delay > 1 << 16 {
            return Err(Error::config(format!(
                "streams[{k}] ('{name}'): delay {} is absurdly large",
                s.delay
            )));
        }
        Ok(())
    }
}

fn validate_depth(depth: &DepthConfig) -> Result<()> {
    check_model_type_and_positive(
        MODEL_TYPE,
        MODEL_TYPE,
        &[
            ("depth.d_model", depth.d_model),
            ("depth.n_layers", depth.n_layers),
            ("depth.n_heads", depth.n_heads),
            ("depth.n_kv_heads", depth.n_kv_heads),
            ("depth.ffn_dim", depth.ffn_dim),
        ],
    )?;
    let head_dim = depth.d_model / depth.n_heads;
    if !depth.d_model.is_multiple_of(depth.n_heads) || !head_dim.is_multiple_of(2) {
        return Err(Error::config(format!(
            "depth.d_model {} must be depth.n_heads {} times an even head_dim",
            depth.d_model, depth.n_heads
        )));
    }
    if !depth.n_heads.is_multiple_of(depth.n_kv_heads) {
        return Err(Error::config(format!(
            "depth.n_kv_heads {} must divide depth.n_heads {}",
            depth.n_kv_heads, depth.n_heads
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use speechinfer_core::config::parse_config;

    fn full() -> serde_json::Value {
        serde_json::to_value(LmConfig::default()).unwrap()
    }

    fn parse(value: &serde_json::Value) -> Result<LmConfig> {
        let config: LmConfig = parse_config(&value.to_string(), LmConfig::REQUIRED_KEYS)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn default_round_trips() {
        let config = parse(&full()).unwrap();
        assert_eq!(config, LmConfig::default());
        assert_eq!(config.head_dim(), 32);
        assert_eq!(config.special_ids(), vec![1026; 4]);
        assert_eq!(
            config.pattern_kind().unwrap(),
            PatternKind::delay(vec![0, 1, 2, 3])
        );
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("/n_kv_heads", 3.into(), "n_kv_heads 3 must divide"),
            ("/n_heads", 6.into(), "even head_dim"),
            ("/pattern", "flat".into(), "pattern 'flat'"),
            (
                "/streams/1/bos_id",
                serde_json::Value::Null,
                "bos_id must be set",
            ),
            ("/streams/2/eos_id", 5000.into(), "eos_id 5000 is outside"),
            (
                "/streams/1/text_offset",
                1027.into(),
                "text_offset 1027 is outside",
            ),
            ("/streams", serde_json::json!([]), "at least one stream"),
            ("/pattern", "parallel".into(), "delay 1 needs pattern"),
            ("/pattern", "depth".into(), "needs a `depth` object"),
            ("/end_stream", 4.into(), "end_stream 4 must name"),
            ("/max_context", 0.into(), "max_context must be positive"),
        ];
        for (pointer, value, needle) in cases {
            let mut config = full();
            *config.pointer_mut(pointer).unwrap() = value;
            let err = parse(&config).unwrap_err().to_string();
            assert!(err.contains(needle), "{pointer}: {err}");
        }
        let mut config = full();
        config["streams"][0]["colour"] = "red".into();
        let err = parse(&config).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        let mut config = full();
        config.as_object_mut().unwrap().remove("ffn_dim");
        let err = parse(&config).unwrap_err().to_string();
        assert!(err.contains("missing key(s): ffn_dim"), "{err}");
    }

    #[test]
    fn text_offset_is_optional() {
        let mut config = full();
        config["streams"][0]
            .as_object_mut()
            .unwrap()
            .remove("text_offset");
        config["streams"][1]["text_offset"] = 7.into();
        let config = parse(&config).unwrap();
        assert_eq!(config.streams[0].text_offset, 0);
        assert_eq!(config.streams[1].text_offset, 7);
    }
}
