//! Direct 1-D convolutions on contiguous f32 buffers.
//!
//! A conv with kernel `K` is `K` matrix products of depth `Cin`, each reading the input (or, for a
//! transposed conv, writing the output) in place through strides: no im2col matrix, no output
//! transpose. Time is cut into tiles that fit in cache; tiles run in parallel and each writes its
//! own part of the output.

use rayon::prelude::*;

use half::bf16;

use crate::kernels::{matmul_xwt, matmul_xwt_bf16};

/// Output columns (transposed conv: input frames) up to which a call runs on the
/// weight-streaming dot kernel instead of GEMMs.
const FEW_COLUMNS: usize = 8;

/// Output columns per tile: the tile's `[channels, columns]` slab stays around 128 KiB.
fn tile_columns(channels: usize) -> usize {
    (32 * 1024 / channels.max(1)).clamp(16, 1024)
}

/// Jobs over (batch item, time tile, block of output channels): when there are fewer batch
/// items × tiles than threads (a streaming step of a few samples), output channels are split
/// too, in blocks of at least 16 (the GEMM microkernel's height).
struct Jobs {
    tiles: usize,
    rows_per_job: usize,
    row_blocks: usize,
}

impl Jobs {
    fn new(batch: usize, tiles: usize, cout: usize) -> Self {
        let wanted = 2 * rayon::current_num_threads();
        let row_blocks = wanted.div_ceil(batch * tiles).clamp(1, cout.div_ceil(16));
        let rows_per_job = cout.div_ceil(row_blocks).next_multiple_of(16).min(cout);
        Self {
            tiles,
            rows_per_job,
            row_blocks: cout.div_ceil(rows_per_job),
        }
    }

    fn count(&self, batch: usize) -> usize {
        batch * self.tiles * self.row_blocks
    }

    /// Job → (batch item, tile index, output channels).
    fn get(&self, job: usize, cout: usize) -> (usize, usize, std::ops::Range<usize>) {
        let rows = job % self.row_blocks;
        let job = job / self.row_blocks;
        let o0 = rows * self.rows_per_job;
        (
            job / self.tiles,
            job % self.tiles,
            o0..(o0 + self.rows_per_job).min(cout),
        )
    }
}

/// `dst[m, n] += lhs[m, k] · rhs[k, n]` with element strides `(row, column)` for each operand.
struct Product {
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
}

impl Product {
    /// Safety: every element addressed through the strides lies inside its buffer, and no other
    /// thread writes the destination elements at the same time.
    unsafe fn accumulate(self) {
        gemm::gemm(
            self.m,
            self.n,
            self.k,
            self.dst.0,
            self.dst.2,
            self.dst.1,
            true,
            self.lhs.0,
            self.lhs.2,
            self.lhs.1,
            self.rhs.0,
            self.rhs.2,
            self.rhs.1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A raw output pointer shared by tiles that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so closures capture the whole `Send` wrapper, not its raw field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Weights `[Cout][K][Cin]` (from a weight whose `K` taps of (output o, input i) start at
/// `start(o, i)`), optionally rounded to bfloat16 and then also kept as bfloat16 for the
/// weight-streaming path (half the bytes a streaming step reads).
///
/// One layout serves both paths: the GEMM for tap `j` reads rows `o` at stride `K·Cin` from
/// offset `j·Cin`; a call with few columns is one weight-streaming product over all taps
/// (a conv: inputs gathered as `[rows, K·Cin]`; a transposed conv: weights seen as
/// `[Cout·K, Cin]`), one parallel dispatch instead of one per tap.
#[derive(Debug, Clone)]
struct Taps {
    values: Vec<f32>,
    bf16: Option<Vec<bf16>>,
    kernel: usize,
    cin: usize,
}

impl Taps {
    fn new(
        weight: &[f32],
        kernel: usize,
        (cout, cin): (usize, usize),
        start: impl Fn(usize, usize) -> usize,
    ) -> Self {
        let mut values = vec![0f32; weight.len()];
        for o in 0..cout {
            for i in 0..cin {
                let first = start(o, i);
                for j in 0..kernel {
                    values[(o * kernel + j) * cin + i] = weight[first + j];
                }
            }
        }
        Self {
            values,
            bf16: None,
            kernel,
            cin,
        }
    }

    /// The GEMM operand of tap `j` for output rows from `o0`: pointer, row and column strides.
    fn lhs(&self, j: usize, o0: usize) -> (*const f32, isize, isize) {
        let at = (o0 * self.kernel + j) * self.cin;
        (
            self.values.as_ptr().wrapping_add(at),
            (self.kernel * self.cin) as isize,
            1,
        )
    }

    fn round_to_bf16(&mut self) {
        let rounded: Vec<bf16> = self.values.iter().map(|&v| bf16::from_f32(v)).collect();
        self.values = rounded.iter().map(|v| v.to_f32()).collect();
        self.bf16 = Some(rounded);
    }

    /// `x [rows, k] · Wᵀ` with every weight seen as one matrix `[n, k]`, on the
    /// weight-streaming kernel.
    fn product(&self, x: &[f32], rows: usize, n: usize, k: usize) -> Vec<f32> {
        match &self.bf16 {
            Some(w) => matmul_xwt_bf16(x, rows, w, n, k),
            None => matmul_xwt(x, rows, &self.values, n, k),
        }
    }
}

/// Conv1d weights repacked `[Cout][K][Cin]` (see [`Taps`]).
#[derive(Debug, Clone)]
pub struct PackedConv1d {
    taps: Taps,
    bias: Vec<f32>,
    cout: usize,
    cin: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
}

impl PackedConv1d {
    /// `weight`: torch layout `[Cout, Cin, K]`; `bias`: `[Cout]`.
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        (cout, cin, kernel): (usize, usize, usize),
        stride: usize,
        dilation: usize,
    ) -> Self {
        assert_eq!(weight.len(), cout * cin * kernel, "conv weight size");
        assert_eq!(bias.len(), cout, "conv bias size");
        assert!(stride > 0 && dilation > 0 && kernel > 0);
        let taps = Taps::new(weight, kernel, (cout, cin), |o, i| (o * cin + i) * kernel);
        Self {
            taps,
            bias: bias.to_vec(),
            cout,
            cin,
            kernel,
            stride,
            dilation,
        }
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    /// Rounds the weights (not the bias) to bfloat16; streaming steps then read them as such.
    pub fn round_to_bf16(&mut self) {
        self.taps.round_to_bf16();
    }

    /// Input samples one output sample sees.
    pub fn span(&self) -> usize {
        (self.kernel - 1) * self.dilation + 1
    }

    /// Output length of an unpadded input of `t_in` samples (0 when shorter than the span).
    pub fn output_len(&self, t_in: usize) -> usize {
        if t_in < self.span() {
            0
        } else {
            (t_in - self.span()) / self.stride + 1
        }
    }

    /// `x`: `[batch, Cin, t_in]`, unpadded → `[batch, Cout, output_len(t_in)]`, bias included.
    pub fn forward(&self, x: &[f32], batch: usize, t_in: usize) -> Vec<f32> {
        self.forward_onto(x, batch, t_in, None)
    }

    /// `forward` plus `residual` (`[batch, Cout, output_len(t_in)]`) added to the output.
    pub fn forward_onto(
        &self,
        x: &[f32],
        batch: usize,
        t_in: usize,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        assert_eq!(x.len(), batch * self.cin * t_in, "conv input size");
        let t_out = self.output_len(t_in);
        if let Some(r) = residual {
            assert_eq!(r.len(), batch * self.cout * t_out, "conv residual size");
        }
        if t_out <= FEW_COLUMNS {
            return self.forward_few(x, batch, t_in, residual);
        }
        let mut y = vec![0f32; batch * self.cout * t_out];
        let tile = tile_columns(self.cout.max(self.cin));
        let jobs = Jobs::new(batch, t_out.div_ceil(tile), self.cout);
        let out = SharedOut(y.as_mut_ptr());
        (0..jobs.count(batch)).into_par_iter().for_each(|job| {
            let (b, tile_index, rows) = jobs.get(job, self.cout);
            let t0 = tile_index * tile;
            let n = tile.min(t_out - t0);
            let dst = unsafe { out.ptr().add((b * self.cout + rows.start) * t_out + t0) };
            for (r, o) in rows.clone().enumerate() {
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(r * t_out), n) };
                match residual {
                    Some(res) => {
                        let start = (b * self.cout + o) * t_out + t0;
                        let bias = self.bias[o];
                        row.iter_mut()
                            .zip(&res[start..start + n])
                            .for_each(|(y, r)| *y = r + bias);
                    }
                    None => row.fill(self.bias[o]),
                }
            }
            let src = &x[b * self.cin * t_in..];
            for j in 0..self.kernel {
                let first = t0 * self.stride + j * self.dilation;
                // The last element read is (cin-1)*t_in + first + (n-1)*stride < cin*t_in,
                // because t0 + n ≤ t_out.
                unsafe {
                    Product {
                        m: rows.len(),
                        n,
                        k: self.cin,
                        dst: (dst, t_out as isize, 1),
                        lhs: self.taps.lhs(j, rows.start),
                        rhs: (src.as_ptr().add(first), t_in as isize, self.stride as isize),
                    }
                    .accumulate();
                }
            }
        });
        y
    }

    /// A call with few output columns (a streaming step): each output column's inputs gathered
    /// over every tap (`[rows, K·Cin]`) and dotted with the weight rows by the weight-streaming
    /// kernel in one product, which reads every weight once instead of packing it for a GEMM
    /// whose tiles would be mostly empty.
    fn forward_few(
        &self,
        x: &[f32],
        batch: usize,
        t_in: usize,
        residual: Option<&[f32]>,
    ) -> Vec<f32> {
        let (cout, cin) = (self.cout, self.cin);
        let t_out = self.output_len(t_in);
        let mut y: Vec<f32> = match residual {
            Some(r) => r.to_vec(),
            None => vec![0f32; batch * cout * t_out],
        };
        for (row, values) in y.chunks_mut(t_out.max(1)).enumerate() {
            values.iter_mut().for_each(|v| *v += self.bias[row % cout]);
        }
        let rows = batch * t_out;
        let width = self.kernel * cin;
        let mut columns = vec![0f32; rows * width];
        for (r, column) in columns.chunks_mut(width.max(1)).enumerate() {
            let (b, t) = (r / t_out, r % t_out);
            for (j, tap) in column.chunks_mut(cin.max(1)).enumerate() {
                let first = b * cin * t_in + t * self.stride + j * self.dilation;
                for (i, value) in tap.iter_mut().enumerate() {
                    *value = x[first + i * t_in];
                }
            }
        }
        let out = self.taps.product(&columns, rows, cout, width);
        for (r, outs) in out.chunks(cout.max(1)).enumerate() {
            let (b, t) = (r / t_out, r % t_out);
            for (o, value) in outs.iter().enumerate() {
                y[(b * cout + o) * t_out + t] += value;
            }
        }
        y
    }
}

/// ConvTranspose1d weights repacked `[Cout][K][Cin]` (see [`Taps`]).
#[derive(Debug, Clone)]
pub struct PackedConvTranspose1d {
    taps: Taps,
    cout: usize,
    cin: usize,
    kernel: usize,
    stride: usize,
}

impl PackedConvTranspose1d {
    /// `weight`: torch layout `[Cin, Cout, K]`.
    pub fn new(weight: &[f32], (cin, cout, kernel): (usize, usize, usize), stride: usize) -> Self {
        assert_eq!(
            weight.len(),
            cout * cin * kernel,
            "transposed conv weight size"
        );
        assert!(stride > 0 && kernel > 0);
        let taps = Taps::new(weight, kernel, (cout, cin), |o, i| (i * cout + o) * kernel);
        Self {
            taps,
            cout,
            cin,
            kernel,
            stride,
        }
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    /// Rounds the weights to bfloat16; streaming steps then read them as such.
    pub fn round_to_bf16(&mut self) {
        self.taps.round_to_bf16();
    }

    /// Length of the full output of `n` input frames: `(n - 1) * stride + K`.
    pub fn output_len(&self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (n - 1) * self.stride + self.kernel
        }
    }

    /// `x`: `[batch, Cin, n]` → the full output `[batch, Cout, output_len(n)]`, without bias:
    /// `y[b, o, t*stride + j] = Σ_i x[b, i, t] · w[i, o, j]`.
    pub fn forward(&self, x: &[f32], batch: usize, n: usize) -> Vec<f32> {
        assert_eq!(x.len(), batch * self.cin * n, "transposed conv input size");
        let len = self.output_len(n);
        if len == 0 {
            return Vec::new();
        }
        if n <= FEW_COLUMNS {
            return self.forward_few(x, batch, n);
        }
        let mut y = vec![0f32; batch * self.cout * len];
        let s = self.stride;
        // Tiles own output samples [u0, u1); input frame t reaches samples t*s .. t*s + K.
        let tile = tile_columns(self.cout.max(self.cin)) * s;
        let jobs = Jobs::new(batch, len.div_ceil(tile), self.cout);
        let out = SharedOut(y.as_mut_ptr());
        (0..jobs.count(batch)).into_par_iter().for_each(|job| {
            let (b, tile_index, rows) = jobs.get(job, self.cout);
            let u0 = tile_index * tile;
            let u1 = (u0 + tile).min(len);
            let dst = unsafe { out.ptr().add((b * self.cout + rows.start) * len) };
            let src = &x[b * self.cin * n..];
            for j in 0..self.kernel {
                // Frames t with u0 ≤ t*s + j < u1.
                let t_lo = if u0 > j { (u0 - j).div_ceil(s) } else { 0 };
                let t_hi = if u1 > j {
                    ((u1 - j).div_ceil(s)).min(n)
                } else {
                    0
                };
                if t_lo >= t_hi {
                    continue;
                }
                unsafe {
                    Product {
                        m: rows.len(),
                        n: t_hi - t_lo,
                        k: self.cin,
                        dst: (dst.add(t_lo * s + j), len as isize, s as isize),
                        lhs: self.taps.lhs(j, rows.start),
                        rhs: (src.as_ptr().add(t_lo), n as isize, 1),
                    }
                    .accumulate();
                }
            }
        });
        y
    }

    /// Few input frames (a streaming step): the transposed input dotted with every (output,
    /// tap) weight row in one weight-streaming product, then added at the taps' output offsets.
    fn forward_few(&self, x: &[f32], batch: usize, n: usize) -> Vec<f32> {
        let (cout, cin, s) = (self.cout, self.cin, self.stride);
        let len = self.output_len(n);
        let mut y = vec![0f32; batch * cout * len];
        let rows = batch * n;
        let mut xt = vec![0f32; rows * cin];
        for (r, column) in xt.chunks_mut(cin.max(1)).enumerate() {
            let (b, t) = (r / n, r % n);
            for (i, value) in column.iter_mut().enumerate() {
                *value = x[(b * cin + i) * n + t];
            }
        }
        let k = self.kernel;
        let out = self.taps.product(&xt, rows, cout * k, cin);
        for (r, outs) in out.chunks((cout * k).max(1)).enumerate() {
            let (b, t) = (r / n, r % n);
            for (o, taps) in outs.chunks(k.max(1)).enumerate() {
                let at = (b * cout + o) * len + t * s;
                y[at..at + k]
                    .iter_mut()
                    .zip(taps)
                    .for_each(|(y, v)| *y += v);
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(len: usize, phase: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * 0.37 + phase).sin()).collect()
    }

    fn conv_reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        (b, cin, cout, k, s, d, t_in): (usize, usize, usize, usize, usize, usize, usize),
    ) -> Vec<f32> {
        let t_out = (t_in - ((k - 1) * d + 1)) / s + 1;
        let mut y = vec![0f32; b * cout * t_out];
        for bi in 0..b {
            for o in 0..cout {
                for t in 0..t_out {
                    let mut acc = bias[o] as f64;
                    for i in 0..cin {
                        for j in 0..k {
                            acc += (x[(bi * cin + i) * t_in + t * s + j * d] as f64)
                                * (w[(o * cin + i) * k + j] as f64);
                        }
                    }
                    y[(bi * cout + o) * t_out + t] = acc as f32;
                }
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_close_within(1e-4, got, want);
    }

    fn assert_close_within(tolerance: f32, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tolerance * (1.0 + w.abs()),
                "{i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn conv1d_matches_definition() {
        // Shapes include one tile and many (long t_in), strides, dilations, Cin or Cout of 1.
        for &(b, cin, cout, k, s, d, t_in) in &[
            (2, 3, 4, 3, 1, 1, 10),
            (1, 1, 5, 7, 1, 1, 40),
            (2, 6, 1, 7, 1, 3, 3000),
            (3, 4, 5, 4, 2, 1, 2001),
            (1, 8, 3, 10, 5, 1, 5000),
            (2, 300, 2, 1, 1, 1, 300),
            (1, 40, 100, 3, 1, 1, 4),
            (1, 24, 70, 7, 1, 1, 8),
            (1, 40, 100, 3, 1, 1, 40),
            (2, 5, 3, 3, 2, 2, 40),
        ] {
            let x = signal(b * cin * t_in, 0.0);
            let w = signal(cout * cin * k, 1.0);
            let bias = signal(cout, 2.0);
            let conv = PackedConv1d::new(&w, &bias, (cout, cin, k), s, d);
            let dims = (b, cin, cout, k, s, d, t_in);
            assert_close(
                &conv.forward(&x, b, t_in),
                &conv_reference(&x, &w, &bias, dims),
            );
        }
    }

    #[test]
    fn conv1d_adds_the_residual() {
        // A long call (GEMM tiles) and a streaming-sized one (dot products).
        for (b, cin, cout, k, t) in [(2, 3, 4, 3, 1500), (2, 3, 4, 3, 6)] {
            let x = signal(b * cin * t, 0.0);
            let w = signal(cout * cin * k, 1.0);
            let conv = PackedConv1d::new(&w, &[0.5; 4], (cout, cin, k), 1, 1);
            let residual = signal(b * cout * (t - k + 1), 3.0);
            let want: Vec<f32> = conv
                .forward(&x, b, t)
                .iter()
                .zip(&residual)
                .map(|(y, r)| y + r)
                .collect();
            assert_close(&conv.forward_onto(&x, b, t, Some(&residual)), &want);
        }
    }

    #[test]
    fn conv1d_shorter_than_span_is_empty() {
        let conv = PackedConv1d::new(&[1.0; 6], &[0.0; 2], (2, 1, 3), 1, 2);
        assert_eq!(conv.output_len(4), 0);
        assert!(conv.forward(&[0.0; 4], 1, 4).is_empty());
    }

    #[test]
    fn transposed_conv_matches_definition() {
        for &(b, cin, cout, k, s, n) in &[
            (2, 3, 2, 4, 2, 3),
            (1, 2, 3, 5, 2, 400),
            (2, 4, 1, 3, 3, 2),
            (1, 5, 4, 16, 8, 900),
            (3, 2, 2, 12, 6, 37),
            (1, 40, 100, 16, 8, 2),
            (1, 40, 100, 16, 8, 20),
        ] {
            let x = signal(b * cin * n, 0.5);
            let w = signal(cin * cout * k, 1.5);
            let conv = PackedConvTranspose1d::new(&w, (cin, cout, k), s);
            let len = conv.output_len(n);
            let mut want = vec![0f32; b * cout * len];
            for bi in 0..b {
                for i in 0..cin {
                    for o in 0..cout {
                        for t in 0..n {
                            for j in 0..k {
                                want[(bi * cout + o) * len + t * s + j] +=
                                    x[(bi * cin + i) * n + t] * w[(i * cout + o) * k + j];
                            }
                        }
                    }
                }
            }
            assert_close(&conv.forward(&x, b, n), &want);
        }
    }

    /// bfloat16 weights: both paths (GEMM for long calls, bf16 dot products for streaming-sized
    /// calls) compute with the same rounded weights.
    mod bf16 {
        use half::bf16;

        use super::*;

        fn rounded(w: &[f32]) -> Vec<f32> {
            w.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
        }

        #[test]
        fn rounded_conv_equals_a_conv_of_rounded_weights_on_both_paths() {
            let (b, cin, cout, k) = (2, 24, 20, 3);
            let w = signal(cout * cin * k, 0.3);
            let bias = signal(cout, 1.0);
            let mut conv = PackedConv1d::new(&w, &bias, (cout, cin, k), 1, 2);
            conv.round_to_bf16();
            let exact = PackedConv1d::new(&rounded(&w), &bias, (cout, cin, k), 1, 2);
            for t in [6, 400] {
                let x = signal(b * cin * t, 2.0);
                assert_close_within(1e-5, &conv.forward(&x, b, t), &exact.forward(&x, b, t));
            }
            assert_ne!(rounded(&w), w, "the test weights must change when rounded");
        }

        #[test]
        fn rounded_transposed_conv_equals_one_of_rounded_weights_on_both_paths() {
            let (b, cin, cout, k, s) = (2, 24, 20, 8, 4);
            let w = signal(cin * cout * k, 0.7);
            let mut conv = PackedConvTranspose1d::new(&w, (cin, cout, k), s);
            conv.round_to_bf16();
            let exact = PackedConvTranspose1d::new(&rounded(&w), (cin, cout, k), s);
            for n in [2, 300] {
                let x = signal(b * cin * n, 1.1);
                assert_close_within(1e-5, &conv.forward(&x, b, n), &exact.forward(&x, b, n));
            }
        }
    }
}
