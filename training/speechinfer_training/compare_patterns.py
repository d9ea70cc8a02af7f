"""Train the TTS LM with several patterns on the same shards and budget; compare heldout loss.

``python -m speechinfer_training.compare_patterns --shards SHARDS --out OUT --steps N
[--patterns delay,parallel] [any train_tts flag, e.g. --batch-size 8 --d-model 128 --threads 2]``

Each pattern trains in ``OUT/<pattern>`` (``train_tts`` with the same seed, data order, sizes and
steps; ``--resume`` picks up interrupted runs). The heldout loss is the mean cross-entropy per
audio token (nats; every codebook and the EOS frame) over the shards' heldout split, after the
last step: the targets are the same under every pattern, so the numbers compare directly.
Training speed is audio tokens per second of optimizer steps (evaluation excluded). The table is
printed and saved as ``OUT/compare_patterns.json``.
"""

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .lm_training import LOG_FILE, read_log
from .train_tts import main as train_tts_main


def summarize(run_dir: Path) -> dict[str, Any]:
    """Return the last heldout losses and the training throughput of a ``train_tts`` run."""
    records = read_log(run_dir / LOG_FILE)
    if not records:
        raise ValueError(f"{run_dir / LOG_FILE} is empty")
    evaluated = [r for r in records if "heldout_audio_loss" in r]
    last = evaluated[-1] if evaluated else {}
    seconds = sum(r["step_s"] for r in records)
    tokens = sum(r["audio_tokens"] for r in records)
    heldout = last.get("heldout_audio_loss")
    return {
        "steps": records[-1]["step"],
        "heldout_audio_loss": heldout,
        "heldout_audio_bits": None if heldout is None else heldout / math.log(2),
        "heldout_text_loss": last.get("heldout_text_loss"),
        "train_audio_loss": records[-1].get("audio_loss"),
        "audio_tokens_per_s": tokens / seconds if seconds > 0 else None,
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """Return a Markdown table of :func:`summarize` results keyed by pattern."""

    def cell(value: Any, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        "| pattern | steps | heldout nats/audio token | bits | train audio loss | audio tok/s |",
        "|---|---|---|---|---|---|",
    ]
    for pattern, r in results.items():
        lines.append(
            f"| {pattern} | {r['steps']} | {cell(r['heldout_audio_loss'], 4)} | "
            f"{cell(r['heldout_audio_bits'], 4)} | {cell(r['train_audio_loss'], 4)} | "
            f"{cell(r['audio_tokens_per_s'], 0)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Command-line entry point; returns the summaries keyed by pattern."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.compare_patterns",
        description=(__doc__ or "").split("\n\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--patterns", default="delay,parallel", help="comma-separated")
    args, extra = parser.parse_known_args(argv)
    if "--pattern" in extra:
        parser.error("use --patterns")
    patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
    results = {}
    for pattern in patterns:
        run_dir = args.out / pattern
        common = ["--shards", str(args.shards), "--steps", str(args.steps)]
        train_tts_main([*common, "--out", str(run_dir), "--pattern", pattern, *extra])
        results[pattern] = summarize(run_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"steps": args.steps, "train_tts_flags": extra, "results": results}
    (args.out / "compare_patterns.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
