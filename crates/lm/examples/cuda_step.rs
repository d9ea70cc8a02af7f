//! Times the LM decoding step on the CPU engine and on the CUDA decoder, same weights, same run,
//! and checks their logits agree. Build here, run on the GPU machine (docs/cuda.md):
//!
//! ```text
//! cargo build --release -p speechinfer-lm --features cuda --example cuda_step
//! cuda_step [model=DIR] [d_model=1024 layers=12 heads=16 kv_heads=4 ffn=2816 streams=8
//!            vocab=2048 context=1024] [batch=1] [steps=64]
//! ```
//! Prints one JSON object: ms per step (CPU; CUDA kernel by kernel; CUDA graph; CUDA graph with
//! device sampling; `generate`, the sampled tokens fed back on the device), frames/s, the
//! decoder's set-up time (upload + NVRTC) and the largest logit difference relative to the CPU
//! over the first steps.

use std::time::Instant;

use candle_core::Device;
use speechinfer_core::testing::ExampleArgs;
use speechinfer_core::weights::Checkpoint;
use speechinfer_kernels::cuda::StreamSampling;
use speechinfer_lm::{stack_stream_logits, GridShape, LmConfig, Role, SpeechLm, StreamConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = ExampleArgs::from_env();
    let num = |key: &str, default: usize| -> usize { args.num(key, default) };
    let lm = match args.get("model") {
        Some(dir) => SpeechLm::load(std::path::Path::new(dir))?,
        None => {
            let vocab = num("vocab", 2048);
            let stream = |k: usize| StreamConfig {
                name: format!("audio{k}"),
                role: Role::Audio,
                vocab_size: vocab,
                pad_id: None,
                bos_id: Some(vocab as u32 - 1),
                eos_id: None,
                delay: k.min(1),
                text_offset: 0,
            };
            let config = LmConfig {
                d_model: num("d_model", 1024),
                n_layers: num("layers", 12),
                n_heads: num("heads", 16),
                n_kv_heads: num("kv_heads", 4),
                ffn_dim: num("ffn", 2816),
                max_context: num("context", 1024),
                streams: (0..num("streams", 8)).map(stream).collect(),
                pattern: "delay".into(),
                ..LmConfig::default()
            };
            SpeechLm::from_checkpoint(config, Checkpoint::random(0.05, &Device::Cpu), Device::Cpu)?
        }
    };
    let (batch, steps) = (num("batch", 1), num("steps", 64));
    let k_n = lm.num_streams();
    let vocab = lm.config().vocab_sizes()[..k_n].to_vec();
    let ids = |s: usize| -> Vec<i64> {
        (0..batch * k_n)
            .map(|i| ((i * 31 + s * 17) % vocab[i % k_n]) as i64)
            .collect()
    };

    let mut cache = lm.new_cache(batch)?;
    let mut cpu_logits = Vec::new();
    let t = Instant::now();
    for s in 0..steps {
        let out = lm.forward(&ids(s), GridShape::new(batch, k_n, 1), &mut cache)?;
        if s < 8 {
            cpu_logits.push(stack_stream_logits(&out)?);
        }
    }
    let cpu_ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;

    let t = Instant::now();
    let mut gpu = lm.cuda_decoder(batch, 0)?;
    let setup_s = t.elapsed().as_secs_f64();
    let mut max_rel = 0f32;
    let mut timed = |gpu: &mut speechinfer_kernels::cuda::CudaDecoder,
                     graphs: bool,
                     sample: bool|
     -> Result<f64, Box<dyn std::error::Error>> {
        gpu.reset()?;
        gpu.set_use_graphs(graphs);
        let t = Instant::now();
        for s in 0..steps {
            if sample {
                gpu.step_sample(&ids(s))?;
                continue;
            }
            let got = gpu.step_logits(&ids(s))?;
            for (w, g) in cpu_logits.get(s).into_iter().flatten().zip(&got) {
                max_rel = max_rel.max((w - g).abs() / w.abs().max(1.0));
            }
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / steps as f64)
    };
    timed(&mut gpu, false, false)?; // warm-up: module load, first launches
    let kernels_ms = timed(&mut gpu, false, false)?;
    let graph_ms = timed(&mut gpu, true, false)?;
    gpu.set_sampling(&vec![
        StreamSampling {
            temperature: 0.8,
            top_k: Some(50),
            allowed: None
        };
        k_n
    ])?;
    let sample_ms = timed(&mut gpu, true, true)?;
    gpu.reset()?;
    let t = Instant::now();
    gpu.generate(&ids(0), steps)?;
    let generate_ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!(
        "{{\"batch\": {batch}, \"steps\": {steps}, \"cpu_ms\": {cpu_ms:.3}, \
         \"cuda_kernels_ms\": {kernels_ms:.3}, \"cuda_graph_ms\": {graph_ms:.3}, \
         \"cuda_graph_sample_ms\": {sample_ms:.3}, \"cuda_generate_ms\": {generate_ms:.3}, \
         \"cuda_frames_per_s\": {:.1}, \"cuda_setup_s\": {setup_s:.3}, \
         \"max_rel_logit_diff\": {max_rel:.2e}}}",
        batch as f64 * 1e3 / generate_ms.min(sample_ms)
    );
    Ok(())
}
