//! The codec decode on a CUDA GPU (feature `cuda`): [`Codec::cuda_decoder`] uploads
//! [`Codec::decoder_weights`] to a [`CudaCodecDecoder`].

use speechinfer_core::Result;
use speechinfer_kernels::cuda::CudaCodecDecoder;

use crate::model::Codec;

impl Codec {
    /// A decoder on GPU `ordinal` with this codec's weights (speechinfer codecs only).
    pub fn cuda_decoder(&self, ordinal: usize) -> Result<CudaCodecDecoder> {
        Ok(CudaCodecDecoder::new(&self.decoder_weights()?, ordinal)?)
    }
}

#[cfg(test)]
mod tests {
    use speechinfer_kernels::cuda::gpu_for_test;

    use crate::tests_kernels::{assert_close, codes_of, random_codec};

    /// The GPU decode against this crate's own decode, at full and reduced bitrate.
    #[test]
    fn cuda_decode_matches_codec_decode() {
        if !gpu_for_test() {
            return;
        }
        let codec = random_codec(Default::default());
        let gpu = codec.cuda_decoder(0).unwrap();
        for (batch, q, frames) in [(1, 8, 1), (2, 3, 50), (1, 8, 400)] {
            let (codes, tensor) = codes_of(&codec, batch, q, frames);
            let want = codec.decode(&tensor).unwrap();
            assert_close(
                &gpu.decode(&codes, batch, q, frames).unwrap(),
                &want,
                "cuda",
            );
        }
    }
}
