//! The main transformer, embeddings and heads as [`DecoderWeights`]: what the kernels' decoding
//! step (reference or CUDA) runs. Patterns whose step is one forward and the main heads
//! (parallel, delay, flattened, and the text streams beside them) are covered; the depth and
//! coarse-first decodings have a second model per step and are not.

use candle_core::Tensor;
use speechinfer_core::{Error, Result};
use speechinfer_kernels::{DecoderSizes, DecoderWeights};

use crate::config::Decoding;
use crate::linear::{host_values, Linear};
use crate::model::SpeechLm;

impl SpeechLm {
    /// The weights of one decoding step (int8 models give their dequantized values).
    pub fn decoder_weights(&self) -> Result<DecoderWeights> {
        let config = self.config();
        if matches!(config.decoding()?, Decoding::Depth | Decoding::CoarseFirst) {
            return Err(Error::input(format!(
                "the kernels' decoding step has no {:?} stage model",
                config.decoding()?
            )));
        }
        let main = &config.streams[..config.main_streams()];
        let sizes = self.transformer().sizes();
        let (layers, norm) = self.transformer().export()?;
        let weights = DecoderWeights {
            sizes: DecoderSizes {
                d_model: sizes.d_model,
                n_layers: sizes.n_layers,
                n_heads: sizes.n_heads,
                n_kv_heads: sizes.n_kv_heads,
                head_dim: sizes.head_dim(),
                ffn_dim: sizes.ffn_dim,
                norm_eps: sizes.norm_eps as f32,
                rope_theta: sizes.rope_theta,
                max_positions: sizes.max_positions,
                vocab_sizes: main.iter().map(|s| s.vocab_size).collect(),
            },
            embeddings: concat(self.embedding_tables().iter().map(host_values))?,
            heads: concat(self.head_weights().iter().map(Linear::host_weight))?,
            layers,
            norm,
        };
        weights
            .validate()
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(weights)
    }
}

fn concat(parts: impl Iterator<Item = Result<Vec<f32>>>) -> Result<Vec<f32>> {
    Ok(parts.collect::<Result<Vec<_>>>()?.concat())
}

/// A decoding step's logits as [`SpeechLm::forward`] returns them (one `[B, 1, V_k]` per
/// stream) in the kernels' layout `[B, ΣV]` (each row: stream 0's logits, stream 1's, ...).
pub fn stack_stream_logits(per_stream: &[Tensor]) -> Result<Vec<f32>> {
    let rows = per_stream
        .iter()
        .map(|t| Ok(t.flatten_from(1)?.to_vec2::<f32>()?))
        .collect::<Result<Vec<_>>>()?;
    let batch = rows.first().map_or(0, Vec::len);
    Ok((0..batch)
        .flat_map(|b| rows.iter().flat_map(move |r| r[b].iter().copied()))
        .collect())
}
