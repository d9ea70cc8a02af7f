"""Side-by-side: the engine serving a Mimi checkpoint vs Kyutai's PyTorch `moshi` package (and,
when installed, Kyutai's Rust `rustymimi` wheel) on the same random weights, same run.

Prints wall time and real-time factor (compute time / audio time, lower is faster) of encode,
decode and the streaming decode step (one 80 ms frame), each implementation's peak RSS, and
moshi/engine (rustymimi/engine) as a ratio. Each implementation is measured in its own
subprocess (`--only engine|moshi|rustymimi`), so its `ru_maxrss` is its own peak resident
memory: imports, weights and activations, nothing of the others. Linux carries the parent's
high-water RSS into a child's `ru_maxrss` across fork/exec, so the parent stays small: it never
imports torch, and the ~385 MB checkpoint is written (once, to a temporary directory, shared by
all three) by a subprocess too. Needs `moshi` (see scripts/test.sh). `--bf16` also measures the
engine with `weights="bf16"` (conv and linear weights rounded to bfloat16) and prints it beside
the float32 engine and the peers. Run:

    python bench/mimi_vs_moshi.py [--seconds 10] [--threads 2] [--codebooks 8] [--bf16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

IMPLS = ("engine", "moshi", "rustymimi")
BF16 = "engine-bf16"
OPS = ("encode", "decode", "stream decode step")
SAMPLE_RATE = 24000
FRAME_RATE = 12.5


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_wave(seconds: float):
    import numpy as np

    samples = int(seconds * SAMPLE_RATE)
    t = np.arange(samples) / SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(samples)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * noise).astype(np.float32)[None]


def run_engine(args: argparse.Namespace) -> dict:
    import numpy as np
    import speechinfer as si

    bf16 = args.only == BF16
    start = time.perf_counter()
    codec = si.Codec.load(
        args.weights, num_codebooks=args.codebooks, weights="bf16" if bf16 else "float32"
    )
    load_s = time.perf_counter() - start
    assert codec.sample_rate == SAMPLE_RATE and codec.frame_rate == FRAME_RATE
    wave = make_wave(args.seconds)
    if bf16:
        codes = np.load(args.codes)
    else:
        codes = codec.encode(wave)
        np.save(args.codes, codes)  # the other implementations decode the engine's codes
    n = min(args.stream_frames, codes.shape[-1])

    def stream() -> None:
        dec = codec.stream_decoder()
        for f in range(n):
            dec.step(codes[:, :, f : f + 1])

    return {
        "load_s": load_s,
        "encode": timed(lambda: codec.encode(wave), args.repeat),
        "decode": timed(lambda: codec.decode(codes), args.repeat),
        "stream decode step": timed(stream, args.repeat) / n,
    }


def run_moshi(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from moshi.models.loaders import get_mimi

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = get_mimi(args.weights, device="cpu", num_codebooks=args.codebooks)
    load_s = time.perf_counter() - start
    wave_t = torch.from_numpy(make_wave(args.seconds))[:, None]
    codes_t = torch.from_numpy(np.load(args.codes))
    n = min(args.stream_frames, codes_t.shape[-1])

    def stream() -> None:
        with model.streaming(1):
            for f in range(n):
                model.decode(codes_t[:, :, f : f + 1])

    with torch.inference_mode():
        return {
            "load_s": load_s,
            "encode": timed(lambda: model.encode(wave_t), args.repeat),
            "decode": timed(lambda: model.decode(codes_t), args.repeat),
            "stream decode step": timed(stream, args.repeat) / n,
        }


def run_rustymimi(args: argparse.Namespace) -> dict:
    import numpy as np
    import rustymimi

    start = time.perf_counter()
    rusty = rustymimi.Tokenizer(str(args.weights), num_codebooks=args.codebooks)
    load_s = time.perf_counter() - start
    wave_3d = np.ascontiguousarray(make_wave(args.seconds)[:, None])
    codes_u32 = np.load(args.codes).astype(np.uint32)
    n = min(args.stream_frames, codes_u32.shape[-1])
    frames = [np.ascontiguousarray(codes_u32[:, :, f : f + 1]) for f in range(n)]

    def stream() -> None:
        rusty.reset()
        for frame in frames:
            rusty.decode_step(frame)

    return {
        "load_s": load_s,
        "encode": timed(lambda: rusty.encode(wave_3d), args.repeat),
        "decode": timed(lambda: rusty.decode(codes_u32), args.repeat),
        "stream decode step": timed(stream, args.repeat) / n,
    }


def write_weights(path: Path, codebooks: int) -> None:
    """moshi's randomly initialised Mimi, saved in the released checkpoint layout."""
    import torch
    from moshi.models.loaders import get_mimi
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = get_mimi(None, device="cpu", num_codebooks=codebooks)
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
    save_file(state, str(path))


def child(args: argparse.Namespace) -> None:
    runs = {"engine": run_engine, "moshi": run_moshi, "rustymimi": run_rustymimi, BF16: run_engine}
    result = runs[args.only](args)
    result["peak_rss_mib"] = peak_rss_mib()
    Path(args.json).write_text(json.dumps(result))


def measure(impl: str, args: argparse.Namespace, tmp: Path) -> dict | None:
    out = tmp / f"{impl}.json"
    cmd = [sys.executable, __file__, "--only", impl, "--json", str(out)]
    cmd += ["--weights", str(tmp / "tokenizer.safetensors"), "--codes", str(tmp / "codes.npy")]
    for opt in ("seconds", "threads", "repeat", "codebooks", "stream_frames"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if subprocess.run(cmd, check=False).returncode != 0:
        return None
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--codebooks", type=int, default=8)
    parser.add_argument("--stream-frames", type=int, default=25)
    parser.add_argument("--bf16", action="store_true", help="also the engine with bf16 weights")
    parser.add_argument(
        "--only", choices=(*IMPLS, BF16), help="(internal) measure one implementation"
    )
    parser.add_argument("--json", help="(internal) where --only writes its results")
    parser.add_argument("--weights", type=Path, help="(internal) the shared checkpoint")
    parser.add_argument("--codes", type=Path, help="(internal) the engine's codes (.npy)")
    parser.add_argument("--write-weights", type=Path, help="(internal) write the checkpoint")
    args = parser.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    if args.write_weights:
        write_weights(args.write_weights, args.codebooks)
        return
    if args.only:
        child(args)
        return

    impls = IMPLS if importlib.util.find_spec("rustymimi") else IMPLS[:2]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        weights = tmp / "tokenizer.safetensors"
        write = [sys.executable, __file__, "--write-weights", str(weights)]
        subprocess.run([*write, "--codebooks", str(args.codebooks)], check=True)
        results = {impl: measure(impl, args, tmp) for impl in impls}
        if args.bf16:
            results[BF16] = measure(BF16, args, tmp)
    if results["engine"] is None:
        sys.exit("engine run failed")
    nan = {op: math.nan for op in (*OPS, "load_s", "peak_rss_mib")}
    e, m, r = (results.get(impl) or nan for impl in IMPLS)

    load = ", ".join(f"{impl} {results[impl]['load_s']:.2f} s" for impl in impls if results[impl])
    print(f"Mimi, {args.codebooks} codebooks, {args.seconds:g} s of audio, {args.threads} threads,")
    print(f"median of {args.repeat}, one subprocess per implementation; load {load}")
    print(f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min)")
    if "rustymimi" not in impls:
        print("(rustymimi not installed: its columns are nan)")
    header = ("op", "engine s", "moshi s", "rusty s", "engine RTF", "moshi RTF", "m/e", "r/e")
    print("{:<20}{:>10}{:>10}{:>10}{:>12}{:>11}{:>8}{:>8}".format(*header))
    for op in OPS:
        audio_s = 1.0 / FRAME_RATE if op.startswith("stream") else args.seconds
        te, tm, tr = e[op], m[op], r[op]
        times = f"{te:>10.4f}{tm:>10.4f}{tr:>10.4f}{te / audio_s:>12.4f}{tm / audio_s:>11.4f}"
        print(f"{op:<20}{times}{tm / te:>7.2f}x{tr / te:>7.2f}x")
    pe, pm, pr = e["peak_rss_mib"], m["peak_rss_mib"], r["peak_rss_mib"]
    rss = f"{pe:>10.0f}{pm:>10.0f}{pr:>10.0f}{'':>12}{'':>11}"
    print(f"{'peak RSS (MiB)':<20}{rss}{pm / pe:>7.2f}x{pr / pe:>7.2f}x")
    print("(m/e = moshi / engine, r/e = rustymimi / engine; > 1: the engine is faster or smaller)")
    if args.bf16:
        print_bf16(results.get(BF16) or nan, e, m, r, args.seconds)


def print_bf16(b: dict, e: dict, m: dict, r: dict, seconds: float) -> None:
    """The bf16-weight engine beside the float32 engine and the peers."""
    print("engine with bf16 weights (same run):")
    header = ("op", "bf16 s", "bf16 RTF", "f32/bf16", "m/bf16", "r/bf16")
    print("{:<20}{:>10}{:>12}{:>10}{:>10}{:>10}".format(*header))
    for op in OPS:
        audio_s = 1.0 / FRAME_RATE if op.startswith("stream") else seconds
        tb = b[op]
        ratios = f"{e[op] / tb:>9.2f}x{m[op] / tb:>9.2f}x{r[op] / tb:>9.2f}x"
        print(f"{op:<20}{tb:>10.4f}{tb / audio_s:>12.4f}{ratios}")
    print(f"{'peak RSS (MiB)':<20}{b['peak_rss_mib']:>10.0f}")


if __name__ == "__main__":
    main()
