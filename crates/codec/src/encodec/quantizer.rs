//! HF's `EncodecResidualVectorQuantizer`: codebook q (`quantizer.layers.{q}.codebook.embed`,
//! `[codebook_size, hidden_size]`) quantizes what codebooks < q left over, by the nearest vector
//! in Euclidean distance, computed in HF's order `(‖x‖² − 2·x·e) + ‖e‖²` (first index on ties).
//! The training buffers `inited`, `cluster_size` and `embed_avg` are read and ignored.

use candle_core::{DType, Tensor, D};
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use super::EncodecConfig;

struct Codebook {
    /// `[bins, dim]`
    vectors: Tensor,
    /// `[1, bins]`: squared norm of each vector.
    norms: Tensor,
}

pub(crate) struct Rvq {
    /// The first `num_codebooks` codebooks of the checkpoint.
    books: Vec<Codebook>,
}

impl Rvq {
    /// Loads all `total_codebooks` (so that every tensor is accounted for), keeps `num_codebooks`.
    pub fn load(ckpt: &mut Checkpoint, cfg: &EncodecConfig) -> Result<Self> {
        let (bins, dim) = (cfg.codebook_size, cfg.hidden_size);
        let mut books = Vec::with_capacity(cfg.num_codebooks);
        for q in 0..cfg.total_codebooks {
            let prefix = format!("quantizer.layers.{q}.codebook");
            let vectors = ckpt.take(&format!("{prefix}.embed"), &[bins, dim])?;
            for (buffer, shape) in [
                ("inited", vec![1]),
                ("cluster_size", vec![bins]),
                ("embed_avg", vec![bins, dim]),
            ] {
                let name = format!("{prefix}.{buffer}");
                if ckpt.contains(&name) {
                    ckpt.take(&name, &shape)?;
                }
            }
            if q < cfg.num_codebooks {
                let norms = vectors.sqr()?.sum_keepdim(1)?.t()?.contiguous()?;
                books.push(Codebook { vectors, norms });
            }
        }
        Ok(Self { books })
    }

    /// Latent `[B, D, F]` → codes `[B, Q, F]` (i64).
    pub fn encode(&self, latent: &Tensor) -> Result<Tensor> {
        let (b, d, f) = latent.dims3()?;
        let mut residual = latent.transpose(1, 2)?.reshape((b * f, d))?.contiguous()?;
        let mut codes = Vec::with_capacity(self.books.len());
        for book in &self.books {
            let own = residual.sqr()?.sum_keepdim(1)?;
            let scores = (residual.matmul(&book.vectors.t()?)? * 2.0)?;
            let dist = own.broadcast_sub(&scores)?.broadcast_add(&book.norms)?;
            let idx = dist.argmin(D::Minus1)?;
            residual = (residual - book.vectors.index_select(&idx, 0)?)?;
            codes.push(idx);
        }
        let codes = Tensor::stack(&codes, 0)?
            .reshape((self.books.len(), b, f))?
            .transpose(0, 1)?
            .to_dtype(DType::I64)?;
        Ok(codes.contiguous()?)
    }

    /// Codes `[B, q, F]` (q ≤ Q, values range-checked) → latent `[B, D, F]`.
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor> {
        let (b, q, f) = codes.dims3()?;
        let codes = codes.to_dtype(DType::U32)?;
        let mut latent: Option<Tensor> = None;
        for (i, book) in self.books.iter().take(q).enumerate() {
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
