//! The kernels' reference codec decode against this crate's decode: same weights, same codes,
//! audio within 1e-4 of the largest sample (the contract the CUDA decode shares).

use candle_core::{Device, Tensor};
use speechinfer_core::weights::Checkpoint;
use speechinfer_kernels::codec::reference;

use crate::{Codec, CodecConfig};

pub(crate) fn random_codec(config: CodecConfig) -> Codec {
    let device = Device::Cpu;
    Codec::from_checkpoint(config, Checkpoint::random(0.05, &device), device).unwrap()
}

/// Deterministic codes `[batch, q, frames]`, as values and as a tensor.
pub(crate) fn codes_of(codec: &Codec, batch: usize, q: usize, frames: usize) -> (Vec<i64>, Tensor) {
    let size = codec.codebook_size();
    let codes: Vec<i64> = (0..batch * q * frames)
        .map(|i| ((i * 7919 + 13) % size) as i64)
        .collect();
    let tensor = Tensor::from_slice(&codes, (batch, q, frames), &Device::Cpu).unwrap();
    (codes, tensor)
}

pub(crate) fn assert_close(got: &[f32], want: &Tensor, what: &str) {
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: silent reference");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            (w - g).abs() <= 1e-4 * scale,
            "{what}: sample {i} of [B, C, T]: codec {w}, kernels {g} (largest |sample| {scale})"
        );
    }
}

#[test]
fn reference_decode_matches_codec_decode() {
    let configs = [
        CodecConfig {
            n_filters: 8,
            ratios: vec![4, 3, 2],
            dimension: 16,
            num_codebooks: 4,
            codebook_size: 64,
            ..CodecConfig::default()
        },
        CodecConfig {
            channels: 2,
            n_filters: 8,
            ratios: vec![3, 2],
            n_residual_layers: 2,
            dilation_base: 3,
            compress: 4,
            dimension: 8,
            num_codebooks: 2,
            codebook_size: 32,
            ..CodecConfig::default()
        },
    ];
    for config in configs {
        let codec = random_codec(config.clone());
        let weights = codec.decoder_weights().unwrap();
        assert_eq!(weights.hop_length(), config.hop_length());
        for (batch, q, frames) in [(1, 1, 3), (2, config.num_codebooks, 37)] {
            let (codes, tensor) = codes_of(&codec, batch, q, frames);
            let got = reference::decode(&weights, &codes, batch, q, frames).unwrap();
            assert_close(
                &got,
                &codec.decode(&tensor).unwrap(),
                &format!("{config:?}"),
            );
        }
    }
}

#[test]
fn default_codec_reference_decode_matches() {
    let codec = random_codec(CodecConfig::default());
    let weights = codec.decoder_weights().unwrap();
    let (codes, tensor) = codes_of(&codec, 1, 8, 4);
    let got = reference::decode(&weights, &codes, 1, 8, 4).unwrap();
    assert_close(&got, &codec.decode(&tensor).unwrap(), "default codec");
}

#[test]
fn only_native_codecs_export_a_decoder() {
    let mimi = Codec::mimi_from_checkpoint(Checkpoint::random(0.02, &Device::Cpu), 4, Device::Cpu)
        .unwrap();
    let err = mimi.decoder_weights().unwrap_err().to_string();
    assert!(err.contains("not mimi"), "{err}");
}
