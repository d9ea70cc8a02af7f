//! EnCodec unit checks on random weights (parity with `transformers` is `tests/test_encodec.py`).

use candle_core::{Device, Tensor};
use speechinfer_core::weights::Checkpoint;

use super::conv::pad1d;
use super::*;
use crate::state::StreamState;
use speechinfer_core::testing::max_abs_diff;

const DEFAULT_CONFIG: &str = r#"{"model_type": "encodec", "chunk_length_s": null}"#;

#[test]
fn reflect_padding_matches_torch() {
    let dev = Device::Cpu;
    let x = Tensor::from_slice(&[1f32, 2., 3., 4.], (1, 1, 4), &dev).unwrap();
    let row = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    // torch.nn.functional.pad(x, (2, 1), "reflect")
    assert_eq!(
        row(pad1d(&x, 2, 1, true).unwrap()),
        [3., 2., 1., 2., 3., 4., 3.]
    );
    // HF's short-input rule: extend [1, 2, 3, 4] with 3 zeros, reflect by 6, drop the zeros.
    assert_eq!(
        row(pad1d(&x, 6, 0, true).unwrap()),
        [0., 0., 0., 4., 3., 2., 1., 2., 3., 4.]
    );
    assert_eq!(
        row(pad1d(&x, 1, 2, false).unwrap()),
        [0., 1., 2., 3., 4., 0., 0.]
    );
}

#[test]
fn codebooks_follow_target_bandwidths() {
    let cfg = EncodecConfig::parse(DEFAULT_CONFIG, None).unwrap();
    assert_eq!(cfg.allowed_codebooks(), [2, 4, 8, 16, 32]);
    assert_eq!(
        (cfg.num_codebooks, cfg.total_codebooks, cfg.hop_length()),
        (32, 32, 320)
    );
    assert_eq!(
        EncodecConfig::parse(DEFAULT_CONFIG, Some(8))
            .unwrap()
            .num_codebooks,
        8
    );
    let err = EncodecConfig::parse(DEFAULT_CONFIG, Some(5)).unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err}");
    let err = EncodecConfig::parse(r#"{"model_type": "encodec", "chunk_length_s": 1.0}"#, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chunk_length_s"), "{err}");
}

#[test]
fn streaming_equals_batch_after_a_long_first_chunk() {
    let dev = Device::Cpu;
    let cfg = EncodecConfig::parse(DEFAULT_CONFIG, Some(4)).unwrap();
    let model = Encodec::from_checkpoint(cfg, Checkpoint::random(0.05, &dev)).unwrap();
    let codes = Tensor::from_vec(
        (0..2 * 4 * 12)
            .map(|i| (i * 37 % 1024) as i64)
            .collect::<Vec<_>>(),
        (2, 4, 12),
        &dev,
    )
    .unwrap();
    let mut state = StreamState::new(2);
    let whole = model
        .decode_frames(&codes, &mut state.cursor(), usize::MAX)
        .unwrap();
    assert_eq!(whole.dims(), [2, 1, 12 * 320]);
    let mut state = StreamState::new(2);
    let mut pieces = Vec::new();
    for (start, len) in [(0, 8), (8, 1), (9, 3)] {
        let chunk = codes.narrow(2, start, len).unwrap();
        pieces.push(
            model
                .decode_frames(&chunk, &mut state.cursor(), usize::MAX)
                .unwrap(),
        );
    }
    let streamed = Tensor::cat(&pieces, 2).unwrap();
    assert!(max_abs_diff(&streamed, &whole) < 1e-5);
    // A reset stream starts afresh: its next chunk decodes as a new stream would.
    state.reset_item(1).unwrap();
    let again = model
        .decode_frames(
            &codes.narrow(2, 0, 8).unwrap(),
            &mut state.cursor(),
            usize::MAX,
        )
        .unwrap();
    let fresh = model
        .decode_frames(
            &codes.narrow(2, 0, 8).unwrap(),
            &mut StreamState::new(2).cursor(),
            usize::MAX,
        )
        .unwrap();
    let item = |t: &Tensor| t.narrow(0, 1, 1).unwrap();
    assert!(max_abs_diff(&item(&again), &item(&fresh)) < 1e-5);
}
