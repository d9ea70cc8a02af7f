//! Helpers for the model crates' unit tests (not part of the engine's API).

use candle_core::Tensor;

/// The largest absolute element-wise difference of two f32 tensors of one shape; panics on a
/// shape or dtype mismatch, as a failed test should.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The `key=value` command-line arguments of a benchmark example (anything else is ignored).
pub struct ExampleArgs(std::collections::HashMap<String, String>);

impl ExampleArgs {
    pub fn from_env() -> Self {
        Self(
            std::env::args()
                .skip(1)
                .filter_map(|a| {
                    a.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `key` parsed as a number, `default` when absent or unparsable.
    pub fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}
