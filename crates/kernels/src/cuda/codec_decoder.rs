//! [`CudaCodecDecoder`]: the reference codec decode (`codec::reference::decode`) on a GPU, one
//! kernel per reference function.

use cudarc::driver::{CudaSlice, CudaView};

use super::runtime::{cuda_err, grid, launch, raw_ptr, Arg, CodecRuntime};
use crate::codec::{check_codes, CodecDecoderWeights, ConvKind, ConvLayer, Skip};
use crate::KernelError;

const THREADS: u32 = 256;
/// Largest grid y / z dimension (channels, batch items).
const MAX_GRID_YZ: usize = 65_535;

/// A codec decoder's weights on one GPU. `decode` takes codes `[B, q, F]` (any q up to the
/// codec's codebooks) and returns the audio `[B, channels, F · hop]`; buffers are allocated per
/// call, so one decoder serves any batch and length.
pub struct CudaCodecDecoder {
    rt: CodecRuntime,
    dimension: usize,
    codebook_size: usize,
    num_codebooks: usize,
    codebooks: CudaSlice<f32>,
    /// Shapes (weights cleared) with their device weights and biases.
    layers: Vec<(ConvLayer, CudaSlice<f32>, CudaSlice<f32>)>,
}

impl CudaCodecDecoder {
    /// Uploads `weights` to GPU `ordinal`.
    pub fn new(weights: &CodecDecoderWeights, ordinal: usize) -> Result<Self, KernelError> {
        weights.validate()?;
        if let Some(l) = weights.layers.iter().find(|l| l.cout > MAX_GRID_YZ) {
            return Err(KernelError::Unsupported(format!(
                "{}: {} output channels (at most {MAX_GRID_YZ})",
                l.name, l.cout
            )));
        }
        let rt = CodecRuntime::new(ordinal)?;
        let up = |v: &[f32]| rt.stream.clone_htod(v).map_err(cuda_err);
        let layers = weights
            .layers
            .iter()
            .map(|l| Ok((l.shape_only(), up(&l.weight)?, up(&l.bias)?)))
            .collect::<Result<Vec<_>, KernelError>>()?;
        Ok(Self {
            codebooks: up(&weights.codebooks)?,
            dimension: weights.dimension,
            codebook_size: weights.codebook_size,
            num_codebooks: weights.num_codebooks(),
            layers,
            rt,
        })
    }

    /// Codes `[batch, q, frames]` → audio `[batch, channels, frames · hop]`.
    pub fn decode(
        &self,
        codes: &[i64],
        batch: usize,
        q: usize,
        frames: usize,
    ) -> Result<Vec<f32>, KernelError> {
        check_codes(
            codes,
            [batch, q, frames],
            self.num_codebooks,
            self.codebook_size,
        )?;
        if batch > MAX_GRID_YZ {
            return Err(KernelError::Unsupported(format!(
                "a batch of {batch} (at most {MAX_GRID_YZ})"
            )));
        }
        let st = &self.rt.stream;
        // Every activation fits the largest layer input or output.
        let mut t = frames;
        let mut largest = self.dimension * frames;
        for (l, _, _) in &self.layers {
            t = l.output_len(t);
            largest = largest.max(l.cout * t).max(l.cin * t);
        }
        let len = batch
            .checked_mul(largest)
            .filter(|&n| n < i32::MAX as usize)
            .ok_or_else(|| {
                KernelError::Unsupported(format!(
                    "{batch} × {largest} values in one activation (at most 2^31)"
                ))
            })?;
        // Roles: current activation, its ELU, a kept residual input, the next output.
        let buffers = (0..4)
            .map(|_| st.alloc_zeros::<f32>(len.max(1)).map_err(cuda_err))
            .collect::<Result<Vec<_>, KernelError>>()?;
        let ptr = |i: usize| Arg::Ptr(raw_ptr(st, &buffers[i]));
        let codes_dev = st.clone_htod(codes).map_err(cuda_err)?;
        let int = |v: usize| Arg::Int(v as i32);
        let blocks = |n: usize| (n as u32).div_ceil(THREADS);
        launch(
            st,
            &self.rt.rvq_sum,
            grid(
                (blocks(frames), self.dimension as u32, batch as u32),
                THREADS,
                0,
            ),
            &[
                ptr(0),
                Arg::Ptr(raw_ptr(st, &self.codebooks)),
                Arg::Ptr(raw_ptr(st, &codes_dev)),
                int(q),
                int(self.codebook_size),
                int(self.dimension),
                int(frames),
            ],
        )?;
        let (mut cur, mut kept, mut t) = (0usize, None::<usize>, frames);
        for (l, w, bias) in &self.layers {
            let free = |busy: &[usize]| (0..4).find(|i| !busy.contains(i)).unwrap_or(3);
            if l.skip == Skip::Save {
                kept = Some(cur);
            }
            let mut input = cur;
            if l.elu_input {
                input = free(&[cur, kept.unwrap_or(cur)]);
                let n = batch * l.cin * t;
                launch(
                    st,
                    &self.rt.elu_copy,
                    grid((blocks(n), 1, 1), THREADS, 0),
                    &[ptr(input), ptr(cur), Arg::Long(n as i64)],
                )?;
            }
            let out = free(&[cur, input, kept.unwrap_or(cur)]);
            let t_out = l.output_len(t);
            let cfg = grid((blocks(t_out), l.cout as u32, batch as u32), THREADS, 0);
            let (w, bias) = (Arg::Ptr(raw_ptr(st, w)), Arg::Ptr(raw_ptr(st, bias)));
            match l.kind {
                ConvKind::Conv => {
                    let residual = match l.skip {
                        Skip::Add => kept.take(),
                        _ => None,
                    };
                    launch(
                        st,
                        &self.rt.conv1d_causal,
                        cfg,
                        &[
                            ptr(out),
                            ptr(input),
                            w,
                            bias,
                            ptr(residual.unwrap_or(out)),
                            int(usize::from(residual.is_some())),
                            int(l.cin),
                            int(l.cout),
                            int(l.kernel),
                            int(l.stride),
                            int(l.dilation),
                            int(l.context()),
                            int(t),
                            int(t_out),
                        ],
                    )?
                }
                ConvKind::Transposed => launch(
                    st,
                    &self.rt.conv_transpose1d_causal,
                    cfg,
                    &[
                        ptr(out),
                        ptr(input),
                        w,
                        bias,
                        int(l.cin),
                        int(l.cout),
                        int(l.kernel),
                        int(l.stride),
                        int(t),
                    ],
                )?,
            }
            cur = out;
            t = t_out;
        }
        let channels = self.layers.last().map_or(0, |(l, _, _)| l.cout);
        let n = batch * channels * t;
        let view: CudaView<f32> = buffers[cur].slice(0..n);
        let mut audio = vec![0f32; n];
        st.memcpy_dtoh(&view, &mut audio).map_err(cuda_err)?;
        st.synchronize().map_err(cuda_err)?;
        Ok(audio)
    }
}
