//! Mimi's split residual VQ: `rvq_first` (1 semantic codebook) and `rvq_rest` (the acoustic
//! ones) each project the same latent with their own 1x1 `input_proj` and quantize it
//! residually; decoding sums each half's codebook vectors, applies each half's `output_proj` and
//! adds the two. Codebook vectors are `embedding_sum / max(cluster_usage, 1e-5)`.

use candle_core::{DType, Tensor, D};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use super::{take_weight, MimiConfig};

/// moshi's `EuclideanCodebook.epsilon`.
const USAGE_EPS: f64 = 1e-5;

struct Codebook {
    /// `[bins, dim]`
    vectors: Tensor,
    /// `[1, bins]`: squared norm of each vector.
    norms: Tensor,
}

/// One residual VQ with its projections.
struct Rvq {
    /// `[in, dim]`, transposed from the `[dim, in, 1]` conv weight.
    input_proj: Tensor,
    /// `[dim, out]`, transposed.
    output_proj: Tensor,
    books: Vec<Codebook>,
}

impl Rvq {
    /// Loads all `layers` codebooks (so that every tensor is accounted for) and keeps `used`.
    fn load(
        ckpt: &mut Checkpoint,
        prefix: &str,
        cfg: &MimiConfig,
        layers: usize,
        used: usize,
    ) -> Result<Self> {
        let (d, dim, bins) = (cfg.dimension, cfg.codebook_dim, cfg.codebook_size);
        let proj = |ckpt: &mut Checkpoint, name: &str, out: usize, inp: usize| -> Result<Tensor> {
            let w = take_weight(ckpt, &format!("{prefix}.{name}"), &[out, inp, 1])?;
            Ok(w.reshape((out, inp))?.t()?.contiguous()?)
        };
        let input_proj = proj(ckpt, "input_proj", dim, d)?;
        let output_proj = proj(ckpt, "output_proj", d, dim)?;
        let mut books = Vec::with_capacity(used);
        for q in 0..layers {
            let book = format!("{prefix}.vq.layers.{q}._codebook");
            // Training-only flag, present in released files.
            if ckpt.contains(&format!("{book}._initialized")) {
                ckpt.take(&format!("{book}._initialized"), &[1])?;
            }
            let usage = ckpt.take(&format!("{book}.cluster_usage"), &[bins])?;
            let sum = ckpt.take(&format!("{book}.embedding_sum"), &[bins, dim])?;
            if q < used {
                let usage = usage.maximum(USAGE_EPS)?.reshape((bins, 1))?;
                let vectors = sum.broadcast_div(&usage)?.contiguous()?;
                let norms = vectors.sqr()?.sum_keepdim(1)?.t()?.contiguous()?;
                books.push(Codebook { vectors, norms });
            }
        }
        Ok(Self {
            input_proj,
            output_proj,
            books,
        })
    }

    /// Latent rows `[N, d]` → codes `[n_books, N]` (u32).
    fn encode(&self, latent: &Tensor) -> Result<Vec<Tensor>> {
        let mut residual = latent.matmul(&self.input_proj)?;
        let mut codes = Vec::with_capacity(self.books.len());
        for book in &self.books {
            let scores = residual.matmul(&book.vectors.t()?)?;
            let dist = book.norms.broadcast_sub(&(scores * 2.0)?)?;
            let idx = dist.argmin(D::Minus1)?;
            residual = (residual - book.vectors.index_select(&idx, 0)?)?;
            codes.push(idx);
        }
        Ok(codes)
    }

    /// Codes `[q, N]` (u32, q ≤ books) → `[N, out]`.
    fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let q = codes.dim(0)?;
        let mut sum: Option<Tensor> = None;
        for (i, book) in self.books.iter().take(q).enumerate() {
            let vectors = book.vectors.index_select(&codes.get(i)?, 0)?;
            sum = Some(match sum {
                Some(acc) => (acc + vectors)?,
                None => vectors,
            });
        }
        let sum = sum.ok_or_else(|| Error::internal("decoding zero codebooks"))?;
        Ok(sum.matmul(&self.output_proj)?)
    }
}

pub(crate) struct SplitRvq {
    first: Rvq,
    rest: Rvq,
    semantic: usize,
    dimension: usize,
}

impl SplitRvq {
    pub fn load(ckpt: &mut Checkpoint, cfg: &MimiConfig) -> Result<Self> {
        let semantic = cfg.num_semantic_codebooks;
        let rest_total = cfg.total_codebooks - semantic;
        let first = Rvq::load(ckpt, "quantizer.rvq_first", cfg, semantic, semantic)?;
        let rest_used = cfg.num_codebooks.saturating_sub(semantic);
        let rest = Rvq::load(ckpt, "quantizer.rvq_rest", cfg, rest_total, rest_used)?;
        Ok(Self {
            first,
            rest,
            semantic,
            dimension: cfg.dimension,
        })
    }

    /// Latent `[B, d, F]` → codes `[B, Q, F]` (i64).
    pub fn encode(&self, latent: &Tensor) -> Result<Tensor> {
        let (b, d, f) = latent.dims3()?;
        let rows = latent.transpose(1, 2)?.reshape((b * f, d))?;
        let mut codes = self.first.encode(&rows)?;
        if !self.rest.books.is_empty() {
            codes.extend(self.rest.encode(&rows)?);
        }
        let q = codes.len();
        let codes = Tensor::stack(&codes, 0)?
            .reshape((q, b, f))?
            .transpose(0, 1)?
            .to_dtype(DType::I64)?;
        Ok(codes.contiguous()?)
    }

    /// Codes `[B, q, F]` (range-checked, 1 ≤ q ≤ Q) → latent `[B, d, F]`.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, q, f) = codes.dims3()?;
        // `[q, B·F]`, frames in (batch, time) order.
        let codes = codes
            .to_dtype(DType::U32)?
            .transpose(0, 1)?
            .reshape((q, b * f))?;
        let head = q.min(self.semantic);
        let mut latent = self.first.decode(&codes.narrow(0, 0, head)?)?;
        if q > head {
            latent = (latent + self.rest.decode(&codes.narrow(0, head, q - head)?)?)?;
        }
        Ok(latent
            .reshape((b, f, self.dimension))?
            .transpose(1, 2)?
            .contiguous()?)
    }
}
