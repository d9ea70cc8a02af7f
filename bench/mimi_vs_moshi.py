"""Side-by-side: the engine serving a Mimi checkpoint vs Kyutai's PyTorch `moshi` package (and,
when installed, Kyutai's Rust `rustymimi` wheel) on the same random weights, same run.

Prints wall time and real-time factor (compute time / audio time, lower is faster) of encode,
decode and the streaming decode step (one 80 ms frame), and moshi/engine (rustymimi/engine) as a
ratio. Needs `moshi` (see scripts/test.sh); writes a ~385 MB checkpoint to a temporary
directory. Run:

    python bench/mimi_vs_moshi.py [--seconds 10] [--threads 2] [--codebooks 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--codebooks", type=int, default=8)
    parser.add_argument("--stream-frames", type=int, default=25)
    args = parser.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))

    import numpy as np
    import speechinfer as si
    import torch
    from moshi.models.loaders import get_mimi
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = get_mimi(None, device="cpu", num_codebooks=args.codebooks)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("embedding_sum"):
                buf.normal_(0.0, 0.01)  # moshi's untrained codebooks are all zero
    state = {
        k.replace("in_projs.0.weight", "in_proj_weight").replace(
            "out_projs.0.weight", "out_proj.weight"
        ): v.contiguous()
        for k, v in model.state_dict().items()
    }
    try:
        import rustymimi
    except ImportError:
        rustymimi = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.safetensors"
        save_file(state, str(path))
        start = time.perf_counter()
        codec = si.Codec.load(path, num_codebooks=args.codebooks)
        load_s = time.perf_counter() - start
        rusty = None
        if rustymimi is not None:
            rusty = rustymimi.Tokenizer(str(path), num_codebooks=args.codebooks)

    samples = int(args.seconds * codec.sample_rate)
    t = np.arange(samples) / codec.sample_rate
    noise = np.random.default_rng(0).standard_normal(samples)
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * noise).astype(np.float32)[None]
    codes = codec.encode(wave)
    wave_t, codes_t = torch.from_numpy(wave)[:, None], torch.from_numpy(codes)
    wave_3d, codes_u32 = np.ascontiguousarray(wave[:, None]), codes.astype(np.uint32)
    frame_s = 1.0 / codec.frame_rate
    n = min(args.stream_frames, codes.shape[-1])

    def stream_engine() -> None:
        dec = codec.stream_decoder()
        for f in range(n):
            dec.step(codes[:, :, f : f + 1])

    def stream_moshi() -> None:
        with model.streaming(1):
            for f in range(n):
                model.decode(codes_t[:, :, f : f + 1])

    rusty_frames = [np.ascontiguousarray(codes_u32[:, :, f : f + 1]) for f in range(n)]

    def stream_rusty() -> None:
        rusty.reset()
        for frame in rusty_frames:
            rusty.decode_step(frame)

    rows = []
    with torch.inference_mode():
        for name, engine_fn, moshi_fn, rusty_fn, audio_s in [
            (
                "encode",
                lambda: codec.encode(wave),
                lambda: model.encode(wave_t),
                lambda: rusty.encode(wave_3d),
                args.seconds,
            ),
            (
                "decode",
                lambda: codec.decode(codes),
                lambda: model.decode(codes_t),
                lambda: rusty.decode(codes_u32),
                args.seconds,
            ),
            ("stream decode step", stream_engine, stream_moshi, stream_rusty, n * frame_s),
        ]:
            e, m = timed(engine_fn, args.repeat), timed(moshi_fn, args.repeat)
            r = timed(rusty_fn, args.repeat) if rusty is not None else float("nan")
            if name.startswith("stream"):
                e, m, r = e / n, m / n, r / n
                audio_s = frame_s
            rows.append((name, e, m, r, e / audio_s, m / audio_s))

    print(f"Mimi, {args.codebooks} codebooks, {args.seconds:g} s of audio, {args.threads} threads,")
    print(f"median of {args.repeat}; engine load {load_s:.2f} s")
    if rusty is None:
        print("(rustymimi not installed: its columns are nan)")
    header = ("op", "engine s", "moshi s", "rusty s", "engine RTF", "moshi RTF", "m/e", "r/e")
    print("{:<20}{:>10}{:>10}{:>10}{:>12}{:>11}{:>8}{:>8}".format(*header))
    for name, e, m, r, er, mr in rows:
        times = f"{e:>10.4f}{m:>10.4f}{r:>10.4f}{er:>12.4f}{mr:>11.4f}"
        print(f"{name:<20}{times}{m / e:>7.2f}x{r / e:>7.2f}x")
    print("(m/e = moshi time / engine time, r/e = rustymimi / engine; > 1: the engine is faster)")


if __name__ == "__main__":
    main()
