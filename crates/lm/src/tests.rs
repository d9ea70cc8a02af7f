//! Engine-only checks on random weights (parity with the twin lives in `tests/`).

use candle_core::Device;
use speechinfer_core::testing::max_abs_diff;
use speechinfer_core::weights::Checkpoint;
use speechinfer_core::{Error, Result};

use crate::config::{LmConfig, Role, StreamConfig};
use crate::generate::{GenerateRequest, Prompt};
use crate::model::{GridShape, SpeechLm};

pub(crate) fn small(pattern: &str, delays: [usize; 2], tie: bool) -> LmConfig {
    let stream = |k: usize, vocab: usize| StreamConfig {
        name: format!("s{k}"),
        role: Role::Audio,
        vocab_size: vocab,
        pad_id: None,
        bos_id: Some(vocab as u32 - 1),
        eos_id: None,
        delay: delays[k],
        text_offset: 0,
    };
    LmConfig {
        d_model: 32,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_dim: 48,
        max_context: 24,
        tie_embeddings: tie,
        streams: vec![stream(0, 17), stream(1, 11)],
        pattern: pattern.to_string(),
        ..LmConfig::default()
    }
}

fn greedy(lm: &SpeechLm, prompt: &[i64], shape: GridShape, max_frames: usize) -> Result<Vec<i64>> {
    let prompts = Prompt::split(prompt, shape);
    let request = GenerateRequest::greedy(prompts, max_frames, shape.streams);
    Ok(lm.generate(&request)?.concat())
}

pub(crate) fn model(config: LmConfig) -> SpeechLm {
    SpeechLm::from_checkpoint(config, Checkpoint::random(0.3, &Device::Cpu), Device::Cpu).unwrap()
}

pub(crate) fn tokens(shape: GridShape, seed: u64) -> Vec<i64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..shape.numel())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 11) as i64
        })
        .collect()
}

#[test]
fn incremental_forward_matches_one_shot() {
    for tie in [false, true] {
        let lm = model(small("delay", [0, 1], tie));
        let shape = GridShape::new(2, 2, 9);
        let steps = tokens(shape, 3);
        let full = lm.logits(&steps, shape).unwrap();
        let mut cache = lm.new_cache(2).unwrap();
        for s in 0..9 {
            let col: Vec<i64> = steps.chunks(9).map(|row| row[s]).collect();
            let out = lm
                .forward(&col, GridShape::new(2, 2, 1), &mut cache)
                .unwrap();
            for (k, logits) in out.iter().enumerate() {
                let want = full[k].narrow(1, s, 1).unwrap();
                assert!(max_abs_diff(logits, &want) < 1e-4, "tie={tie} k={k} s={s}");
            }
        }
        assert_eq!((cache.len(0), cache.len(1)), (9, 9));
        // Past the capacity: a typed input error naming the limit.
        let more = GridShape::new(2, 2, 16);
        let err = lm.forward(&tokens(more, 1), more, &mut cache).unwrap_err();
        assert!(
            matches!(&err, Error::Input(m) if m.contains("max_context is 24")),
            "{err}"
        );
    }
}

#[test]
fn bad_inputs_are_typed() {
    let lm = model(small("parallel", [0, 0], false));
    let shape = GridShape::new(1, 2, 4);
    let mut grid = tokens(shape, 5);
    grid[5] = 11; // stream 1 has vocab 11
    let err = lm.score(&grid, shape).unwrap_err().to_string();
    assert!(
        err.contains("grid[0, 1, 1] = 11") && err.contains("[0, 11)"),
        "{err}"
    );
    let err = lm
        .logits(&grid, GridShape::new(1, 1, 8))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 streams, the model has 2"), "{err}");
    let err = lm
        .logits(&[], GridShape::new(1, 2, 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
    let prompt = tokens(shape, 6);
    let err = greedy(&lm, &prompt, shape, 30).unwrap_err().to_string();
    assert!(err.contains("max_context is 24"), "{err}");
    // 4 + 20 frames fit exactly under parallel: S - 1 = T + N = 24 = max_context.
    let out = greedy(&lm, &prompt, shape, 20).unwrap();
    assert_eq!(out.len(), 2 * 24);
    assert_eq!(&out[..4], &prompt[..4]);
    assert_eq!(&out[24..28], &prompt[4..8]);
}

#[test]
fn greedy_generation_is_batch_independent_and_scores_are_finite() {
    let lm = model(small("delay", [0, 2], true));
    let shape = GridShape::new(3, 2, 3);
    let prompt = tokens(shape, 9);
    let batched = greedy(&lm, &prompt, shape, 8).unwrap();
    for b in 0..3 {
        let one = GridShape::new(1, 2, 3);
        let alone = greedy(&lm, &prompt[b * 6..][..6], one, 8).unwrap();
        assert_eq!(&batched[b * 22..][..22], alone.as_slice());
    }
    let grid_shape = GridShape::new(3, 2, 11);
    let scores = lm.score(&batched, grid_shape).unwrap();
    assert!(
        scores.iter().all(|s| s.is_finite() && *s < 0.0),
        "{scores:?}"
    );
}
