"""Compare TTS pipelines by ASR WER on the same held-out sentences, paired per sentence.

``python -m speechinfer_training.compare_pipelines --corpus MANIFEST --pipelines A B ...``
samples ``--samples`` utterances of each of ``--sentences`` held-out sentences (voices in turn)
with every pipeline, under the same seeds, judges them with pocketsphinx and prints each
pipeline's mean WER (overall and per voice) and its per-sentence paired difference to the first
pipeline with the standard error. Sentence difficulty is shared by all pipelines, so the paired
difference is far less noisy than two independent means (a 16-sentence table moves by ~0.05
from one sample to the next).
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import read_manifest
from .preference import cached_samples, pipeline_fingerprint, training_items

SEED = 2_000_000


def paired_difference(wers: np.ndarray, baseline: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the per-sentence difference of two ``[sentences, samples]``."""
    diff = wers.mean(axis=1) - baseline.mean(axis=1)
    if len(diff) < 2:
        return float(diff.mean()) if len(diff) else float("nan"), float("nan")
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Sample and judge every pipeline; return the report."""
    import speechinfer as si

    pipelines = [Path(p) for p in args.pipelines]
    voices = si.Pipeline.load(pipelines[0]).voices
    items = training_items(read_manifest(args.corpus, split="heldout"), voices, args.sentences)
    cache = Path(args.cache) if args.cache else None
    report: dict[str, Any] = {"sentences": len(items), "samples": args.samples, "pipelines": {}}
    baseline = None
    for pipeline in pipelines:
        name = f"heldout_{pipeline_fingerprint(pipeline)[:16]}"  # same files, same samples
        groups = cached_samples(
            cache, name, pipeline, items, args.samples, SEED, None, args.workers
        )
        wers = np.array([[c.wer for c in group] for group in groups])
        baseline = wers if baseline is None else baseline
        by_voice = {v: float(wers[[i for i, it in enumerate(items) if it[1] == v]].mean())
                    for v in sorted({voice for _, voice in items})}  # fmt: skip
        diff, stderr = paired_difference(wers, baseline)
        report["pipelines"][str(pipeline)] = {
            "wer": float(wers.mean()),
            "by_voice": by_voice,
            "minus_first": diff,
            "minus_first_stderr": stderr,
        }
        print(json.dumps({str(pipeline): report["pipelines"][str(pipeline)]}), flush=True)
    return report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="manifest.jsonl (its held-out split is used)")
    p.add_argument("--pipelines", nargs="+", required=True, help="pipeline directories")
    p.add_argument("--sentences", type=int, default=140, help="held-out sentences (default 140)")
    p.add_argument("--samples", type=int, default=2, help="samples per sentence (default 2)")
    p.add_argument("--workers", type=int, default=1, help="sampling processes (default 1)")
    p.add_argument("--cache", help="directory keeping the samples between runs")
    p.add_argument("--out", help="write the report here (JSON)")
    args = p.parse_args(argv)
    if min(args.sentences, args.samples, args.workers) < 1:
        p.error("sentences, samples and workers must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison from the command line."""
    args = parse_args(argv)
    report = compare(args)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
