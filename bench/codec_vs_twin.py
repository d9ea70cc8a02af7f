"""Side-by-side: the engine's codec vs its PyTorch twin on the same random weights, same run.

Prints real-time factor (compute time / audio time, lower is faster) of encode, decode and the
streaming decode step, and the twin/engine ratio. Run:

    python bench/codec_vs_twin.py [--seconds 4] [--threads 2] [--config '{"ratios": [8,5,4,2]}']
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable


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
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--config", default="{}", help="codec config JSON (default codec: {})")
    args = parser.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))

    import numpy as np
    import speechinfer as si
    import torch
    from speechinfer_training.codec import Codec as TwinCodec
    from speechinfer_training.export import save_pretrained

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    twin = TwinCodec(json.loads(args.config)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(twin, tmp)
        codec = si.Codec.load(tmp)

    samples = int(args.seconds * codec.sample_rate)
    wave = (np.random.default_rng(0).standard_normal((1, samples)) * 0.3).astype(np.float32)
    codes = codec.encode(wave)
    wave_t, codes_t = torch.from_numpy(wave)[:, None], torch.from_numpy(codes)
    frame_seconds = 1.0 / codec.frame_rate

    def stream_engine() -> None:
        dec = codec.stream_decoder()
        for f in range(codes.shape[-1]):
            dec.step(codes[:, :, f : f + 1])

    rows = []
    with torch.inference_mode():
        for name, engine_fn, twin_fn, audio_s in [
            ("encode", lambda: codec.encode(wave), lambda: twin.encode(wave_t), args.seconds),
            ("decode", lambda: codec.decode(codes), lambda: twin.decode(codes_t), args.seconds),
        ]:
            e, t = timed(engine_fn, args.repeat), timed(twin_fn, args.repeat)
            rows.append((name, e / audio_s, t / audio_s, t / e))
        per_frame = timed(stream_engine, 1) / codes.shape[-1]
        rows.append(
            ("stream step (1 frame)", per_frame / frame_seconds, float("nan"), float("nan"))
        )

    print(f"codec {json.loads(codec.config_json)}")
    print(f"{args.seconds:g} s of audio, {args.threads} threads, median of {args.repeat}")
    print(f"{'op':<24}{'engine RTF':>12}{'twin RTF':>12}{'twin/engine':>13}")
    for name, e, t, r in rows:
        print(f"{name:<24}{e:>12.4f}{t:>12.4f}{r:>12.2f}x")
    print(f"stream step: {per_frame * 1e3:.2f} ms per {frame_seconds * 1e3:.0f} ms frame")


if __name__ == "__main__":
    main()
