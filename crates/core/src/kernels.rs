//! CPU kernels the general-purpose GEMM does poorly.
//!
//! [`matmul_xwt`] computes `x · wᵀ` for few rows of `x` (a decoding step: one row per sequence):
//! every weight row is read once and dotted with all rows of `x`, so the step is bound by weight
//! bandwidth instead of GEMM packing overhead. Each output is the same dot-product code whatever
//! the number of rows, so a sequence gets bit-identical results alone or in a batch.

use rayon::prelude::*;

/// Weight rows per parallel task (a few cache lines of work each).
const ROWS_PER_TASK: usize = 32;

/// `out[m, n] = Σ_k x[m, k] · w[n, k]` for row-major `x [rows, k]` and `w [n, k]`; returns
/// `[rows, n]` row-major. Panics only if the slice lengths disagree with the sizes, which the
/// caller guarantees.
pub fn matmul_xwt(x: &[f32], rows: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!(
        x.len() == rows * k && w.len() == n * k,
        "matmul_xwt: bad slice lengths"
    );
    if rows == 0 || n == 0 {
        return vec![0f32; rows * n];
    }
    // Computed transposed ([n, rows]) so that tasks own disjoint output chunks.
    let mut out_t = vec![0f32; n * rows];
    let simd = has_avx2_fma();
    out_t
        .par_chunks_mut(ROWS_PER_TASK * rows)
        .enumerate()
        .for_each(|(task, chunk)| {
            let first = task * ROWS_PER_TASK;
            for (i, cells) in chunk.chunks_mut(rows).enumerate() {
                let weights = &w[(first + i) * k..(first + i + 1) * k];
                for (block, out) in cells.chunks_mut(BLOCK).enumerate() {
                    let xs = &x[block * BLOCK * k..(block * BLOCK + out.len()) * k];
                    dots(xs, weights, out, simd);
                }
            }
        });
    let mut out = vec![0f32; rows * n];
    for (j, column) in out_t.chunks(rows).enumerate() {
        for (m, &value) in column.iter().enumerate() {
            out[m * n + j] = value;
        }
    }
    out
}

/// Rows of `x` dotted with one weight row at a time (accumulators stay in registers).
const BLOCK: usize = 8;

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[m] = x[m] · w` for the `out.len()` (≤ [`BLOCK`]) rows of `x`. Each row's sum is computed
/// in the same order whatever the other rows, so results do not depend on the block.
fn dots(x: &[f32], w: &[f32], out: &mut [f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2 and FMA are available (`has_avx2_fma`); slices are bounds-checked below.
        unsafe { dots_avx2(x, w, out) };
        return;
    }
    let _ = simd;
    let k = w.len();
    for (m, cell) in out.iter_mut().enumerate() {
        let row = &x[m * k..(m + 1) * k];
        let mut lanes = [0f32; 8];
        let body = k / 8 * 8;
        for i in (0..body).step_by(8) {
            for j in 0..8 {
                lanes[j] += row[i + j] * w[i + j];
            }
        }
        *cell = reduce8(lanes) + tail_dot(&row[body..], &w[body..]);
    }
}

fn reduce8(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

fn tail_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |acc, (x, y)| acc + x * y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(x: &[f32], w: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = w.len();
    let rows = out.len();
    assert!(rows <= BLOCK && x.len() == rows * k);
    let body = k / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); BLOCK];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut i = 0;
    while i < body {
        // SAFETY: i + 8 <= body <= k, so every load is inside `w` and inside row m of `x`.
        let wv = unsafe { _mm256_loadu_ps(wp.add(i)) };
        for (m, a) in acc.iter_mut().enumerate().take(rows) {
            let xv = unsafe { _mm256_loadu_ps(xp.add(m * k + i)) };
            *a = _mm256_fmadd_ps(xv, wv, *a);
        }
        i += 8;
    }
    for (m, cell) in out.iter_mut().enumerate() {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[m]) };
        *cell = reduce8(lanes) + tail_dot(&x[m * k + body..(m + 1) * k], &w[body..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_and_is_row_count_independent() {
        let (n, k) = (37, 101);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let x: Vec<f32> = (0..3 * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let y = matmul_xwt(&x, 3, &w, n, k);
        for m in 0..3 {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|i| f64::from(x[m * k + i]) * f64::from(w[j * k + i]))
                    .sum();
                assert!((f64::from(y[m * n + j]) - want).abs() < 1e-4 * want.abs().max(1.0));
            }
            let alone = matmul_xwt(&x[m * k..(m + 1) * k], 1, &w, n, k);
            assert_eq!(alone.as_slice(), &y[m * n..(m + 1) * n]);
        }
    }
}
