"""Side-by-side: the engine's speech LM vs its PyTorch twin on the same random weights, same run.

For every pattern (parallel, delay, flatten, depth, coarse_first) of one random-weight model it
measures the engine's greedy generation (frames/s and tokens/s at batch 1 and 8, the marginal
cost of one decode step, the first-chunk latency of ``lm.stream``), teacher-forced forward
throughput of engine and twin on the same step grid, the latency of a one-step forward, and the
twin's ``generate_greedy`` (uncached: it recomputes every step, so its cost grows with the square
of the length). It also measures memory-copy bandwidth and prints the decode rate as a fraction
of the weight-bandwidth bound (every step reads every weight it uses once). Generated tokens are
checked against the twin before anything is reported. Run:

    python bench/lm_vs_twin.py [--quick] [--threads N] [--d-model 512 --layers 8 ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

PATTERNS = ("parallel", "delay", "flatten", "depth", "coarse_first")
DEFAULT_DEPTH = {"d_model": 256, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 704}
QUICK = {
    "d_model": 128,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "ffn": 352,
    "frames": 16,
    "twin_frames": 8,
    "repeat": 2,
    "copy_mb": 256,
    "max_context": 512,
    "depth": '{"d_model": 64, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 128}',
}


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of `repeat` calls after one warm-up call.

    The best, not the median: on a small shared machine other processes only ever add time, and
    OpenMP's spinning barriers turn a descheduled thread into whole time slices.
    """
    fn()
    return min(_time_once(fn) for _ in range(repeat))


def copy_bandwidth(megabytes: int, repeat: int = 5) -> float:
    """Bytes/s (read + written) of the best of `repeat` numpy copies of a `megabytes` array."""
    import numpy as np

    src = np.ones(megabytes * (1 << 20) // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault both arrays in
    return 2 * src.nbytes / timed(lambda: np.copyto(dst, src), repeat)


def _time_once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def lm_config(args: argparse.Namespace, pattern: str) -> dict[str, Any]:
    """The bench model under `pattern`: audio streams laid out like the default config."""
    from speechinfer_training.lm import audio_stream

    delayed = pattern in ("delay", "depth")
    streams = [audio_stream(q, args.vocab, q if delayed else 0) for q in range(args.streams)]
    depth = {**DEFAULT_DEPTH, **json.loads(args.depth)} if pattern == "depth" else None
    return {
        "d_model": args.d_model,
        "n_layers": args.layers,
        "n_heads": args.heads,
        "n_kv_heads": args.kv_heads,
        "ffn_dim": args.ffn,
        "max_context": args.max_context,
        "streams": streams,
        "pattern": pattern,
        "depth": depth,
    }


def weight_bytes(twin: Any) -> dict[str, float]:
    """f32 bytes of the weights one decode step reads (embedding tables: one row, not counted).

    ``step``: the main transformer's layers, norm and every head it computes (tied heads = the
    embedding tables), plus for ``"depth"`` the depth layers and norm once per depth position (K
    times), every in-projection used and every head once. ``nar``: what the ``"coarse_first"``
    NAR reads for its K - 1 stage passes (once per generation, not per step).
    """
    k_n = twin.num_streams
    sizes: dict[str, float] = {}
    for name, p in twin.named_parameters():
        group = name.split(".")[0]
        if group in ("depth", "nar"):
            group += "." + name.split(".")[1]
        sizes[group] = sizes.get(group, 0) + p.numel() * 4
    main = sizes["layers"] + sizes["norm"]
    main += sizes["heads"] if "heads" in sizes else sizes["embeddings"]
    out = {"main": main, "depth": 0.0, "nar": 0.0}
    if twin.depth is not None:
        proj = sizes["depth.in_proj"] * (1 if twin.depth.per_position_proj else k_n)
        out["depth"] = k_n * (sizes["depth.layers"] + sizes["depth.norm"]) + proj
        out["depth"] += sizes["depth.heads"]
    if twin.nar is not None:
        out["nar"] = (k_n - 1) * (sizes["nar.layers"] + sizes["nar.norm"]) + sizes["nar.heads"]
    out["step"] = out["main"] + out["depth"]
    return out


def bench_pattern(args: argparse.Namespace, pattern: str, bandwidth: float) -> dict[str, Any]:
    import numpy as np
    import speechinfer as si
    import torch
    from speechinfer_training.export import save_pretrained
    from speechinfer_training.lm import SpeechLM as TwinLM

    torch.manual_seed(0)
    twin = TwinLM(lm_config(args, pattern)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(twin, tmp)
        lm = si.SpeechLM.load(tmp)
        lm8 = si.SpeechLM.load(tmp, weights="int8")

    k_n, rows = twin.num_streams, twin.num_step_rows
    p_n, n, n_twin = args.prompt, args.frames, args.twin_frames
    n_short = max(1, n // 4)
    b_max = max(args.batches)
    rng = np.random.default_rng(0)
    highs = [
        min(i for i in (s["pad_id"], s["bos_id"], s["eos_id"]) if i is not None)
        for s in twin.config["streams"]
    ]
    prompt = np.stack([rng.integers(0, h, (b_max, p_n)) for h in highs], 1).astype(np.int64)
    # The teacher-forced grid: prompt + n random frames laid out as steps, like `score` feeds it.
    grid = np.stack([rng.integers(0, h, (b_max, p_n + n)) for h in highs], 1).astype(np.int64)
    layout = twin.layout(p_n + n)
    steps_t = layout.apply(torch.from_numpy(grid[:, :rows]), twin.special_ids[:rows])
    if twin.depth is None:
        steps_t = steps_t[..., :-1]
    steps = steps_t.numpy()
    fed_steps = steps.shape[-1]

    def gen(b: int, frames: int) -> Callable[[], np.ndarray]:
        return lambda: lm.generate(prompt[:b], frames, stop_on_eos=False)

    def num_steps(frames: int) -> int:
        return twin.layout(p_n + frames).num_steps

    res: dict[str, Any] = {"pattern": pattern, "K": k_n, "steps_per_frame": 1}
    if pattern == "flatten":
        res["steps_per_frame"] = k_n

    # Correctness: the engine's timed generations against the twin's greedy tokens.
    prompt_t = torch.from_numpy(prompt[:1])
    with torch.inference_mode():
        want = twin.generate_greedy(prompt_t, n_twin, stop_on_eos=False).numpy()
        res["twin_gen_s"] = _time_once(
            lambda: twin.generate_greedy(prompt_t, n_twin, stop_on_eos=False)
        )
    got_short = lm.generate(prompt[:1], n_twin, stop_on_eos=False)
    got_long = lm.generate(prompt[:1], n, stop_on_eos=False)
    got_batch = lm.generate(prompt[:b_max], n, stop_on_eos=False)
    # The long run repeats the short one's frames up to where the short layout's trailing
    # specials (delays) start to matter; the bidirectional NAR sees every frame (stream 0 only).
    same = p_n + n_twin - max(s["delay"] for s in twin.config["streams"])
    k_same = 1 if twin.nar is not None else k_n
    check = {
        "engine == twin greedy": np.array_equal(got_short, want),
        f"{n}-frame run extends it": np.array_equal(
            got_long[:, :k_same, :same], want[:, :k_same, :same]
        ),
        f"batch {b_max} row 0 == batch 1": np.array_equal(got_batch[:1], got_long),
        "generated tokens vary": len(np.unique(got_long[..., p_n:])) >= 3,
    }
    failed = [what for what, ok in check.items() if not ok]
    if failed:
        raise SystemExit(f"{pattern}: correctness check failed ({', '.join(failed)}); not timing")
    res["engine_gen_twin_frames_s"] = timed(gen(1, n_twin), args.repeat)

    with torch.inference_mode():
        got_logits = lm.logits(steps[:1])
        want_logits = [x.numpy() for x in twin(steps_t[:1])]
    res["logits_max_abs_diff"] = max(
        float(np.abs(a - b).max()) for a, b in zip(got_logits, want_logits, strict=True)
    )

    # Engine generation: end to end, and the marginal cost of one decode step (coarse_first:
    # of one AR step, the K - 1 NAR stage passes over the longer grid subtracted).
    for b in args.batches:
        full = timed(gen(b, n), args.repeat)
        short = timed(gen(b, n_short), args.repeat)
        res[f"gen_b{b}_s"] = full
        res[f"gen_b{b}_frames_per_s"] = b * n / full
        res[f"gen_b{b}_tokens_per_s"] = b * n * k_n / full
        if twin.nar is not None:
            nar_full, nar_short = (
                (k_n - 1) * timed(lambda g=grid[:b, :, : p_n + f]: lm.nar_logits(g, 1, p_n), 2)
                for f in (n, n_short)
            )
            res[f"nar_b{b}_ms"] = 1e3 * nar_full
            full, short = full - nar_full, short - nar_short
        step_ms = 1e3 * (full - short) / (num_steps(n) - num_steps(n_short))
        res[f"decode_b{b}_ms_per_step"] = step_ms if step_ms > 0 else None  # None: lost in noise

    # int8 weights: the marginal decode step, and how far its greedy tokens and logits move.
    for b in args.batches:
        full = timed(lambda b=b: lm8.generate(prompt[:b], n, stop_on_eos=False), args.repeat)
        short = timed(lambda b=b: lm8.generate(prompt[:b], n_short, stop_on_eos=False), args.repeat)
        step_ms = 1e3 * (full - short) / (num_steps(n) - num_steps(n_short))
        res[f"int8_decode_b{b}_ms_per_step"] = step_ms if step_ms > 0 else None
        res[f"int8_gen_b{b}_frames_per_s"] = b * n / full
    got8 = lm8.generate(prompt[:1], n, stop_on_eos=False)
    res["int8_same_tokens"] = float((got8[..., p_n:] == got_long[..., p_n:]).mean())
    logits8 = lm8.logits(steps[:1])
    res["int8_logits_rel_err"] = max(
        float(np.linalg.norm(a - b) / np.linalg.norm(b))
        for a, b in zip(logits8, got_logits, strict=True)
    )

    if pattern != "coarse_first":  # stream() needs a frame-synchronous pattern

        def first_chunk() -> None:
            next(iter(lm.stream(prompt[:1], n, stop_on_eos=False)))

        res["ttff_ms"] = 1e3 * timed(first_chunk, args.repeat)

    # One position through the model, no cache: reads every weight once (depth needs 2 steps).
    one = steps[:1, :, : 2 if twin.depth is not None else 1]
    one_t = torch.from_numpy(one)
    res["engine_1step_ms"] = 1e3 * timed(lambda: lm.logits(one), args.repeat * 3)
    with torch.inference_mode():
        res["twin_1step_ms"] = 1e3 * timed(lambda: twin(one_t), args.repeat * 3)

    # Teacher-forced throughput on the same step grid.
    for b in args.batches:
        e = timed(lambda b=b: lm.logits(steps[:b]), args.repeat)
        with torch.inference_mode():
            t = timed(lambda b=b: twin(steps_t[:b]), args.repeat)
        res[f"tf_b{b}_engine_steps_per_s"] = b * fed_steps / e
        res[f"tf_b{b}_twin_steps_per_s"] = b * fed_steps / t

    wb = weight_bytes(twin)
    res["weight_mb_per_step"] = wb["step"] / 1e6
    res["nar_weight_mb"] = wb["nar"] / 1e6
    res["bound_steps_per_s"] = bandwidth / wb["step"]
    b1 = min(args.batches)
    step_ms = res[f"decode_b{b1}_ms_per_step"]
    res["decode_b1_steps_per_s"] = None if step_ms is None else 1e3 / step_ms
    res["fraction_of_bound"] = None if step_ms is None else 1e3 / step_ms / res["bound_steps_per_s"]
    res["params_m"] = sum(p.numel() for p in twin.parameters()) / 1e6
    res["fed_steps"] = fed_steps
    return res


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def print_tables(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    b1, b8 = min(args.batches), max(args.batches)
    print()
    print(
        f"| pattern | gen b{b1} frames/s (tok/s) | gen b{b8} frames/s (tok/s) "
        f"| decode ms/step b{b1} / b{b8} | first chunk ms | MB/step | bound steps/s "
        f"| engine b{b1} steps/s ÷ bound |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        steps = [fmt(r[f"decode_b{b}_ms_per_step"], 2) for b in (b1, b8)]
        print(
            f"| {r['pattern']} "
            f"| {fmt(r[f'gen_b{b1}_frames_per_s'])} ({fmt(r[f'gen_b{b1}_tokens_per_s'], 0)}) "
            f"| {fmt(r[f'gen_b{b8}_frames_per_s'])} ({fmt(r[f'gen_b{b8}_tokens_per_s'], 0)}) "
            f"| {steps[0]} / {steps[1]} "
            f"| {fmt(r.get('ttff_ms'))} | {fmt(r['weight_mb_per_step'])} "
            f"| {fmt(r['bound_steps_per_s'])} | {fmt(r['fraction_of_bound'], 2)} |"
        )
    print()
    print(
        "| pattern | 1-step fwd ms engine / twin "
        f"| teacher-forced b{b1} steps/s engine / twin (e/t) "
        f"| teacher-forced b{b8} steps/s engine / twin (e/t) "
        f"| greedy {args.twin_frames} frames b1 s engine / twin uncached (t/e) "
        "| max abs logit diff |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        cells = []
        for b in (b1, b8):
            e, t = r[f"tf_b{b}_engine_steps_per_s"], r[f"tf_b{b}_twin_steps_per_s"]
            cells.append(f"{e:.0f} / {t:.0f} ({e / t:.2f}x)")
        ge, gt = r["engine_gen_twin_frames_s"], r["twin_gen_s"]
        print(
            f"| {r['pattern']} | {r['engine_1step_ms']:.2f} / {r['twin_1step_ms']:.2f} "
            f"| {cells[0]} | {cells[1]} | {ge:.3f} / {gt:.2f} ({gt / ge:.0f}x) "
            f"| {r['logits_max_abs_diff']:.1e} |"
        )
    print()
    print(
        f"| pattern | int8 decode ms/step b{b1} / b{b8} | speed-up vs f32 b{b1} / b{b8} "
        f"| int8 gen b{b1} frames/s | same greedy tokens | logits rel. err vs f32 |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        ms8 = [r[f"int8_decode_b{b}_ms_per_step"] for b in (b1, b8)]
        ms = [r[f"decode_b{b}_ms_per_step"] for b in (b1, b8)]
        ups = [fmt(f / q, 2) if f and q else "—" for f, q in zip(ms, ms8, strict=True)]
        print(
            f"| {r['pattern']} | {fmt(ms8[0], 2)} / {fmt(ms8[1], 2)} | {ups[0]}x / {ups[1]}x "
            f"| {fmt(r[f'int8_gen_b{b1}_frames_per_s'])} | {r['int8_same_tokens']:.2f} "
            f"| {r['int8_logits_rel_err']:.1e} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and runs (< 1 min)")
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1408)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1027)
    parser.add_argument("--max-context", type=int, default=2048, help="KV-cache capacity")
    parser.add_argument("--depth", default="{}", help=f"depth sizes JSON over {DEFAULT_DEPTH}")
    parser.add_argument("--prompt", type=int, default=8, help="prompt frames")
    parser.add_argument("--frames", type=int, default=64, help="generated frames")
    parser.add_argument("--twin-frames", type=int, default=16, help="frames of the twin's run")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copy-mb", type=int, default=512)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    args.batches = sorted({int(b) for b in args.batches.split(",")})
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    bandwidth = copy_bandwidth(args.copy_mb)
    patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    started = time.perf_counter()
    results = []
    for pattern in patterns:
        if pattern not in PATTERNS:
            raise SystemExit(f"unknown pattern {pattern!r}; known: {PATTERNS}")
        t0 = time.perf_counter()
        results.append(bench_pattern(args, pattern, bandwidth))
        print(f"{pattern}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    model = {
        k: getattr(args, k)
        for k in ("d_model", "layers", "heads", "kv_heads", "ffn", "streams", "vocab")
    }
    print(f"model {model}, depth {json.loads(args.depth) or DEFAULT_DEPTH}, random weights, f32")
    print(
        f"{platform.machine()} with {os.cpu_count()} cores; torch {torch.__version__} "
        f"set_num_threads({args.threads}), RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}, "
        f"numpy {np.__version__}"
    )
    print(
        f"prompt {args.prompt} frames, {args.frames} generated (decode step = marginal cost "
        f"{max(1, args.frames // 4)} → {args.frames} frames), greedy, stop_on_eos=False, "
        f"best of {args.repeat} after a warm-up; twin greedy: {args.twin_frames} frames, once"
    )
    print(
        f"memory copy bandwidth (numpy, {args.copy_mb} MB, read + write, best of 5): "
        f"{bandwidth / 1e9:.1f} GB/s; peak RSS {peak_rss_mb:.0f} MB; "
        f"total {time.perf_counter() - started:.0f} s; 1-min load average {load_before:.2f} "
        f"before, {os.getloadavg()[0]:.2f} after (this run itself adds up to {args.threads})"
    )
    print("correctness: engine greedy tokens == twin generate_greedy for every pattern")
    print_tables(results, args)
    for r in results:
        if r.get("nar_weight_mb"):
            b1, b8 = min(args.batches), max(args.batches)
            print(
                f"{r['pattern']}: decode step = one AR step; the NAR's {r['K'] - 1} stage passes "
                f"over {args.prompt + args.frames} frames ({r['nar_weight_mb']:.0f} MB of "
                f"weights) took {r[f'nar_b{b1}_ms']:.0f} ms at b{b1}, "
                f"{r[f'nar_b{b8}_ms']:.0f} ms at b{b8} (in the gen figures)"
            )
    if args.json:
        summary = {
            "args": vars(args),
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "copy_bandwidth_gb_s": bandwidth / 1e9,
            "peak_rss_mb": peak_rss_mb,
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
