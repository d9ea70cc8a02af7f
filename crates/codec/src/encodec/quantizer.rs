//! HF's `EncodecResidualVectorQuantizer`: codebook q (`quantizer.layers.{q}.codebook.embed`,
//! `[codebook_size, hidden_size]`) quantizes what codebooks < q left over, by the nearest vector
//! in Euclidean distance, computed in HF's order `(‖x‖² − 2·x·e) + ‖e‖²` (first index on ties).
//! The training buffers `inited`, `cluster_size` and `embed_avg` are read and ignored.

use speechinfer_core::weights::Checkpoint;
use speechinfer_core::Result;

use crate::rvq::ResidualVq;

use super::EncodecConfig;

/// Loads all `total_codebooks` (so that every tensor is accounted for) and returns the shared
/// residual quantizer over the first `num_codebooks`, with HF's distance order.
pub(crate) fn load(ckpt: &mut Checkpoint, cfg: &EncodecConfig) -> Result<ResidualVq> {
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
            books.push(vectors);
        }
    }
    ResidualVq::from_vectors(books, true)
}
