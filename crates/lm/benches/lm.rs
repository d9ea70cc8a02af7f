//! Criterion benches of the token LM on random weights: greedy generation per pattern at batch 1
//! and 8 (float32 and int8 weights), and one teacher-forced forward. `bench/lm_vs_twin.py` sets
//! these against the PyTorch twin and the bandwidth bound.

use std::hint::black_box;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use speechinfer_core::weights::Checkpoint;
use speechinfer_lm::{
    DepthConfig, GenerateRequest, GridShape, LmConfig, Prompt, Role, SpeechLm, StreamConfig,
};

const STREAMS: usize = 4;
const VOCAB: usize = 1027;
const PROMPT: usize = 4;
const FRAMES: usize = 32;

fn config(pattern: &str) -> LmConfig {
    let stream = |k: usize| StreamConfig {
        name: format!("audio{k}"),
        role: Role::Audio,
        vocab_size: VOCAB,
        pad_id: Some(VOCAB as u32 - 2),
        bos_id: Some(VOCAB as u32 - 1),
        eos_id: Some(VOCAB as u32 - 3),
        delay: if pattern == "delay" || pattern == "depth" {
            k
        } else {
            0
        },
        text_offset: 0,
    };
    let depth = (pattern == "depth").then_some(DepthConfig {
        d_model: 128,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_dim: 352,
        per_position_proj: true,
    });
    LmConfig {
        d_model: 256,
        n_layers: 4,
        n_heads: 8,
        n_kv_heads: 4,
        ffn_dim: 704,
        max_context: 512,
        tie_embeddings: false,
        streams: (0..STREAMS).map(stream).collect(),
        pattern: pattern.to_string(),
        depth,
        ..LmConfig::default()
    }
}

fn model(pattern: &str, int8: bool) -> SpeechLm {
    let device = Device::Cpu;
    let mut lm =
        SpeechLm::from_checkpoint(config(pattern), Checkpoint::random(0.05, &device), device)
            .expect("random LM");
    if int8 {
        lm.quantize_int8().expect("int8");
    }
    lm
}

fn request(batch: usize) -> GenerateRequest {
    let shape = GridShape::new(batch, STREAMS, PROMPT);
    let tokens: Vec<i64> = (0..shape.numel()).map(|i| (i * 37 % 1000) as i64).collect();
    GenerateRequest::greedy(Prompt::split(&tokens, shape), FRAMES, STREAMS)
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("lm_generate_32_frames");
    group.sample_size(10);
    for pattern in ["parallel", "delay", "flatten", "depth"] {
        let lm = model(pattern, false);
        for batch in [1, 8] {
            let req = request(batch);
            group.bench_function(format!("{pattern}_b{batch}"), |b| {
                b.iter(|| black_box(lm.generate(&req).unwrap()))
            });
        }
    }
    let int8 = model("delay", true);
    for batch in [1, 8] {
        let req = request(batch);
        group.bench_function(format!("delay_int8_b{batch}"), |b| {
            b.iter(|| black_box(int8.generate(&req).unwrap()))
        });
    }
    group.finish();

    let lm = model("delay", false);
    let shape = GridShape::new(1, STREAMS, 128);
    let steps: Vec<i64> = (0..shape.numel()).map(|i| (i * 13 % 1000) as i64).collect();
    c.bench_function("lm_teacher_forced_128_steps", |b| {
        b.iter(|| black_box(lm.logits(&steps, shape).unwrap()))
    });
}

criterion_group!(lm_benches, benches);
criterion_main!(lm_benches);
