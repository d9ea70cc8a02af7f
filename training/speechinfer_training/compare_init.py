"""TWIST check: train the TTS LM from scratch and from a text LM on the same budget; compare.

``python -m speechinfer_training.compare_init --shards SHARDS --out OUT --steps N
[--text-lm TEXT_LM_DIR | --text-lm-steps M [--fortunes K]] [--d-model 256 ...]
[any other train_tts flag, e.g. --batch-size 8 --eval-every 50 --threads 2]``

Without ``--text-lm``, a text LM is first trained in ``OUT/text_lm`` (``train_text_lm`` on the
shards' corpus text — heldout split held out — plus ``--fortunes K`` Debian fortune sentences,
``--text-lm-steps`` steps). Then ``train_tts`` runs twice with identical flags and seed:
``OUT/scratch`` and ``OUT/twist`` (``--init-from`` the text LM). The size flags go to both LMs.
Both loss curves (train ``audio_loss`` every step, ``heldout_audio_loss`` at every evaluation)
are saved in ``OUT/compare_init.json`` and ``OUT/compare_init.csv``; the heldout curves are
printed.
"""

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .lm_training import LOG_FILE, read_log
from .train_text_lm import MODEL_DIR
from .train_text_lm import main as train_text_lm_main
from .train_tts import main as train_tts_main
from .tts_data import read_meta

RUNS = ("scratch", "twist")
SHARED_FLAGS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "threads", "seed")
CURVE_KEYS = ("audio_loss", "heldout_audio_loss", "heldout_text_loss")


def curves(run_dir: Path) -> list[dict[str, Any]]:
    """Return ``step`` and the loss values of every record of a run's log."""
    records = read_log(run_dir / LOG_FILE)
    return [{"step": r["step"], **{k: r[k] for k in CURVE_KEYS if k in r}} for r in records]


def write_csv(path: Path, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Write one row per step: ``step`` then ``<run>_<loss>`` columns (blank when not logged)."""
    columns = [f"{run}_{key}" for run in runs for key in CURVE_KEYS]
    by_step: dict[int, dict[str, Any]] = {}
    for run, records in runs.items():
        for record in records:
            row = by_step.setdefault(record["step"], {})
            row.update({f"{run}_{k}": v for k, v in record.items() if k != "step"})
    lines = [",".join(["step", *columns])]
    for step in sorted(by_step):
        row = by_step[step]
        lines.append(",".join([str(step), *(f"{row[c]:.6f}" if c in row else "" for c in columns)]))
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Command-line entry point; returns the curves keyed by run (``scratch``, ``twist``)."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.compare_init",
        description=(__doc__ or "").split("\n\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--text-lm", type=Path, help="a train_text_lm model directory")
    parser.add_argument("--text-lm-steps", type=int, default=1000)
    parser.add_argument("--fortunes", type=int, default=0, help="extra text LM sentences")
    for name in SHARED_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    args, extra = parser.parse_known_args(argv)
    if "--init-from" in extra:
        parser.error("use --text-lm")
    shared = []
    for name in SHARED_FLAGS:
        if getattr(args, name) is not None:
            shared += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    text_lm = args.text_lm
    if text_lm is None:
        text_dir = args.out / "text_lm"
        manifest = read_meta(args.shards)["manifest"]
        text_argv = ["--out", str(text_dir), "--steps", str(args.text_lm_steps)]
        text_argv += ["--manifest", manifest, "--fortunes", str(args.fortunes)]
        if "--resume" in extra:
            text_argv.append("--resume")
        train_text_lm_main([*text_argv, *shared])
        text_lm = text_dir / MODEL_DIR
    runs = {}
    for run in RUNS:
        run_argv = ["--shards", str(args.shards), "--steps", str(args.steps)]
        run_argv += ["--out", str(args.out / run), *shared, *extra]
        if run == "twist":
            run_argv += ["--init-from", str(text_lm)]
        train_tts_main(run_argv)
        runs[run] = curves(args.out / run)
    report = {"steps": args.steps, "text_lm": str(text_lm), "flags": [*shared, *extra], **runs}
    (args.out / "compare_init.json").write_text(json.dumps(report, indent=2) + "\n")
    write_csv(args.out / "compare_init.csv", runs)
    print("| step | scratch heldout audio loss | twist heldout audio loss |")
    print("|---|---|---|")
    twist = {r["step"]: r for r in runs["twist"]}
    for record in runs["scratch"]:
        if "heldout_audio_loss" in record:
            other = twist.get(record["step"], {}).get("heldout_audio_loss", float("nan"))
            print(f"| {record['step']} | {record['heldout_audio_loss']:.4f} | {other:.4f} |")
    return runs


if __name__ == "__main__":
    main()
