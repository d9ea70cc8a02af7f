//! Mimi unit checks on random weights (parity with PyTorch is `tests/test_mimi.py`).

use candle_core::{DType, Device, IndexOp, Tensor};
use speechinfer_core::weights::Checkpoint;

use super::*;
use crate::state::StreamState;
use speechinfer_core::testing::max_abs_diff;

#[test]
fn config_limits_codebooks() {
    assert!(MimiConfig::new(32, 32).is_ok());
    for q in [0, 33] {
        let err = MimiConfig::new(q, 32).unwrap_err().to_string();
        assert!(err.contains("between 1 and 32"), "{err}");
    }
    let cfg = MimiConfig::new(8, 32).unwrap();
    assert_eq!((cfg.seanet_hop(), cfg.hop_length()), (960, 1920));
}

#[test]
fn upsample_is_a_depthwise_transposed_conv_and_streams() {
    let dev = Device::Cpu;
    let (c, n, s) = (3usize, 5usize, 2usize);
    let w: Vec<f32> = (0..c * 2 * s).map(|i| (i as f32 * 0.7).sin()).collect();
    let x: Vec<f32> = (0..2 * c * n).map(|i| (i as f32 * 0.31).cos()).collect();
    let up =
        resample::Upsample::from_weight(&Tensor::from_slice(&w, (c, 1, 2 * s), &dev).unwrap(), s)
            .unwrap();
    let xt = Tensor::from_slice(&x, (2, c, n), &dev).unwrap();
    let mut state = StreamState::new(2);
    let y = up.forward(&xt, &mut state.cursor()).unwrap();
    let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    for b in 0..2 {
        for ch in 0..c {
            for out in 0..n * s {
                let mut want = 0f32;
                for t in 0..n {
                    for j in 0..2 * s {
                        if t * s + j == out {
                            want += x[(b * c + ch) * n + t] * w[ch * 2 * s + j];
                        }
                    }
                }
                let v = got[(b * c + ch) * n * s + out];
                assert!(
                    (v - want).abs() < 1e-5,
                    "b={b} c={ch} t={out}: {v} vs {want}"
                );
            }
        }
    }
    let mut state = StreamState::new(2);
    let pieces: Vec<Tensor> = (0..n)
        .map(|t| {
            up.forward(&xt.narrow(2, t, 1).unwrap(), &mut state.cursor())
                .unwrap()
        })
        .collect();
    assert!(max_abs_diff(&Tensor::cat(&pieces, 2).unwrap(), &y) < 1e-6);
}

fn random_mimi() -> Mimi {
    Mimi::from_checkpoint(Checkpoint::random(0.02, &Device::Cpu), 4).unwrap()
}

/// The largest absolute sample.
fn peak(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn random_codes(b: usize, q: usize, f: usize) -> Tensor {
    Tensor::rand(0f32, 2048.0, (b, q, f), &Device::Cpu)
        .unwrap()
        .floor()
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap()
}

#[test]
fn random_mimi_streams_like_batch_and_resets_one_item() {
    let mimi = random_mimi();
    assert_eq!(mimi.config().total_codebooks, 32);
    let codes = random_codes(2, 4, 5);
    let mut state = StreamState::new(2);
    let whole = mimi
        .decode_frames(&codes, &mut state.cursor(), usize::MAX)
        .unwrap();
    assert_eq!(whole.dims(), &[2, 1, 5 * 1920]);
    let finite = peak(&whole);
    assert!(finite.is_finite());

    let mut state = StreamState::new(2);
    let pieces: Vec<Tensor> = [(0, 2), (2, 1), (3, 2)]
        .iter()
        .map(|&(start, len)| {
            mimi.decode_frames(
                &codes.narrow(2, start, len).unwrap(),
                &mut state.cursor(),
                usize::MAX,
            )
            .unwrap()
        })
        .collect();
    let scale = finite.max(1e-6);
    assert!(max_abs_diff(&Tensor::cat(&pieces, 2).unwrap(), &whole) / scale < 1e-5);
    // The SEANet run internally in chunks of 2 code frames (the transformer on all 5).
    let chunked = mimi
        .decode_frames(&codes, &mut StreamState::new(2).cursor(), 2)
        .unwrap();
    assert!(max_abs_diff(&chunked, &whole) / scale < 1e-5);

    // Resetting item 1 after two frames: item 1 then decodes like a fresh stream.
    let mut state = StreamState::new(2);
    mimi.decode_frames(
        &codes.narrow(2, 0, 2).unwrap(),
        &mut state.cursor(),
        usize::MAX,
    )
    .unwrap();
    state.reset_item(1).unwrap();
    let later = mimi
        .decode_frames(
            &codes.narrow(2, 2, 3).unwrap(),
            &mut state.cursor(),
            usize::MAX,
        )
        .unwrap();
    let mut fresh_state = StreamState::new(1);
    let fresh = mimi
        .decode_frames(
            &codes.i((1..2, .., 2..5)).unwrap().contiguous().unwrap(),
            &mut fresh_state.cursor(),
            usize::MAX,
        )
        .unwrap();
    assert!(max_abs_diff(&later.i(1..2).unwrap(), &fresh) / scale < 1e-5);
    let item0 = whole.i((0..1, .., 2 * 1920..)).unwrap();
    assert!(max_abs_diff(&later.i(0..1).unwrap(), &item0) / scale < 1e-5);
}

#[test]
fn random_mimi_encodes_whole_frames() {
    let mimi = random_mimi();
    let wave = Tensor::randn(0f32, 0.1, (2, 1, 3 * 1920), &Device::Cpu).unwrap();
    let mut state = StreamState::new(2);
    let codes = mimi
        .encode_frames(&wave, &mut state.cursor(), usize::MAX)
        .unwrap();
    assert_eq!(codes.dims(), &[2, 4, 3]);
    let chunked = mimi
        .encode_frames(&wave, &mut StreamState::new(2).cursor(), 1920)
        .unwrap();
    assert_eq!(
        chunked.to_vec3::<i64>().unwrap(),
        codes.to_vec3::<i64>().unwrap()
    );
    assert_eq!(codes.dtype(), DType::I64);
}

/// bfloat16 weights: streaming (bf16 dot products where few columns or rows) equals the whole
/// call (GEMMs on the same rounded values), and the audio stays near the f32 model's.
#[test]
fn bf16_mimi_streams_like_its_whole_call_and_stays_near_f32() {
    let mut mimi = random_mimi();
    let codes = random_codes(1, 4, 6);
    let decode_whole = |m: &Mimi| {
        m.decode_frames(&codes, &mut StreamState::new(1).cursor(), usize::MAX)
            .unwrap()
    };
    let f32_audio = decode_whole(&mimi);
    mimi.round_to_bf16().unwrap();
    let whole = decode_whole(&mimi);
    let scale = peak(&f32_audio);
    let drift = max_abs_diff(&whole, &f32_audio) / scale;
    assert!(drift > 0.0 && drift < 3e-2, "bf16 vs f32: {drift}");

    let mut state = StreamState::new(1);
    let frames: Vec<Tensor> = (0..6)
        .map(|f| {
            mimi.decode_frames(
                &codes.narrow(2, f, 1).unwrap(),
                &mut state.cursor(),
                usize::MAX,
            )
            .unwrap()
        })
        .collect();
    let streamed = Tensor::cat(&frames, 2).unwrap();
    let gap = max_abs_diff(&streamed, &whole) / scale;
    assert!(gap < 1e-5, "streamed vs whole: {gap}");
}
