//! Times the codec decode on the CPU engine and on the CUDA decoder, same weights, same codes,
//! same run, and checks the audio agrees. Build here, run on the GPU machine (docs/cuda.md):
//!
//! ```text
//! cargo build --release -p speechinfer-codec --features cuda --example cuda_codec
//! cuda_codec [model=DIR] [seconds=10] [batch=1] [repeat=5]
//! ```
//! Without `model=`, the default codec config with random weights. Prints one JSON object:
//! seconds per call (CPU, CUDA), real-time factors, frames/s, the decoder's set-up time (upload +
//! NVRTC) and the largest difference relative to the largest CPU sample.

use std::time::Instant;

use candle_core::{Device, Tensor};
use speechinfer_codec::{Codec, CodecConfig};
use speechinfer_core::testing::ExampleArgs;
use speechinfer_core::weights::Checkpoint;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = ExampleArgs::from_env();
    let num = |key: &str, default: f64| -> f64 { args.num(key, default) };
    let codec = match args.get("model") {
        Some(dir) => Codec::load(std::path::Path::new(dir))?,
        None => Codec::from_checkpoint(
            CodecConfig::default(),
            Checkpoint::random(0.05, &Device::Cpu),
            Device::Cpu,
        )?,
    };
    let (batch, repeat) = (num("batch", 1.0) as usize, num("repeat", 5.0) as usize);
    let frames = (num("seconds", 10.0) * codec.frame_rate()).ceil() as usize;
    let q = codec.num_codebooks();
    let size = codec.codebook_size();
    let codes: Vec<i64> = (0..batch * q * frames)
        .map(|i| ((i * 7919 + 13) % size) as i64)
        .collect();
    let tensor = Tensor::from_slice(&codes, (batch, q, frames), &Device::Cpu)?;
    let audio_s = (batch * frames) as f64 / codec.frame_rate();

    let best = |f: &mut dyn FnMut() -> Result<(), Box<dyn std::error::Error>>| {
        let mut best = f64::INFINITY;
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok::<f64, Box<dyn std::error::Error>>(best)
    };
    let want: Vec<f32> = codec.decode(&tensor)?.flatten_all()?.to_vec1()?;
    let cpu_s = best(&mut || {
        codec.decode(&tensor)?;
        Ok(())
    })?;

    let t = Instant::now();
    let gpu = codec.cuda_decoder(0)?;
    let setup_s = t.elapsed().as_secs_f64();
    let got = gpu.decode(&codes, batch, q, frames)?;
    let gpu_s = best(&mut || {
        gpu.decode(&codes, batch, q, frames)?;
        Ok(())
    })?;
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = want
        .iter()
        .zip(&got)
        .fold(0f32, |m, (w, g)| m.max((w - g).abs()));
    println!(
        "{{\"batch\": {batch}, \"frames\": {frames}, \"codebooks\": {q}, \"audio_s\": {audio_s:.2}, \
         \"cpu_s\": {cpu_s:.5}, \"cuda_s\": {gpu_s:.5}, \"cpu_rtf\": {:.5}, \"cuda_rtf\": {:.6}, \
         \"cuda_frames_per_s\": {:.0}, \"speedup\": {:.1}, \"setup_s\": {setup_s:.3}, \
         \"max_rel_diff\": {:.2e}}}",
        cpu_s / audio_s,
        gpu_s / audio_s,
        (batch * frames) as f64 / gpu_s,
        cpu_s / gpu_s,
        diff / scale
    );
    Ok(())
}
