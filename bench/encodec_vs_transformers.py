"""Side-by-side: the engine serving a Hugging Face EnCodec directory vs `transformers`'
`EncodecModel` on the same random weights (24 kHz architecture), same input, same run.

Each side runs in its own subprocess (so that peak RSS is its own): load, encode and decode the
same 10 s of audio, and for the engine also the streaming decode step (one 13.3 ms frame;
`transformers` has no streaming state). Prints wall time, real-time factor (compute time / audio
time, lower is faster), peak RSS, and transformers/engine as a ratio. Run:

    python bench/encodec_vs_transformers.py [--seconds 10] [--threads 2] [--codebooks 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

BANDWIDTH = {2: 1.5, 4: 3.0, 8: 6.0, 16: 12.0, 32: 24.0}


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_wave(seconds: float):
    import numpy as np

    samples = int(seconds * 24000)
    t = np.arange(samples) / 24000
    noise = np.random.default_rng(0).standard_normal(samples)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * noise).astype(np.float32)[None]


def run_side(args: argparse.Namespace) -> dict:
    """One side's figures; runs in a fresh subprocess."""
    wave = test_wave(args.seconds)
    out: dict = {}
    if args.side == "engine":
        os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
        import speechinfer as si

        start = time.perf_counter()
        codec = si.Codec.load(args.dir, num_codebooks=args.codebooks)
        out["load"] = time.perf_counter() - start
        codes = codec.encode(wave)
        n = min(args.stream_frames, codes.shape[-1])

        def stream() -> None:
            dec = codec.stream_decoder()
            dec.step(codes[:, :, :8])  # a first chunk past the reflect padding
            for f in range(8, 8 + n):
                dec.step(codes[:, :, f : f + 1])

        out["encode"] = timed(lambda: codec.encode(wave), args.repeat)
        out["decode"] = timed(lambda: codec.decode(codes), args.repeat)
        first = timed(lambda: codec.stream_decoder().step(codes[:, :, :8]), args.repeat)
        out["stream"] = (timed(stream, args.repeat) - first) / n
    else:
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        start = time.perf_counter()
        model = transformers.EncodecModel.from_pretrained(args.dir).eval()
        out["load"] = time.perf_counter() - start
        wave_t = torch.from_numpy(wave)[:, None]
        bw = BANDWIDTH[args.codebooks]
        with torch.inference_mode():
            codes = model.encode(wave_t, bandwidth=bw).audio_codes
            out["encode"] = timed(lambda: model.encode(wave_t, bandwidth=bw), args.repeat)
            out["decode"] = timed(lambda: model.decode(codes, [None]), args.repeat)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--codebooks", type=int, default=8, choices=sorted(BANDWIDTH))
    parser.add_argument("--stream-frames", type=int, default=75)
    parser.add_argument("--side", choices=["engine", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(run_side(args)))
        return

    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.EncodecModel(transformers.EncodecConfig())
    with torch.no_grad():
        for layer in model.quantizer.layers:  # untrained codebooks are all zero
            layer.codebook.embed.normal_(0.0, 0.1)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        del model
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        results = {}
        for side in ["engine", "transformers"]:
            cmd = [sys.argv[0], "--side", side, "--dir", tmp]
            for key in ["seconds", "threads", "repeat", "codebooks", "stream_frames"]:
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            proc = subprocess.run(
                [sys.executable, *cmd], env=env, capture_output=True, text=True, check=True
            )
            results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    e, t = results["engine"], results["transformers"]
    frame_s = 320 / 24000
    print(
        f"EnCodec 24 kHz, {args.codebooks} codebooks, {args.seconds:g} s of audio, "
        f"{args.threads} threads, median of {args.repeat}"
    )
    header = ("op", "engine", "transformers", "engine RTF", "transf. RTF", "ratio")
    print("{:<24}{:>10}{:>14}{:>12}{:>13}{:>8}".format(*header))
    for name, key, audio_s in [
        ("load (s)", "load", None),
        ("encode (s)", "encode", args.seconds),
        ("decode (s)", "decode", args.seconds),
    ]:
        er = f"{e[key] / audio_s:.4f}" if audio_s else "-"
        tr = f"{t[key] / audio_s:.4f}" if audio_s else "-"
        ratio = t[key] / e[key]
        print(f"{name:<24}{e[key]:>10.4f}{t[key]:>14.4f}{er:>12}{tr:>13}{ratio:>7.2f}x")
    stream = e["stream"]
    print(
        f"{'stream step/frame (s)':<24}{stream:>10.5f}{'-':>14}{stream / frame_s:>12.4f}{'-':>13}"
    )
    ratio = t["rss_mb"] / e["rss_mb"]
    rss = f"{e['rss_mb']:>10.0f}{t['rss_mb']:>14.0f}"
    print(f"{'peak RSS (MB)':<24}{rss}{'':>25}{ratio:>7.2f}x")
    print("(ratio = transformers / engine; > 1 means the engine is faster or smaller)")


if __name__ == "__main__":
    main()
