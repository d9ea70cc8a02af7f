//! Residual vector quantizer: codebook q quantizes what codebooks < q left over.

use candle_core::{DType, Tensor, D};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::config::CodecConfig;

struct Codebook {
    /// `[codebook_size, dimension]`
    vectors: Tensor,
    /// `[1, codebook_size]`: squared norm of each vector.
    norms: Tensor,
}

pub(crate) struct ResidualVq {
    codebooks: Vec<Codebook>,
    /// Add `‖x‖²` to the distances before the argmin, in the order `(‖x‖² − 2·x·e) + ‖e‖²`
    /// (Hugging Face EnCodec), so that float ties resolve as in that implementation; without it
    /// the order is `‖e‖² − 2·x·e` (the engine's own codec and its twin).
    full_distance: bool,
}

impl ResidualVq {
    pub fn load(ckpt: &mut Checkpoint, cfg: &CodecConfig) -> Result<Self> {
        let vectors = (0..cfg.num_codebooks)
            .map(|q| {
                ckpt.take(
                    &format!("quantizer.layers.{q}.codebook"),
                    &[cfg.codebook_size, cfg.dimension],
                )
            })
            .collect::<Result<_>>()?;
        Self::from_vectors(vectors, false)
    }

    /// A quantizer over codebooks `[codebook_size, dimension]`, in order.
    pub fn from_vectors(vectors: Vec<Tensor>, full_distance: bool) -> Result<Self> {
        let codebooks = vectors
            .into_iter()
            .map(|vectors| {
                let norms = vectors.sqr()?.sum_keepdim(1)?.t()?.contiguous()?;
                Ok(Codebook { vectors, norms })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            codebooks,
            full_distance,
        })
    }

    /// Every codebook stacked, `[Q, codebook_size, dimension]` as f32 values.
    pub fn stacked_codebooks(&self) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for book in &self.codebooks {
            let values = book.vectors.to_dtype(DType::F32)?.flatten_all()?;
            out.extend(values.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// Latent `[B, D, F]` → codes `[B, Q, F]` (i64).
    pub fn encode(&self, latent: &Tensor) -> Result<Tensor> {
        let (b, d, f) = latent.dims3()?;
        let mut residual = latent.transpose(1, 2)?.reshape((b * f, d))?.contiguous()?;
        let mut codes = Vec::with_capacity(self.codebooks.len());
        for book in &self.codebooks {
            let scores = (residual.matmul(&book.vectors.t()?)? * 2.0)?;
            let dist = if self.full_distance {
                let own = residual.sqr()?.sum_keepdim(1)?;
                own.broadcast_sub(&scores)?.broadcast_add(&book.norms)?
            } else {
                book.norms.broadcast_sub(&scores)?
            };
            let idx = dist.argmin(D::Minus1)?;
            residual = (residual - book.vectors.index_select(&idx, 0)?)?;
            codes.push(idx);
        }
        let codes = Tensor::stack(&codes, 0)?
            .reshape((self.codebooks.len(), b, f))?
            .transpose(0, 1)?
            .to_dtype(DType::I64)?;
        Ok(codes.contiguous()?)
    }

    /// Codes `[B, q, F]` (q ≤ Q, values already range-checked) → latent `[B, D, F]`.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, q, f) = codes.dims3()?;
        let codes = codes.to_dtype(DType::U32)?;
        let mut latent: Option<Tensor> = None;
        for (i, book) in self.codebooks.iter().take(q).enumerate() {
            let ids = codes.narrow(1, i, 1)?.flatten_all()?;
            let vectors = book.vectors.index_select(&ids, 0)?;
            latent = Some(match latent {
                Some(sum) => (sum + vectors)?,
                None => vectors,
            });
        }
        let latent = latent.ok_or_else(|| Error::input("codes hold no codebook (q = 0)"))?;
        let d = latent.dim(1)?;
        Ok(latent.reshape((b, f, d))?.transpose(1, 2)?.contiguous()?)
    }
}
