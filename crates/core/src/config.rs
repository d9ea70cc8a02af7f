//! Reading a model directory's `config.json` into a typed config struct.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Parse `dir/config.json` into `T`, requiring every key in `required`.
///
/// The training side fills defaults and writes complete configs; the engine insists on every
/// architecture key so that a damaged config cannot silently load as a different model.
/// Unknown keys are rejected by `T`'s serde attributes.
pub fn read_config<T: DeserializeOwned>(dir: &Path, required: &[&str]) -> Result<T> {
    if !dir.is_dir() {
        return Err(Error::config(format!(
            "{} is not a model directory",
            dir.display()
        )));
    }
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
    parse_config(&text, required)
        .map_err(|e| Error::config(format!("{}: {}", path.display(), e.message())))
}

/// Fail unless `model_type` is `expected`, then unless every named value is positive.
pub fn check_model_type_and_positive(
    model_type: &str,
    expected: &str,
    values: &[(&str, usize)],
) -> Result<()> {
    if model_type != expected {
        return Err(Error::config(format!(
            "model_type is '{model_type}', expected '{expected}'"
        )));
    }
    for (name, value) in values {
        if *value == 0 {
            return Err(Error::config(format!("{name} must be positive, got 0")));
        }
    }
    Ok(())
}

/// Parse a JSON object into `T`, requiring every key in `required`.
pub fn parse_config<T: DeserializeOwned>(text: &str, required: &[&str]) -> Result<T> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::config(format!("invalid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| Error::config("the config must be a JSON object"))?;
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|k| !object.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(Error::config(format!(
            "missing key(s): {}",
            missing.join(", ")
        )));
    }
    serde_json::from_value::<T>(value.clone()).map_err(|e| {
        let culprit = object.iter().find(|(key, v)| {
            let single = serde_json::json!({ key.as_str(): v });
            serde_json::from_value::<T>(single).is_err()
        });
        match culprit {
            Some((key, v)) => Error::config(format!("key '{key}' = {v}: {e}")),
            None => Error::config(e.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        #[allow(dead_code)]
        ratios: Vec<usize>,
        #[allow(dead_code)]
        rate: usize,
    }

    #[test]
    fn errors_name_the_key() {
        let err = parse_config::<Demo>(r#"{"ratios": "4,2", "rate": 1}"#, &[]).unwrap_err();
        assert!(err.to_string().contains("'ratios'"), "{err}");
        let err = parse_config::<Demo>(r#"{"rate": 1}"#, &["ratios", "rate"]).unwrap_err();
        assert!(err.to_string().contains("missing key(s): ratios"), "{err}");
        let err = parse_config::<Demo>(r#"{"rat": 1}"#, &[]).unwrap_err();
        assert!(err.to_string().contains("rat"), "{err}");
        assert!(parse_config::<Demo>("[1]", &[]).is_err());
    }
}
