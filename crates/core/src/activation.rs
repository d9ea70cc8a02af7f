//! Elementwise activations on f32 slices, written branch-free so that they vectorise.

/// `exp(x) - 1` for `x ≤ 0` (inputs below -87 give -1), to about 2 ulp of the result: the
/// reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, then `2ⁿ·expm1(r) + (2ⁿ - 1)` with a degree-8
/// Taylor polynomial for `expm1(r)`, so small inputs keep their relative precision.
#[inline(always)]
fn expm1_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer for |v| < 2²².
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut q = 1.0 / 40320.0;
    for c in [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
    ] {
        q = q * r + c;
    }
    let q = q * r;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    scale * q + (scale - 1.0)
}

/// `dst[i] = elu(src[i])` with α = 1: `x` for `x > 0`, `exp(x) - 1` otherwise.
pub fn elu_into(src: &[f32], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "elu buffers differ in length");
    for (d, &v) in dst.iter_mut().zip(src) {
        let neg = expm1_nonpositive(v);
        *d = if v > 0.0 { v } else { neg };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elu_matches_f64_expm1() {
        let xs: Vec<f32> = (-200_000..=2_000)
            .map(|i| i as f32 * 5e-4)
            .chain([-1e-30, -1e-7, -3e-4, -90.0, -1e4, f32::MIN_POSITIVE, 7.5])
            .collect();
        let mut got = vec![0f32; xs.len()];
        elu_into(&xs, &mut got);
        for (&x, &y) in xs.iter().zip(&got) {
            let want = if x > 0.0 {
                x as f64
            } else {
                (x as f64).exp_m1()
            };
            let err = (y as f64 - want).abs();
            assert!(
                err <= 2.5e-7 * want.abs().max(1e-30),
                "elu({x}) = {y}, want {want}"
            );
        }
    }
}
