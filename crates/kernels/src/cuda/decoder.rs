//! [`CudaDecoder`]: the reference decoding step on a GPU, one kernel per reference function,
//! with device-side sampling and the whole step replayable as a CUDA graph.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaFunction, CudaGraph, CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};

use super::runtime::{cuda_err, grid, launch, raw_ptr, Arg, Runtime};
use crate::layout::{rope_tables, DecoderSizes, DecoderWeights};
use crate::reference::check_ids;
use crate::KernelError;

/// Rows one `matmul_xwt` launch takes (`MAX_ROWS` in kernels.cu).
const MAX_ROWS: usize = 8;
/// Threads of the sampling block (`SAMPLE_THREADS` in kernels.cu).
const SAMPLE_THREADS: u32 = 1024;
/// Largest vocabulary the sampler holds in shared memory.
pub const MAX_SAMPLE_VOCAB: usize = 8192;
/// Dynamic shared memory a block may use without opting in (48 KiB), minus the kernels' own.
const SHARED_BUDGET: usize = 48 * 1024 - 1024;

/// How one stream's token is drawn on the device (`speechinfer_core::sampling` semantics for
/// these options: mask, then greedy argmax at temperature 0, else temperature, top-k, one
/// inverse-CDF draw).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSampling {
    pub temperature: f32,
    pub top_k: Option<usize>,
    /// One flag per token id; `None`: all allowed.
    pub allowed: Option<Vec<bool>>,
}

impl StreamSampling {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            allowed: None,
        }
    }
}

struct DeviceLayer {
    attn_norm: CudaSlice<f32>,
    qkv: CudaSlice<f32>,
    o: CudaSlice<f32>,
    ffn_norm: CudaSlice<f32>,
    gate_up: CudaSlice<f32>,
    down: CudaSlice<f32>,
    k_cache: CudaSlice<f32>,
    v_cache: CudaSlice<f32>,
}

/// What one step does after the logits (each mode has its own captured graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Logits = 0,
    Sample = 1,
    /// Sample, then the tokens become the next step's ids and a row of the history.
    SampleFeedBack = 2,
}

/// Activations and per-sequence state on the device.
struct Buffers {
    ids: CudaSlice<i64>,
    x: CudaSlice<f32>,
    normed: CudaSlice<f32>,
    qkv: CudaSlice<f32>,
    attn: CudaSlice<f32>,
    gate_up: CudaSlice<f32>,
    act: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    tokens: CudaSlice<i64>,
    positions: CudaSlice<i32>,
    rng: CudaSlice<u64>,
    temperature: CudaSlice<f32>,
    top_k: CudaSlice<i32>,
    allowed: CudaSlice<u8>,
    /// `[max_positions, B, K]` tokens of [`CudaDecoder::generate`], and its row counter.
    history: CudaSlice<i64>,
    count: CudaSlice<i32>,
}

/// A batch of sequences decoded one step at a time on one GPU. Each step takes `ids [B, K]`
/// (`-1` = no input) and either returns the logits `[B, ΣV]` or samples `[B, K]` tokens on the
/// device (only the tokens are copied back). Not `Sync`: one decoder per thread.
pub struct CudaDecoder {
    rt: Runtime,
    sizes: DecoderSizes,
    batch: usize,
    embeddings: CudaSlice<f32>,
    heads: CudaSlice<f32>,
    norm: CudaSlice<f32>,
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    offsets: CudaSlice<i32>,
    vocab: CudaSlice<i32>,
    layers: Vec<DeviceLayer>,
    buf: Buffers,
    positions: Vec<usize>,
    use_graphs: bool,
    /// Captured steps, one per [`Mode`].
    graphs: [Option<CudaGraph>; 3],
}

fn int(v: usize, what: &str) -> Result<i32, KernelError> {
    i32::try_from(v).map_err(|_| KernelError::Shape(format!("{what} {v} exceeds i32")))
}

impl CudaDecoder {
    /// Uploads `weights` to GPU `ordinal` with a KV cache for `batch` sequences.
    pub fn new(
        weights: &DecoderWeights,
        batch: usize,
        ordinal: usize,
    ) -> Result<Self, KernelError> {
        weights.validate()?;
        let s = weights.sizes.clone();
        if batch == 0 {
            return Err(KernelError::Input(
                "a decoder needs at least one sequence".into(),
            ));
        }
        if s.max_positions * 4 > SHARED_BUDGET {
            return Err(KernelError::Unsupported(format!(
                "a context of {} positions (attention keeps its scores in shared memory: at most {})",
                s.max_positions,
                SHARED_BUDGET / 4
            )));
        }
        let rt = Runtime::new(ordinal)?;
        let st = &rt.stream;
        let up = |v: &[f32]| st.clone_htod(v).map_err(cuda_err);
        let cache = batch * s.n_kv_heads * s.max_positions * s.head_dim;
        let zeros = |n: usize| st.alloc_zeros::<f32>(n.max(1)).map_err(cuda_err);
        let layers = weights
            .layers
            .iter()
            .map(|l| {
                Ok(DeviceLayer {
                    attn_norm: up(&l.attn_norm)?,
                    qkv: up(&l.qkv)?,
                    o: up(&l.o)?,
                    ffn_norm: up(&l.ffn_norm)?,
                    gate_up: up(&l.gate_up)?,
                    down: up(&l.down)?,
                    k_cache: zeros(cache)?,
                    v_cache: zeros(cache)?,
                })
            })
            .collect::<Result<Vec<_>, KernelError>>()?;
        let (cos, sin) = rope_tables(s.rope_theta, s.head_dim, s.max_positions);
        let to_i32 = |v: Vec<usize>| -> Result<Vec<i32>, KernelError> {
            v.into_iter().map(|x| int(x, "vocabulary")).collect()
        };
        let offsets = to_i32(s.vocab_offsets())?;
        let vocab = to_i32(s.vocab_sizes.clone())?;
        let k_n = s.num_streams();
        let buf = Buffers {
            ids: st.alloc_zeros::<i64>(batch * k_n).map_err(cuda_err)?,
            x: zeros(batch * s.d_model)?,
            normed: zeros(batch * s.d_model)?,
            qkv: zeros(batch * s.qkv_dim())?,
            attn: zeros(batch * s.n_heads * s.head_dim)?,
            gate_up: zeros(batch * 2 * s.ffn_dim)?,
            act: zeros(batch * s.ffn_dim)?,
            logits: zeros(batch * s.total_vocab())?,
            tokens: st.alloc_zeros::<i64>(batch * k_n).map_err(cuda_err)?,
            positions: st.alloc_zeros::<i32>(batch).map_err(cuda_err)?,
            rng: st.clone_htod(&seeded_states(batch)).map_err(cuda_err)?,
            temperature: zeros(k_n)?,
            top_k: st.alloc_zeros::<i32>(k_n).map_err(cuda_err)?,
            allowed: st
                .clone_htod(&vec![1u8; s.total_vocab()])
                .map_err(cuda_err)?,
            history: st
                .alloc_zeros::<i64>(s.max_positions * batch * k_n)
                .map_err(cuda_err)?,
            count: st.alloc_zeros::<i32>(1).map_err(cuda_err)?,
        };
        Ok(Self {
            embeddings: up(&weights.embeddings)?,
            heads: up(&weights.heads)?,
            norm: up(&weights.norm)?,
            cos: up(&cos)?,
            sin: up(&sin)?,
            offsets: st.clone_htod(&offsets).map_err(cuda_err)?,
            vocab: st.clone_htod(&vocab).map_err(cuda_err)?,
            layers,
            buf,
            positions: vec![0; batch],
            use_graphs: true,
            graphs: [None, None, None],
            sizes: s,
            batch,
            rt,
        })
    }

    pub fn sizes(&self) -> &DecoderSizes {
        &self.sizes
    }

    /// Positions stored per sequence (= the position of its next step).
    pub fn positions(&self) -> &[usize] {
        &self.positions
    }

    /// Replay each step as a CUDA graph (default) or launch its kernels one by one.
    pub fn set_use_graphs(&mut self, on: bool) {
        self.use_graphs = on;
    }

    /// Forget every sequence (the cache buffers are kept).
    pub fn reset(&mut self) -> Result<(), KernelError> {
        let zeros = vec![0i32; self.batch];
        self.upload(&zeros, |b| &mut b.positions)?;
        self.positions.fill(0);
        Ok(())
    }

    /// Per-stream sampling, in stream order (until set: greedy everywhere).
    pub fn set_sampling(&mut self, streams: &[StreamSampling]) -> Result<(), KernelError> {
        let s = &self.sizes;
        if streams.len() != s.num_streams() {
            return Err(KernelError::Input(format!(
                "{} stream samplings for {} streams",
                streams.len(),
                s.num_streams()
            )));
        }
        let mut allowed = Vec::with_capacity(s.total_vocab());
        for (k, (p, &v)) in streams.iter().zip(&s.vocab_sizes).enumerate() {
            if !(p.temperature.is_finite() && p.temperature >= 0.0) {
                return Err(KernelError::Input(format!(
                    "stream {k}: temperature {} must be finite and >= 0",
                    p.temperature
                )));
            }
            if p.top_k == Some(0) {
                return Err(KernelError::Input(format!(
                    "stream {k}: top_k must be >= 1"
                )));
            }
            if v > MAX_SAMPLE_VOCAB {
                return Err(KernelError::Unsupported(format!(
                    "stream {k}: sampling a vocabulary of {v} (at most {MAX_SAMPLE_VOCAB})"
                )));
            }
            match &p.allowed {
                None => allowed.extend(std::iter::repeat_n(1u8, v)),
                Some(mask) if mask.len() == v && mask.contains(&true) => {
                    allowed.extend(mask.iter().map(|&a| u8::from(a)))
                }
                Some(mask) => {
                    return Err(KernelError::Input(format!(
                        "stream {k}: a mask of {} flags with {} allowed for a vocabulary of {v}",
                        mask.len(),
                        mask.iter().filter(|&&a| a).count()
                    )))
                }
            }
        }
        let temperature: Vec<f32> = streams.iter().map(|p| p.temperature).collect();
        let top_k: Vec<i32> = streams
            .iter()
            .map(|p| p.top_k.map_or(0, |k| k.min(i32::MAX as usize) as i32))
            .collect();
        self.upload(&temperature, |b| &mut b.temperature)?;
        self.upload(&top_k, |b| &mut b.top_k)?;
        self.upload(&allowed, |b| &mut b.allowed)
    }

    /// Sets each sequence's xoshiro256** state (`speechinfer_core::rng::Rng::state`).
    pub fn set_rng_states(&mut self, states: &[[u64; 4]]) -> Result<(), KernelError> {
        if states.len() != self.batch || states.iter().any(|s| s == &[0; 4]) {
            return Err(KernelError::Input(format!(
                "{} generator states for {} sequences (the all-zero state is invalid)",
                states.len(),
                self.batch
            )));
        }
        self.upload(&states.concat(), |b| &mut b.rng)
    }

    /// Each sequence's generator state after the draws so far.
    pub fn rng_states(&self) -> Result<Vec<[u64; 4]>, KernelError> {
        let flat = self.download(&self.buf.rng)?;
        Ok(flat
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect())
    }

    /// Feeds `ids [B, K]` and returns the logits `[B, ΣV]`.
    pub fn step_logits(&mut self, ids: &[i64]) -> Result<Vec<f32>, KernelError> {
        self.run_steps(ids, Mode::Logits, 1)?;
        self.download(&self.buf.logits)
    }

    /// Feeds `ids [B, K]` and samples one token per sequence and stream on the device. Fails
    /// (after the step) when a stream had every token masked.
    pub fn step_sample(&mut self, ids: &[i64]) -> Result<Vec<i64>, KernelError> {
        self.run_steps(ids, Mode::Sample, 1)?;
        let tokens = self.download(&self.buf.tokens)?;
        self.checked_tokens(tokens)
    }

    /// `steps` sampled steps with no host round trip between them: feeds `first_ids [B, K]`,
    /// then each step's sampled tokens are the next step's ids on the device (the grid of the
    /// parallel and delay patterns once every stream is past its delay). Returns the tokens
    /// `[steps, B, K]`, row `s` sampled at step `s`, copied back once at the end.
    pub fn generate(&mut self, first_ids: &[i64], steps: usize) -> Result<Vec<i64>, KernelError> {
        if steps == 0 {
            return Ok(Vec::new());
        }
        self.upload(&[0i32], |b| &mut b.count)?;
        self.run_steps(first_ids, Mode::SampleFeedBack, steps)?;
        let n = steps * self.batch * self.sizes.num_streams();
        let mut tokens = vec![0i64; n];
        let st = &self.rt.stream;
        st.memcpy_dtoh(&self.buf.history.slice(0..n), &mut tokens)
            .map_err(cuda_err)?;
        st.synchronize().map_err(cuda_err)?;
        self.checked_tokens(tokens)
    }

    fn checked_tokens(&self, tokens: Vec<i64>) -> Result<Vec<i64>, KernelError> {
        let k_n = self.sizes.num_streams();
        match tokens.iter().position(|&t| t < 0) {
            Some(i) => Err(KernelError::Input(format!(
                "sequence {} stream {}: every token is masked",
                i / k_n % self.batch,
                i % k_n
            ))),
            None => Ok(tokens),
        }
    }

    /// Uploads `ids` and runs `steps` steps of `mode` (more than one only when the steps feed
    /// themselves back).
    fn run_steps(&mut self, ids: &[i64], mode: Mode, steps: usize) -> Result<(), KernelError> {
        check_ids(&self.sizes, ids, self.batch)?;
        if let Some(&last) = self
            .positions
            .iter()
            .find(|&&p| p + steps > self.sizes.max_positions)
        {
            return Err(KernelError::Input(format!(
                "the sequence needs {} positions but the cache holds {}",
                last + steps,
                self.sizes.max_positions
            )));
        }
        let max_vocab = self.sizes.vocab_sizes.iter().copied().max().unwrap_or(0);
        if mode != Mode::Logits && max_vocab > MAX_SAMPLE_VOCAB {
            return Err(KernelError::Unsupported(format!(
                "sampling a vocabulary of {max_vocab} (at most {MAX_SAMPLE_VOCAB})"
            )));
        }
        self.upload(ids, |b| &mut b.ids)?;
        let slot = mode as usize;
        if self.use_graphs && self.graphs[slot].is_none() {
            self.graphs[slot] = Some(self.capture(mode)?);
        }
        for _ in 0..steps {
            match &self.graphs[slot] {
                Some(graph) if self.use_graphs => graph.launch().map_err(cuda_err)?,
                _ => self.enqueue_step(mode)?,
            }
        }
        // No synchronize here: the caller's download waits for the steps (and reports errors).
        self.positions.iter_mut().for_each(|p| *p += steps);
        Ok(())
    }

    fn capture(&self, mode: Mode) -> Result<CudaGraph, KernelError> {
        let st = &self.rt.stream;
        st.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_err)?;
        let enqueued = self.enqueue_step(mode);
        let graph = st
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(cuda_err)?;
        enqueued?;
        graph.ok_or_else(|| KernelError::Cuda("stream capture produced no graph".into()))
    }

    /// Every kernel of one step, in order, on the stream (captured or not).
    fn enqueue_step(&self, mode: Mode) -> Result<(), KernelError> {
        let s = &self.sizes;
        let (b, d, hd, f) = (self.batch, s.d_model, s.head_dim, s.ffn_dim);
        let (h, hkv) = (s.n_heads, s.n_kv_heads);
        let rows = grid((b as u32, 1, 1), 256, 0);
        let buf = &self.buf;
        let (h_, hkv_, hd_) = (
            int(h, "heads")?,
            int(hkv, "kv heads")?,
            int(hd, "head_dim")?,
        );
        let cap = int(s.max_positions, "max_positions")?;
        self.launch(
            &self.rt.embed_sum,
            rows,
            &[
                self.ptr(&buf.x),
                self.ptr(&self.embeddings),
                self.ptr(&buf.ids),
                self.ptr(&self.offsets),
                Arg::Int(int(s.num_streams(), "streams")?),
                Arg::Int(int(d, "d_model")?),
            ],
        )?;
        for l in &self.layers {
            self.rms_norm(&buf.x, &l.attn_norm)?;
            self.matmul(&buf.qkv, &buf.normed, &l.qkv, false, s.qkv_dim(), d)?;
            self.launch(
                &self.rt.rope_kv_write,
                grid((b as u32, 1, 1), 128, 0),
                &[
                    self.ptr(&buf.qkv),
                    self.ptr(&l.k_cache),
                    self.ptr(&l.v_cache),
                    self.ptr(&buf.positions),
                    self.ptr(&self.cos),
                    self.ptr(&self.sin),
                    Arg::Int(h_),
                    Arg::Int(hkv_),
                    Arg::Int(hd_),
                    Arg::Int(cap),
                ],
            )?;
            self.launch(
                &self.rt.attend_one,
                grid((h as u32, b as u32, 1), 128, (s.max_positions * 4) as u32),
                &[
                    self.ptr(&buf.attn),
                    self.ptr(&buf.qkv),
                    self.ptr(&l.k_cache),
                    self.ptr(&l.v_cache),
                    self.ptr(&buf.positions),
                    Arg::Int(h_),
                    Arg::Int(hkv_),
                    Arg::Int(hd_),
                    Arg::Int(cap),
                    Arg::Float((1.0 / (hd as f64).sqrt()) as f32),
                ],
            )?;
            self.matmul(&buf.x, &buf.attn, &l.o, true, d, h * hd)?;
            self.rms_norm(&buf.x, &l.ffn_norm)?;
            self.matmul(&buf.gate_up, &buf.normed, &l.gate_up, false, 2 * f, d)?;
            let n = (f * b) as u32;
            self.launch(
                &self.rt.silu_mul,
                grid((n.div_ceil(256), 1, 1), 256, 0),
                &[
                    self.ptr(&buf.act),
                    self.ptr(&buf.gate_up),
                    Arg::Int(int(f, "ffn_dim")?),
                    Arg::Int(int(b, "batch")?),
                ],
            )?;
            self.matmul(&buf.x, &buf.act, &l.down, true, d, f)?;
        }
        self.rms_norm(&buf.x, &self.norm)?;
        self.matmul(
            &buf.logits,
            &buf.normed,
            &self.heads,
            false,
            s.total_vocab(),
            d,
        )?;
        if mode != Mode::Logits {
            let max_vocab = s.vocab_sizes.iter().copied().max().unwrap_or(1);
            self.launch(
                &self.rt.sample_tokens,
                grid((b as u32, 1, 1), SAMPLE_THREADS, (max_vocab * 4) as u32),
                &[
                    self.ptr(&buf.tokens),
                    self.ptr(&buf.logits),
                    self.ptr(&self.vocab),
                    self.ptr(&self.offsets),
                    Arg::Int(int(s.num_streams(), "streams")?),
                    Arg::Int(int(s.total_vocab(), "vocabulary")?),
                    self.ptr(&buf.rng),
                    self.ptr(&buf.temperature),
                    self.ptr(&buf.top_k),
                    self.ptr(&buf.allowed),
                ],
            )?;
        }
        if mode == Mode::SampleFeedBack {
            self.launch(
                &self.rt.feed_back,
                grid((1, 1, 1), 256, 0),
                &[
                    self.ptr(&buf.ids),
                    self.ptr(&buf.tokens),
                    self.ptr(&buf.history),
                    self.ptr(&buf.count),
                    Arg::Int(int(b * s.num_streams(), "tokens per step")?),
                ],
            )?;
        }
        self.launch(
            &self.rt.advance_positions,
            grid(((b as u32).div_ceil(256), 1, 1), 256, 0),
            &[self.ptr(&buf.positions), Arg::Int(int(b, "batch")?)],
        )
    }

    /// `normed = rms_norm(x) · w`, one block per row.
    fn rms_norm(&self, x: &CudaSlice<f32>, w: &CudaSlice<f32>) -> Result<(), KernelError> {
        let s = &self.sizes;
        self.launch(
            &self.rt.rms_norm,
            grid((self.batch as u32, 1, 1), 256, 0),
            &[
                self.ptr(&self.buf.normed),
                self.ptr(x),
                self.ptr(w),
                Arg::Int(int(s.d_model, "d_model")?),
                Arg::Float(s.norm_eps),
            ],
        )
    }

    /// `out[B, n] (+)= x[B, k] · wᵀ`, launched per group of [`MAX_ROWS`] rows; with
    /// `residual`, `out` is also the residual (`x += ...`).
    fn matmul(
        &self,
        out: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        residual: bool,
        n: usize,
        k: usize,
    ) -> Result<(), KernelError> {
        let warps = 8u32;
        let cfg = grid(((n as u32).div_ceil(warps), 1, 1), warps * 32, 0);
        let (out_p, x_p, w_p) = (self.raw(out), self.raw(x), self.raw(w));
        for r0 in (0..self.batch).step_by(MAX_ROWS) {
            let rows = (self.batch - r0).min(MAX_ROWS);
            let out_at = out_p + (r0 * n * 4) as u64;
            self.launch(
                &self.rt.matmul_xwt,
                cfg,
                &[
                    Arg::Ptr(out_at),
                    Arg::Ptr(x_p + (r0 * k * 4) as u64),
                    Arg::Ptr(w_p),
                    Arg::Ptr(out_at),
                    Arg::Int(i32::from(residual)),
                    Arg::Int(rows as i32),
                    Arg::Int(int(n, "rows of a projection")?),
                    Arg::Int(int(k, "columns of a projection")?),
                ],
            )?;
        }
        Ok(())
    }

    fn launch(&self, f: &CudaFunction, cfg: LaunchConfig, args: &[Arg]) -> Result<(), KernelError> {
        launch(&self.rt.stream, f, cfg, args)
    }

    fn raw<T>(&self, s: &CudaSlice<T>) -> u64 {
        raw_ptr(&self.rt.stream, s)
    }

    fn ptr<T>(&self, s: &CudaSlice<T>) -> Arg {
        Arg::Ptr(self.raw(s))
    }

    fn upload<T: DeviceRepr>(
        &mut self,
        values: &[T],
        dst: impl FnOnce(&mut Buffers) -> &mut CudaSlice<T>,
    ) -> Result<(), KernelError> {
        let stream = self.rt.stream.clone();
        let dst = dst(&mut self.buf);
        if dst.len() != values.len() {
            return Err(KernelError::Shape(format!(
                "{} values for a buffer of {}",
                values.len(),
                dst.len()
            )));
        }
        // From pageable memory the copy is staged before this returns: `values` may go.
        stream.memcpy_htod(values, dst).map_err(cuda_err)
    }

    fn download<T: DeviceRepr + ValidAsZeroBits + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
    ) -> Result<Vec<T>, KernelError> {
        let mut out = vec![T::default(); src.len()];
        self.rt
            .stream
            .memcpy_dtoh(src, &mut out)
            .map_err(cuda_err)?;
        self.rt.stream.synchronize().map_err(cuda_err)?;
        Ok(out)
    }
}

/// Distinct nonzero placeholder states until [`CudaDecoder::set_rng_states`].
fn seeded_states(batch: usize) -> Vec<u64> {
    (0..batch as u64 * 4)
        .map(|i| 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i + 1))
        .collect()
}
