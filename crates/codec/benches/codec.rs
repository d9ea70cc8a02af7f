//! Criterion benches of the default codec: batch decode/encode of 4 s and one streaming frame.

use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use speechinfer_codec::{Codec, CodecConfig, StreamState};
use speechinfer_core::weights::Checkpoint;

fn default_codec() -> Codec {
    let device = Device::Cpu;
    Codec::from_checkpoint(
        CodecConfig::default(),
        Checkpoint::random(0.05, &device),
        device,
    )
    .expect("random default codec")
}

fn benches(c: &mut Criterion) {
    let codec = default_codec();
    let cfg = codec.config().expect("native codec").clone();
    let frames = (4.0 * cfg.frame_rate()) as usize;
    let codes = Tensor::rand(
        0f32,
        cfg.codebook_size as f32,
        (1, cfg.num_codebooks, frames),
        &Device::Cpu,
    )
    .and_then(|t| t.floor())
    .and_then(|t| t.to_dtype(DType::I64))
    .expect("codes");
    let wave =
        Tensor::randn(0f32, 0.3, (1, 1, frames * cfg.hop_length()), &Device::Cpu).expect("wave");

    let mut group = c.benchmark_group("codec_default_4s");
    group.sample_size(10);
    group.bench_function("decode", |b| {
        b.iter(|| black_box(codec.decode(&codes).unwrap()))
    });
    group.bench_function("encode", |b| {
        b.iter(|| black_box(codec.encode(&wave).unwrap()))
    });
    group.finish();

    let one_frame = codes.narrow(2, 0, 1).expect("frame");
    let mut state = StreamState::new(1);
    c.bench_function("codec_default_stream_decode_1_frame", |b| {
        b.iter(|| black_box(codec.decode_step(&mut state, &one_frame).unwrap()))
    });
}

criterion_group!(codec_benches, benches);
criterion_main!(codec_benches);
