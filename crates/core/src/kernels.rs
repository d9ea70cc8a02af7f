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
    matmul_xwt_of(x, rows, w, n, k)
}

/// [`matmul_xwt`] from bfloat16 weights `w [n, k]` (half the f32 bytes; each weight widened to
/// f32 exactly before its FMA, so the result equals [`matmul_xwt`] on the widened weights up to
/// the summation order of two accumulator chains).
pub fn matmul_xwt_bf16(x: &[f32], rows: usize, w: &[half::bf16], n: usize, k: usize) -> Vec<f32> {
    matmul_xwt_of(x, rows, w, n, k)
}

/// [`matmul_xwt`] for any weight element the dot kernels read.
fn matmul_xwt_of<W: Weight + Sync>(
    x: &[f32],
    rows: usize,
    w: &[W],
    n: usize,
    k: usize,
) -> Vec<f32> {
    assert!(
        x.len() == rows * k && w.len() == n * k,
        "matmul_xwt: bad slice lengths"
    );
    let simd = has_avx2_fma();
    by_weight_rows(x, rows, n, k, |j, xs, out| {
        dots(xs, &w[j * k..(j + 1) * k], out, simd)
    })
}

/// A weight matrix `[n, k]` stored as int8 with one f32 scale per row (symmetric, round to
/// nearest): `w[j, i] ≈ scales[j] · data[j, i]`. A quarter of the f32 bytes, so a decoding step
/// bound by weight bandwidth streams four times less.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    data: Vec<i8>,
    scales: Vec<f32>,
    n: usize,
    k: usize,
}

impl Q8Matrix {
    /// Quantize row-major `w [n, k]`; panics only if `w.len() != n * k`.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "Q8Matrix::quantize: bad slice length");
        let mut data = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        for (j, (row, out)) in w
            .chunks(k.max(1))
            .zip(data.chunks_mut(k.max(1)))
            .enumerate()
        {
            let peak = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if peak > 0.0 { peak / 127.0 } else { 1.0 };
            scales[j] = scale;
            for (q, v) in out.iter_mut().zip(row) {
                *q = (v / scale).round().clamp(-127.0, 127.0) as i8;
            }
        }
        Self { data, scales, n, k }
    }

    /// Output rows `n`.
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input columns `k`.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// The dequantized matrix `[n, k]` (for inputs the GEMM handles: prefill).
    pub fn dequantize(&self) -> Vec<f32> {
        let k = self.k.max(1);
        self.data
            .chunks(k)
            .zip(&self.scales)
            .flat_map(|(row, s)| row.iter().map(move |&q| f32::from(q) * s))
            .collect()
    }

    /// `x [rows, k] · wᵀ` like [`matmul_xwt`] (same row-count independence), from int8 weights.
    pub fn matmul_xwt(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), rows * k, "Q8Matrix::matmul_xwt: bad slice length");
        let simd = has_avx2_fma();
        by_weight_rows(x, rows, n, k, |j, xs, out| {
            dots(xs, &self.data[j * k..(j + 1) * k], out, simd);
            for value in out.iter_mut() {
                *value *= self.scales[j];
            }
        })
    }
}

/// Runs `dot(j, x_block, out)` for every weight row `j` and block of ≤ [`BLOCK`] rows of `x`,
/// in parallel over weight rows; returns `[rows, n]` row-major.
fn by_weight_rows(
    x: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    dot: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    if rows == 0 || n == 0 {
        return vec![0f32; rows * n];
    }
    // Computed transposed ([n, rows]) so that tasks own disjoint output chunks.
    let mut out_t = vec![0f32; n * rows];
    out_t
        .par_chunks_mut(ROWS_PER_TASK * rows)
        .enumerate()
        .for_each(|(task, chunk)| {
            let first = task * ROWS_PER_TASK;
            for (i, cells) in chunk.chunks_mut(rows).enumerate() {
                for (block, out) in cells.chunks_mut(BLOCK).enumerate() {
                    let xs = &x[block * BLOCK * k..(block * BLOCK + out.len()) * k];
                    dot(first + i, xs, out);
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

/// A weight element the dot kernels read: f32, or int8 (scaled by the caller).
trait Weight: Copy + Into<f32> {
    /// Whether the AVX2 kernel runs two accumulator chains per row of `x` ([`dots2_avx2`]):
    /// int8 weights convert before every FMA, and one chain per row left a batch-1 step bound
    /// by the FMA latency; f32 weights are bound by memory and keep one chain and 8-row blocks.
    const TWO_CHAINS: bool;

    /// Eight consecutive weights from `ptr` as f32 lanes.
    ///
    /// # Safety
    /// AVX2 must be available and `ptr .. ptr + 8` readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(ptr: *const Self) -> std::arch::x86_64::__m256;
}

impl Weight for f32 {
    const TWO_CHAINS: bool = false;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(ptr: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller guarantees 8 readable floats.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(ptr) }
    }
}

impl Weight for i8 {
    const TWO_CHAINS: bool = true;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(ptr: *const i8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable bytes.
        unsafe {
            let bytes = _mm_loadl_epi64(ptr as *const __m128i);
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
        }
    }
}

impl Weight for half::bf16 {
    const TWO_CHAINS: bool = true;

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load8(ptr: *const half::bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees 8 readable bf16 (16 bytes). A bf16 is the high half
        // of an f32: widen to 32 bits and shift up.
        unsafe {
            let halves = _mm_loadu_si128(ptr as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
        }
    }
}

/// `out[m] = x[m] · w` for the `out.len()` (≤ [`BLOCK`]) rows of `x`. Each row's sum is computed
/// in the same order whatever the other rows, so results do not depend on the block.
fn dots<W: Weight>(x: &[f32], w: &[W], out: &mut [f32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        let k = w.len();
        // SAFETY: AVX2 and FMA are available (`has_avx2_fma`); slices are bounds-checked below.
        if W::TWO_CHAINS {
            for (block, cells) in out.chunks_mut(BLOCK / 2).enumerate() {
                let rows = block * BLOCK / 2;
                let xs = &x[rows * k..(rows + cells.len()) * k];
                unsafe { dots2_avx2(xs, w, cells) };
            }
        } else {
            unsafe { dots_avx2(x, w, out) };
        }
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
                lanes[j] += row[i + j] * w[i + j].into();
            }
        }
        *cell = reduce8(lanes) + tail_dot(&row[body..], &w[body..]);
    }
}

/// `a · b` in eight independent lanes (vectorised by the compiler on any x86-64), then a fixed
/// reduction: for short dot products (attention over a cache) where a dispatch would cost more.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let body = a.len().min(b.len()) / 8 * 8;
    for (x, y) in a[..body].chunks_exact(8).zip(b[..body].chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    reduce8(lanes) + tail_dot(&a[body..], &b[body..])
}

fn reduce8(l: [f32; 8]) -> f32 {
    ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

fn tail_dot<W: Weight>(a: &[f32], b: &[W]) -> f32 {
    a.iter()
        .zip(b)
        .fold(0f32, |acc, (x, &y)| acc + x * y.into())
}

/// How far ahead of the dot kernels' weight loads to prefetch.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 1024;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2<W: Weight>(x: &[f32], w: &[W], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = w.len();
    let rows = out.len();
    assert!(rows <= BLOCK && x.len() == rows * k);
    let body = k / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); BLOCK];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut i = 0;
    while i < body {
        // A hint only (never faults, even past the end): the weights stream from memory, and
        // with 8 rows of FMAs per load the hardware prefetcher alone falls behind. Once per
        // 64-byte line (every 2nd step for f32, every 8th for int8).
        if (i * std::mem::size_of::<W>()).is_multiple_of(64) {
            _mm_prefetch::<_MM_HINT_T0>((wp.add(i) as *const i8).wrapping_add(PREFETCH_BYTES));
        }
        // SAFETY: i + 8 <= body <= k, so every load is inside `w` and inside row m of `x`.
        let wv = unsafe { W::load8(wp.add(i)) };
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

/// [`dots_avx2`] with two accumulator chains per row of `x` (even and odd 8-lane chunks of `k`)
/// for at most `BLOCK / 2` rows (see [`Weight::TWO_CHAINS`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots2_avx2<W: Weight>(x: &[f32], w: &[W], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let k = w.len();
    let rows = out.len();
    assert!(rows <= BLOCK / 2 && x.len() == rows * k);
    let body = k / 8 * 8;
    let pairs = k / 16 * 16;
    let mut acc = [[_mm256_setzero_ps(); 2]; BLOCK / 2];
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut i = 0;
    while i < pairs {
        // A hint only (never faults, even past the end): the weights stream from memory, and
        // with several rows of FMAs per load the hardware prefetcher alone falls behind. Once
        // per 64-byte line (every step for f32, every 4th for int8).
        if (i * std::mem::size_of::<W>()).is_multiple_of(64) {
            _mm_prefetch::<_MM_HINT_T0>((wp.add(i) as *const i8).wrapping_add(PREFETCH_BYTES));
        }
        // SAFETY: i + 16 <= pairs <= k, so every load is inside `w` and inside row m of `x`.
        let (w0, w1) = unsafe { (W::load8(wp.add(i)), W::load8(wp.add(i + 8))) };
        for (m, a) in acc.iter_mut().enumerate().take(rows) {
            let (x0, x1) = unsafe {
                (
                    _mm256_loadu_ps(xp.add(m * k + i)),
                    _mm256_loadu_ps(xp.add(m * k + i + 8)),
                )
            };
            a[0] = _mm256_fmadd_ps(x0, w0, a[0]);
            a[1] = _mm256_fmadd_ps(x1, w1, a[1]);
        }
        i += 16;
    }
    if i < body {
        // SAFETY: i + 8 <= body <= k.
        let w0 = unsafe { W::load8(wp.add(i)) };
        for (m, a) in acc.iter_mut().enumerate().take(rows) {
            let x0 = unsafe { _mm256_loadu_ps(xp.add(m * k + i)) };
            a[0] = _mm256_fmadd_ps(x0, w0, a[0]);
        }
    }
    for (m, cell) in out.iter_mut().enumerate() {
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[m][0], acc[m][1])) };
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

    #[test]
    fn bf16_matches_its_widened_matrix_and_is_row_count_independent() {
        let (n, k) = (29, 203);
        let w: Vec<half::bf16> = (0..n * k)
            .map(|i| half::bf16::from_f32(((i * 7 % 13) as f32 - 6.0) / 7.0))
            .collect();
        let wide: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let x: Vec<f32> = (0..5 * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let y = matmul_xwt_bf16(&x, 5, &w, n, k);
        let exact = matmul_xwt(&x, 5, &wide, n, k);
        for (a, b) in y.iter().zip(&exact) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        for m in 0..5 {
            let alone = matmul_xwt_bf16(&x[m * k..(m + 1) * k], 1, &w, n, k);
            assert_eq!(alone.as_slice(), &y[m * n..(m + 1) * n]);
        }
    }

    #[test]
    fn q8_matches_its_dequantized_matrix_and_is_row_count_independent() {
        let (n, k) = (45, 99);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / (1.0 + (i / k) as f32))
            .collect();
        let x: Vec<f32> = (0..3 * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let q = Q8Matrix::quantize(&w, n, k);
        assert_eq!((q.rows(), q.cols()), (n, k));
        let deq = q.dequantize();
        for (a, b) in w.iter().zip(&deq) {
            let row_peak = 6.0f32;
            assert!((a - b).abs() <= row_peak / 127.0 * 0.5 + 1e-6);
        }
        let y = q.matmul_xwt(&x, 3);
        let exact = matmul_xwt(&x, 3, &deq, n, k);
        for (a, b) in y.iter().zip(&exact) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
        for m in 0..3 {
            let alone = q.matmul_xwt(&x[m * k..(m + 1) * k], 1);
            assert_eq!(alone.as_slice(), &y[m * n..(m + 1) * n]);
        }
        let zeros = Q8Matrix::quantize(&vec![0.0; 2 * k], 2, k);
        assert!(zeros.matmul_xwt(&x[..k], 1).iter().all(|&v| v == 0.0));
    }
}
