//! The kernels' reference decoding step against this crate's forward: same weights, same
//! tokens, step by step, logits within 1e-4 relative (the contract the CUDA step shares).

use std::sync::Arc;

use speechinfer_kernels::reference::ReferenceDecoder;
use speechinfer_kernels::KernelError;

use crate::decode_export::stack_stream_logits;
use crate::model::{GridShape, SpeechLm};
use crate::tests::{model, small, tokens};

/// Feeds `steps` columns of random ids (some `-1`) through both and compares every step.
fn assert_steps_match(lm: &SpeechLm, batch: usize, steps: usize) {
    let weights = Arc::new(lm.decoder_weights().unwrap());
    let mut reference = ReferenceDecoder::new(weights, batch).unwrap();
    let k_n = lm.num_streams();
    let mut cache = lm.new_cache(batch).unwrap();
    let grid = tokens(GridShape::new(batch, k_n, steps), 7);
    for s in 0..steps {
        let mut ids: Vec<i64> = (0..batch * k_n).map(|i| grid[i * steps + s]).collect();
        if s == 2 {
            ids[0] = -1;
        }
        let shape = GridShape::new(batch, k_n, 1);
        let expected = stack_stream_logits(&lm.forward(&ids, shape, &mut cache).unwrap()).unwrap();
        let got = reference.step(&ids).unwrap();
        assert_eq!(got.len(), expected.len());
        for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
            assert!(
                (want - have).abs() <= 1e-4 * want.abs().max(1.0),
                "step {s} logit {i} of [B, ΣV]: engine {want}, reference {have}"
            );
        }
    }
}

#[test]
fn reference_step_matches_forward_parallel() {
    assert_steps_match(&model(small("parallel", [0, 0], false)), 2, 6);
}

#[test]
fn reference_step_matches_forward_delay_tied() {
    assert_steps_match(&model(small("delay", [0, 1], true)), 3, 5);
}

#[test]
fn reference_step_matches_forward_int8() {
    let mut lm = model(small("delay", [0, 1], false));
    lm.quantize_int8().unwrap();
    assert_steps_match(&lm, 1, 4);
}

#[test]
fn reference_step_rejects_bad_ids_and_full_cache() {
    let lm = model(small("parallel", [0, 0], false));
    let weights = Arc::new(lm.decoder_weights().unwrap());
    let capacity = weights.sizes.max_positions;
    let mut reference = ReferenceDecoder::new(weights, 1).unwrap();
    let err = reference.step(&[17, 0]).unwrap_err();
    assert!(
        matches!(err, KernelError::Input(ref m) if m.contains("token id 17")),
        "{err}"
    );
    assert!(reference.step(&[0]).is_err());
    assert_eq!(reference.positions(), &[0]);
    for _ in 0..capacity {
        reference.step(&[1, 2]).unwrap();
    }
    let err = reference.step(&[1, 2]).unwrap_err();
    assert!(err.to_string().contains("positions"), "{err}");
}

#[test]
fn depth_models_have_no_kernel_step() {
    let config = crate::config::LmConfig {
        depth: Some(crate::config::DepthConfig {
            d_model: 16,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            ffn_dim: 24,
            per_position_proj: false,
        }),
        ..small("depth", [0, 0], false)
    };
    let lm = SpeechLm::from_checkpoint(
        config,
        speechinfer_core::weights::Checkpoint::random(0.3, &candle_core::Device::Cpu),
        candle_core::Device::Cpu,
    )
    .unwrap();
    let err = lm.decoder_weights().unwrap_err();
    assert!(err.to_string().contains("Depth"), "{err}");
}
