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
