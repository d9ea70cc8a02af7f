//! The layout's checks and the reference kernels against their textbook (scatter) forms. The
//! whole reference decode is checked against the codec crate's decode there.

use super::reference::{conv1d, conv_transpose1d, decode};
use super::*;

/// Values in ±0.3 from a xorshift stream.
pub(crate) fn values(state: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            ((*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
        })
        .collect()
}

fn layer(
    state: &mut u64,
    kind: ConvKind,
    io: (usize, usize),
    k: usize,
    s: usize,
    d: usize,
) -> ConvLayer {
    let (cin, cout) = io;
    ConvLayer {
        name: format!("{kind:?} {cin}->{cout} k{k} s{s} d{d}"),
        kind,
        cin,
        cout,
        kernel: k,
        stride: s,
        dilation: d,
        elu_input: kind == ConvKind::Transposed,
        skip: Skip::None,
        weight: values(state, cin * cout * k),
        bias: values(state, cout),
    }
}

/// A small SEANet-shaped decoder: conv in, two up blocks (stride 3, then 2) each with a
/// dilated residual unit, conv out to 2 channels.
pub(crate) fn random_codec_weights(seed: u64) -> CodecDecoderWeights {
    let mut st = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let (dim, size, books) = (6, 11, 3);
    let mut layers = vec![layer(&mut st, ConvKind::Conv, (dim, 8), 3, 1, 1)];
    for (i, (ch, r)) in [(8, 3), (4, 2)].into_iter().enumerate() {
        layers.push(layer(
            &mut st,
            ConvKind::Transposed,
            (ch, ch / 2),
            2 * r,
            r,
            1,
        ));
        let mut conv1 = layer(&mut st, ConvKind::Conv, (ch / 2, 1), 3, 1, 1 + i);
        conv1.elu_input = true;
        conv1.skip = Skip::Save;
        let mut conv2 = layer(&mut st, ConvKind::Conv, (1, ch / 2), 1, 1, 1);
        conv2.elu_input = true;
        conv2.skip = Skip::Add;
        layers.extend([conv1, conv2]);
    }
    let mut out = layer(&mut st, ConvKind::Conv, (2, 2), 5, 1, 1);
    out.elu_input = true;
    layers.push(out);
    CodecDecoderWeights {
        dimension: dim,
        codebook_size: size,
        codebooks: values(&mut st, books * size * dim),
        layers,
    }
}

pub(crate) fn random_codes(batch: usize, q: usize, frames: usize, size: usize) -> Vec<i64> {
    (0..batch * q * frames)
        .map(|i| ((i * 7 + 3) % size) as i64)
        .collect()
}

#[test]
fn layout_describes_the_decoder() {
    let w = random_codec_weights(1);
    w.validate().unwrap();
    assert_eq!((w.num_codebooks(), w.hop_length(), w.channels()), (3, 6, 2));
    let audio = decode(&w, &random_codes(2, 2, 5, 11), 2, 2, 5).unwrap();
    assert_eq!(audio.len(), 2 * 2 * 5 * 6);
    assert!(audio.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_layouts_name_the_problem() {
    let mut w = random_codec_weights(2);
    w.layers[1].weight.pop();
    assert!(w
        .validate()
        .unwrap_err()
        .to_string()
        .contains("weight holds"));
    let mut w = random_codec_weights(2);
    w.layers[3].skip = Skip::None;
    let err = w.validate().unwrap_err().to_string();
    assert!(err.contains("residual"), "{err}");
    let mut w = random_codec_weights(2);
    w.layers.remove(1);
    let err = w.validate().unwrap_err().to_string();
    assert!(err.contains("channels"), "{err}");
    let mut w = random_codec_weights(2);
    w.codebooks.pop();
    assert!(w.validate().unwrap_err().to_string().contains("codebooks"));
}

#[test]
fn bad_codes_are_input_errors() {
    let w = random_codec_weights(3);
    let cases = [
        (vec![0, 11], 1, 1, 2, "out of range"),
        (vec![-1], 1, 1, 1, "out of range"),
        (vec![0; 4], 1, 4, 1, "only 3"),
        (vec![], 1, 1, 0, "empty"),
        (vec![0; 3], 1, 1, 2, "3 codes"),
    ];
    for (codes, b, q, f, want) in cases {
        let err = decode(&w, &codes, b, q, f).unwrap_err();
        assert!(matches!(err, KernelError::Input(_)), "{err}");
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn transposed_conv_gather_equals_the_scatter_definition() {
    let mut st = 7u64;
    for (cin, cout, k, s) in [(3, 2, 4, 2), (2, 3, 5, 2), (2, 1, 3, 3), (1, 2, 2, 2)] {
        let l = layer(&mut st, ConvKind::Transposed, (cin, cout), k, s, 1);
        let (batch, t) = (2, 4);
        let x = values(&mut st, batch * cin * t);
        let got = conv_transpose1d(&l, &x, batch, t);
        let mut full = vec![0f32; batch * cout * (t * s + k)];
        for b in 0..batch {
            for ci in 0..cin {
                for co in 0..cout {
                    for i in 0..t {
                        for j in 0..k {
                            full[(b * cout + co) * (t * s + k) + i * s + j] +=
                                x[(b * cin + ci) * t + i] * l.weight[(ci * cout + co) * k + j];
                        }
                    }
                }
            }
        }
        for b in 0..batch {
            for co in 0..cout {
                for o in 0..t * s {
                    let want = full[(b * cout + co) * (t * s + k) + o] + l.bias[co];
                    let v = got[(b * cout + co) * t * s + o];
                    assert!((v - want).abs() < 1e-5, "{}: {v} vs {want}", l.name);
                }
            }
        }
    }
}

#[test]
fn causal_conv_sees_zeros_before_the_start_and_adds_the_residual() {
    let mut st = 11u64;
    let l = layer(&mut st, ConvKind::Conv, (2, 2), 3, 1, 2);
    let (batch, t) = (1, 6);
    let x = values(&mut st, batch * 2 * t);
    let residual = values(&mut st, batch * 2 * t);
    let got = conv1d(&l, &x, batch, t, Some(&residual));
    for co in 0..2 {
        for o in 0..t {
            let mut want = l.bias[co] + residual[co * t + o];
            for ci in 0..2 {
                for j in 0..3 {
                    // Context (3 - 1)·2 = 4 zeros before sample 0.
                    if let Some(i) = (o + 2 * j).checked_sub(4) {
                        want += x[ci * t + i] * l.weight[(co * 2 + ci) * 3 + j];
                    }
                }
            }
            assert!((got[co * t + o] - want).abs() < 1e-5);
        }
    }
}
