//! The LM's decoding step on a CUDA GPU (feature `cuda`): [`SpeechLm::cuda_decoder`] uploads
//! [`SpeechLm::decoder_weights`] to a [`CudaDecoder`].

use speechinfer_core::Result;
use speechinfer_kernels::cuda::CudaDecoder;

use crate::model::SpeechLm;

impl SpeechLm {
    /// A decoder for `batch` sequences on GPU `ordinal`, with this model's weights.
    pub fn cuda_decoder(&self, batch: usize, ordinal: usize) -> Result<CudaDecoder> {
        Ok(CudaDecoder::new(&self.decoder_weights()?, batch, ordinal)?)
    }
}

#[cfg(test)]
mod tests {
    use speechinfer_core::rng::Rng;
    use speechinfer_core::sampling::{sample, SamplingParams};
    use speechinfer_kernels::cuda::{gpu_for_test, StreamSampling};

    use crate::decode_export::stack_stream_logits;
    use crate::model::GridShape;
    use crate::tests::{model, small, tokens};

    /// Logits against the candle forward, and tokens sampled on the device against
    /// `speechinfer_core::sampling::sample` on those logits with the same generator.
    #[test]
    fn cuda_step_matches_forward_and_core_sampling() {
        if !gpu_for_test() {
            return;
        }
        let lm = model(small("delay", [0, 1], false));
        let (batch, k_n, steps) = (2, lm.num_streams(), 8);
        let mut gpu = lm.cuda_decoder(batch, 0).unwrap();
        let mut cache = lm.new_cache(batch).unwrap();
        let grid = tokens(GridShape::new(batch, k_n, steps), 3);
        let vocab: Vec<usize> = lm.config().vocab_sizes()[..k_n].to_vec();
        let params = SamplingParams {
            temperature: 0.8,
            top_k: Some(5),
            ..SamplingParams::default()
        };
        let stream = StreamSampling {
            temperature: 0.8,
            top_k: Some(5),
            allowed: None,
        };
        gpu.set_sampling(&vec![stream; k_n]).unwrap();
        let mut rngs: Vec<Rng> = (0..batch as u64).map(Rng::new).collect();
        gpu.set_rng_states(&rngs.iter().map(Rng::state).collect::<Vec<_>>())
            .unwrap();
        for s in 0..steps {
            let ids: Vec<i64> = (0..batch * k_n).map(|i| grid[i * steps + s]).collect();
            let shape = GridShape::new(batch, k_n, 1);
            let logits =
                stack_stream_logits(&lm.forward(&ids, shape, &mut cache).unwrap()).unwrap();
            let got = gpu.step_sample(&ids).unwrap();
            let mut rows = logits.chunks_exact(logits.len() / batch);
            for (b, rng) in rngs.iter_mut().enumerate() {
                let mut row = rows.next().unwrap();
                for (k, &v) in vocab.iter().enumerate() {
                    let (stream, rest) = row.split_at(v);
                    let want = sample(&mut stream.to_vec(), &params, &[], rng).unwrap();
                    assert_eq!(
                        got[b * k_n + k],
                        i64::from(want),
                        "step {s} row {b} stream {k}"
                    );
                    row = rest;
                }
            }
        }
        let states: Vec<[u64; 4]> = rngs.iter().map(Rng::state).collect();
        assert_eq!(gpu.rng_states().unwrap(), states);
    }
}
