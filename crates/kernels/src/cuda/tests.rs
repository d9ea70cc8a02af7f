//! What runs without a GPU: the kernels compile with NVRTC (when libnvrtc is on the library
//! path) and the decoder fails cleanly. With a GPU: the decoder against the reference step.

use std::sync::Arc;

use super::*;
use crate::codec::reference::decode as reference_codec_decode;
use crate::codec::tests::{random_codec_weights, random_codes};
use crate::reference::ReferenceDecoder;
use crate::{DecoderSizes, DecoderWeights, LayerWeights};

#[test]
fn kernels_compile_with_nvrtc() {
    if !nvrtc_available() {
        // scripts/test.sh installs NVRTC and sets this: there the skip would hide a failure.
        assert!(
            std::env::var_os("SPEECHINFER_REQUIRE_NVRTC").is_none(),
            "SPEECHINFER_REQUIRE_NVRTC is set but libnvrtc is not on the library path"
        );
        eprintln!(
            "skipped: libnvrtc not found (install nvidia-cuda-nvrtc and set LD_LIBRARY_PATH)"
        );
        return;
    }
    for arch in ["compute_75", "compute_90"] {
        let ptx = compile_kernels(Some(arch)).unwrap().to_src();
        let codec_ptx = compile_codec_kernels(Some(arch)).unwrap().to_src();
        let all = [
            (&ptx, &KERNEL_NAMES[..]),
            (&codec_ptx, &CODEC_KERNEL_NAMES[..]),
        ];
        for (ptx, names) in all {
            for name in names {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{arch}: no kernel {name}"
                );
            }
        }
    }
}

#[test]
fn decoder_without_a_device_is_a_typed_error() {
    if driver_available() {
        return;
    }
    let err = CudaDecoder::new(&random_weights(1), 1, 0).err().unwrap();
    assert!(matches!(err, crate::KernelError::Cuda(_)), "{err}");
    let err = CudaCodecDecoder::new(&random_codec_weights(1), 0)
        .err()
        .unwrap();
    assert!(matches!(err, crate::KernelError::Cuda(_)), "{err}");
}

/// Small random weights (xorshift, values in ±0.3).
pub(crate) fn random_weights(seed: u64) -> DecoderWeights {
    let sizes = DecoderSizes {
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn_dim: 96,
        norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_positions: 40,
        vocab_sizes: vec![37, 300],
    };
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
            })
            .collect()
    };
    let (d, f, s) = (sizes.d_model, sizes.ffn_dim, &sizes);
    let ones = vec![1.0f32; d];
    let layers = (0..s.n_layers)
        .map(|_| LayerWeights {
            attn_norm: ones.clone(),
            qkv: values(s.qkv_dim() * d),
            o: values(d * s.n_heads * s.head_dim),
            ffn_norm: ones.clone(),
            gate_up: values(2 * f * d),
            down: values(d * f),
        })
        .collect();
    DecoderWeights {
        embeddings: values(s.total_vocab() * d),
        heads: values(s.total_vocab() * d),
        norm: ones,
        layers,
        sizes,
    }
}

fn step_ids(batch: usize, step: usize, vocab: &[usize]) -> Vec<i64> {
    (0..batch * vocab.len())
        .map(|i| {
            ((i * 7 + step * 13) % vocab[i % vocab.len()]) as i64 - i64::from(step == 3 && i == 0)
        })
        .collect()
}

#[test]
fn decoder_matches_reference_step_by_step() {
    if !gpu_for_test() {
        return;
    }
    for (batch, graphs) in [(1, false), (3, true), (10, true)] {
        let weights = random_weights(5);
        let vocab = weights.sizes.vocab_sizes.clone();
        let mut gpu = CudaDecoder::new(&weights, batch, 0).unwrap();
        gpu.set_use_graphs(graphs);
        let mut reference = ReferenceDecoder::new(Arc::new(weights), batch).unwrap();
        for step in 0..12 {
            let ids = step_ids(batch, step, &vocab);
            let want = reference.step(&ids).unwrap();
            let got = gpu.step_logits(&ids).unwrap();
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                assert!(
                    (w - g).abs() <= 1e-4 * w.abs().max(1.0),
                    "batch {batch} graphs {graphs} step {step} logit {i}: reference {w}, cuda {g}"
                );
            }
        }
        assert_eq!(gpu.positions(), reference.positions());
    }
}

#[test]
fn greedy_device_sampling_is_the_argmax_of_the_logits() {
    if !gpu_for_test() {
        return;
    }
    let weights = random_weights(9);
    let vocab = weights.sizes.vocab_sizes.clone();
    let mut reference = ReferenceDecoder::new(Arc::new(weights.clone()), 2).unwrap();
    let mut gpu = CudaDecoder::new(&weights, 2, 0).unwrap();
    gpu.set_sampling(&[StreamSampling::greedy(), StreamSampling::greedy()])
        .unwrap();
    for step in 0..6 {
        let ids = step_ids(2, step, &vocab);
        let logits = reference.step(&ids).unwrap();
        let tokens = gpu.step_sample(&ids).unwrap();
        let total: usize = vocab.iter().sum();
        for b in 0..2 {
            let mut offset = 0;
            for (k, &v) in vocab.iter().enumerate() {
                let row = &logits[b * total + offset..][..v];
                let best = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let t = tokens[b * vocab.len() + k] as usize;
                assert!(row[t] >= best - 1e-4, "step {step} row {b} stream {k}");
                offset += v;
            }
        }
    }
}

/// `generate` (tokens fed back on the device) equals stepping with `step_sample` and feeding
/// the tokens back from the host, with the same generators, with graphs and without.
#[test]
fn generate_on_the_device_equals_host_fed_steps() {
    if !gpu_for_test() {
        return;
    }
    let weights = random_weights(12);
    let vocab = weights.sizes.vocab_sizes.clone();
    let sampling = StreamSampling {
        temperature: 0.9,
        top_k: Some(7),
        allowed: None,
    };
    let states: Vec<[u64; 4]> = (0..3u64).map(|b| [b + 1, 2, 3, 4]).collect();
    for graphs in [true, false] {
        let mut host = CudaDecoder::new(&weights, 3, 0).unwrap();
        let mut device = CudaDecoder::new(&weights, 3, 0).unwrap();
        for d in [&mut host, &mut device] {
            d.set_use_graphs(graphs);
            d.set_sampling(&[sampling.clone(), sampling.clone()])
                .unwrap();
            d.set_rng_states(&states).unwrap();
        }
        let first = step_ids(3, 0, &vocab);
        let mut ids = first.clone();
        let mut want = Vec::new();
        for _ in 0..9 {
            ids = host.step_sample(&ids).unwrap();
            want.extend_from_slice(&ids);
        }
        assert_eq!(device.generate(&first, 9).unwrap(), want, "graphs {graphs}");
        assert_eq!(device.positions(), host.positions());
        assert_eq!(device.rng_states().unwrap(), host.rng_states().unwrap());
        // Again, continuing the same sequences: the history restarts at row 0.
        assert_eq!(device.generate(&ids, 2).unwrap().len(), 2 * 3 * vocab.len());
    }
}

#[test]
fn codec_decoder_matches_reference() {
    if !gpu_for_test() {
        return;
    }
    let weights = random_codec_weights(4);
    let gpu = CudaCodecDecoder::new(&weights, 0).unwrap();
    for (batch, q, frames) in [(1, 1, 1), (1, 3, 7), (3, 2, 40), (2, 3, 300)] {
        let codes = random_codes(batch, q, frames, weights.codebook_size);
        let want = reference_codec_decode(&weights, &codes, batch, q, frames).unwrap();
        let got = gpu.decode(&codes, batch, q, frames).unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                (w - g).abs() <= 1e-4 * scale,
                "[{batch}, {q}, {frames}] sample {i}: reference {w}, cuda {g}"
            );
        }
    }
    let err = gpu.decode(&[0, 99], 1, 1, 2).unwrap_err();
    assert!(matches!(err, crate::KernelError::Input(_)), "{err}");
}

#[test]
#[ignore = "writes the PTX for ptxas -v (register and spill check by hand)"]
fn dump_ptx() {
    let ptx = compile_kernels(Some("compute_90")).unwrap().to_src();
    std::fs::write("/tmp/speechinfer_kernels.ptx", ptx).unwrap();
    let ptx = compile_codec_kernels(Some("compute_90")).unwrap().to_src();
    std::fs::write("/tmp/speechinfer_codec_kernels.ptx", ptx).unwrap();
}
