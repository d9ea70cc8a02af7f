//! Loading a Hugging Face `LlamaForCausalLM` directory (`config.json` with `model_type:
//! "llama"`, `model.safetensors` or sharded `model.safetensors.index.json`) as a one-stream
//! text grid of the engine's transformer. The architectures agree (RMSNorm, rotate-half RoPE,
//! SwiGLU, GQA, no biases), so only names and config keys are translated; features the engine
//! does not implement are refused by name rather than served wrongly.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::Value;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::config::{LmConfig, Role, StreamConfig};
use crate::model::SpeechLm;

/// Whether `config` (a parsed `config.json`) describes a Hugging Face Llama.
pub fn is_hf_llama(config: &Value) -> bool {
    config.get("model_type").and_then(Value::as_str) == Some("llama")
}

fn field<'a>(config: &'a Value, key: &str) -> Option<&'a Value> {
    config.get(key).filter(|v| !v.is_null())
}

fn usize_field(config: &Value, key: &str) -> Result<usize> {
    field(config, key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| {
            Error::config(format!(
                "Llama config: `{key}` must be a non-negative integer"
            ))
        })
}

/// An id field that may be an int, a list of ints (the first is used) or null.
fn id_field(config: &Value, key: &str) -> Result<Option<u32>> {
    let value = match field(config, key) {
        None => return Ok(None),
        Some(Value::Array(items)) => items.first().cloned().unwrap_or(Value::Null),
        Some(v) => v.clone(),
    };
    if value.is_null() {
        return Ok(None);
    }
    value
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| Error::config(format!("Llama config: `{key}` must be a token id")))
}

/// Translates a Hugging Face Llama `config.json` into the engine's config (one text stream,
/// pattern "parallel": step 0 holds `bos_token_id`, token t sits at step t + 1).
pub fn llama_config(config: &Value) -> Result<LmConfig> {
    let refuse = |key: &str, why: &str| Error::config(format!("Llama config: `{key}` {why}"));
    if let Some(scaling) = field(config, "rope_scaling") {
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        if kind != "default" {
            return Err(refuse(
                "rope_scaling",
                &format!("type '{kind}' is not supported (only unscaled RoPE)"),
            ));
        }
    }
    for key in ["attention_bias", "mlp_bias"] {
        if field(config, key).and_then(Value::as_bool) == Some(true) {
            return Err(refuse(
                key,
                "= true is not supported (the engine's linears have no bias)",
            ));
        }
    }
    if let Some(act) = field(config, "hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            return Err(refuse(
                "hidden_act",
                &format!("'{act}' is not supported (only silu)"),
            ));
        }
    }
    if field(config, "pretraining_tp")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        != 1
    {
        return Err(refuse("pretraining_tp", "must be 1"));
    }
    let d_model = usize_field(config, "hidden_size")?;
    let n_heads = usize_field(config, "num_attention_heads")?;
    if let Some(head_dim) = field(config, "head_dim").and_then(Value::as_u64) {
        if n_heads == 0 || head_dim as usize * n_heads != d_model {
            return Err(refuse(
                "head_dim",
                &format!("{head_dim} must equal hidden_size / num_attention_heads"),
            ));
        }
    }
    let vocab_size = usize_field(config, "vocab_size")?;
    let bos_id = id_field(config, "bos_token_id")?
        .ok_or_else(|| refuse("bos_token_id", "is required: the engine feeds it at step 0"))?;
    let float = |key: &str, default: f64| {
        field(config, key).map_or(Ok(default), |v| {
            v.as_f64()
                .ok_or_else(|| Error::config(format!("Llama config: `{key}` must be a number")))
        })
    };
    let lm = LmConfig {
        d_model,
        n_layers: usize_field(config, "num_hidden_layers")?,
        n_heads,
        n_kv_heads: match field(config, "num_key_value_heads") {
            Some(_) => usize_field(config, "num_key_value_heads")?,
            None => n_heads,
        },
        ffn_dim: usize_field(config, "intermediate_size")?,
        rope_theta: float("rope_theta", 10000.0)?,
        norm_eps: float("rms_norm_eps", 1e-6)?,
        max_context: usize_field(config, "max_position_embeddings")?,
        tie_embeddings: field(config, "tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        streams: vec![StreamConfig {
            name: "text".into(),
            role: Role::Text,
            vocab_size,
            pad_id: id_field(config, "pad_token_id")?,
            bos_id: Some(bos_id),
            eos_id: id_field(config, "eos_token_id")?,
            delay: 0,
            text_offset: 0,
        }],
        pattern: "parallel".into(),
        ..LmConfig::default()
    };
    lm.validate()?;
    Ok(lm)
}

/// The engine's name for a Hugging Face Llama tensor name.
fn engine_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("model.").unwrap_or(name);
    let direct = match name {
        "embed_tokens.weight" => Some("embeddings.0.weight"),
        "norm.weight" => Some("norm.weight"),
        "lm_head.weight" => Some("heads.0.weight"),
        _ => None,
    };
    if let Some(direct) = direct {
        return Some(direct.to_string());
    }
    let rest = name.strip_prefix("layers.")?;
    let (index, leaf) = rest.split_once('.')?;
    let leaf = match leaf {
        "input_layernorm.weight" => "attn_norm.weight".to_string(),
        "post_attention_layernorm.weight" => "ffn_norm.weight".to_string(),
        _ => {
            if let Some(proj) = leaf.strip_prefix("self_attn.") {
                format!("attn.{proj}")
            } else if let Some(proj) = leaf.strip_prefix("mlp.") {
                format!("ffn.{proj}")
            } else {
                return None;
            }
        }
    };
    Some(format!("layers.{index}.{leaf}"))
}

/// The safetensors files of a Hugging Face model directory.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|_| {
        Error::checkpoint(format!(
            "{} holds neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        ))
    })?;
    let parsed: Value = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(format!("{}: {e}", index.display())))?;
    let map = parsed
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::checkpoint(format!("{}: no weight_map", index.display())))?;
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(Value::as_str)
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

impl SpeechLm {
    /// Loads a Hugging Face `LlamaForCausalLM` directory whose `config.json` is `config`.
    pub fn load_hf_llama(dir: &Path, config: &Value, device: Device) -> Result<Self> {
        let lm_config = llama_config(config)?;
        let ckpt = Checkpoint::load_many(&weight_files(dir)?, &device)?;
        let tied = lm_config.tie_embeddings;
        let ckpt = ckpt.rename(|name| {
            // A tied checkpoint may still store lm_head; it is the embedding and is dropped.
            match engine_name(name) {
                Some(n) if tied && n == "heads.0.weight" => Some("<tied lm_head>".into()),
                other => other,
            }
        })?;
        let mut ckpt = ckpt;
        if tied && ckpt.contains("<tied lm_head>") {
            ckpt.take_any("<tied lm_head>")?;
        }
        Self::from_checkpoint(lm_config, ckpt, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "bos_token_id": 1, "eos_token_id": [2, 3], "tie_word_embeddings": false,
            "hidden_act": "silu", "rope_scaling": null
        })
    }

    #[test]
    fn translates_config_and_names() {
        let c = llama_config(&base()).unwrap();
        assert_eq!((c.d_model, c.n_kv_heads, c.max_context), (32, 2, 128));
        assert_eq!(c.streams[0].bos_id, Some(1));
        assert_eq!(c.streams[0].eos_id, Some(2));
        assert_eq!(
            engine_name("model.layers.3.self_attn.q_proj.weight").as_deref(),
            Some("layers.3.attn.q_proj.weight")
        );
        assert_eq!(
            engine_name("model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("layers.0.ffn_norm.weight")
        );
        assert_eq!(
            engine_name("lm_head.weight").as_deref(),
            Some("heads.0.weight")
        );
        assert_eq!(engine_name("model.rotary_emb.inv_freq"), None);
    }

    #[test]
    fn refuses_unsupported_features_by_name() {
        let cases = [
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
                "yarn",
            ),
            ("attention_bias", true.into(), "attention_bias"),
            ("hidden_act", "gelu".into(), "gelu"),
            ("bos_token_id", Value::Null, "bos_token_id"),
            ("head_dim", 16.into(), "head_dim"),
        ];
        for (key, value, needle) in cases {
            let mut c = base();
            c[key] = value;
            let err = llama_config(&c).unwrap_err().to_string();
            assert!(err.contains(needle), "{key}: {err}");
        }
    }
}
