//! The main transformer, embeddings and heads as [`DecoderWeights`]: what the kernels' decoding
//! step (reference or CUDA) runs. Patterns whose step is one forward and the main heads
//! (parallel, delay, flattened, and the text streams beside them) are covered; the depth and
//! coarse-first decodings have a second model per step and are not.

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
        let stacked = |tables: &mut dyn Iterator<Item = Result<Vec<f32>>>| -> Result<Vec<f32>> {
            Ok(tables.collect::<Result<Vec<_>>>()?.concat())
        };
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
            embeddings: stacked(&mut self.embedding_tables().iter().map(host_values))?,
            heads: stacked(&mut self.head_weights().iter().map(Linear::host_weight))?,
            layers,
            norm,
        };
        weights
            .validate()
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(weights)
    }
}
