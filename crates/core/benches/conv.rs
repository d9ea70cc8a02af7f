//! Direct conv kernels on the shapes of Mimi's SEANet decoder (2 s of 24 kHz audio per call):
//! `cargo bench -p speechinfer-core --bench conv`. Throughput is reported in multiply-adds, so
//! criterion's "elements/s" reads as MAC/s (× 2 for FLOP/s).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use speechinfer_core::conv::{PackedConv1d, PackedConvTranspose1d};

fn signal(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv_mimi_decoder_2s");
    group.sample_size(10);
    // (name, cin, cout, kernel, dilation, output samples)
    for &(name, cin, cout, k, d, t) in &[
        ("enc_in_k7_1to64_24k", 1, 64, 7, 1, 48_000),
        ("res_k3_64to32_24k", 64, 32, 3, 1, 48_000),
        ("res_k1_32to64_24k", 32, 64, 1, 1, 48_000),
        ("res_k3_256to128_1200", 256, 128, 3, 1, 2_400),
        ("in_k7_512to1024_25", 512, 1024, 7, 1, 50),
        ("stream_in_k7_512to1024_2_frames", 512, 1024, 7, 1, 2),
        ("stream_res_k3_512to256_16_frames", 512, 256, 3, 1, 16),
    ] {
        let span = (k - 1) * d + 1;
        let x = signal(cin * (t + span - 1));
        let conv = PackedConv1d::new(
            &signal(cout * cin * k),
            &vec![0.1; cout],
            (cout, cin, k),
            1,
            d,
        );
        group.throughput(Throughput::Elements((cin * cout * k * t) as u64));
        group.bench_function(name, |b| b.iter(|| conv.forward(&x, 1, t + span - 1)));
    }
    // (name, cin, cout, stride, input frames); kernel = 2 * stride as in Mimi
    for &(name, cin, cout, s, n) in &[
        ("up_s4_128to64", 128, 64, 4, 12_000),
        ("up_s5_256to128", 256, 128, 5, 2_400),
        ("up_s8_1024to512", 1024, 512, 8, 50),
        ("stream_up_s8_1024to512_2_frames", 1024, 512, 8, 2),
    ] {
        let x = signal(cin * n);
        let conv = PackedConvTranspose1d::new(&signal(cin * cout * 2 * s), (cin, cout, 2 * s), s);
        group.throughput(Throughput::Elements((cin * cout * 2 * s * n) as u64));
        group.bench_function(name, |b| b.iter(|| conv.forward(&x, 1, n)));
    }
    group.finish();
}

criterion_group!(conv_benches, benches);
criterion_main!(conv_benches);
