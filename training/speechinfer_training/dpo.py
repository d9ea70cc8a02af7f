"""Preference alignment with automatic feedback (Align-SLM style DPO) for a TTS pipeline.

``python -m speechinfer_training.dpo --pipeline DIR --corpus MANIFEST --out OUT`` samples
``--candidates`` utterances per training sentence with the Rust engine, asks the ASR judge
(pocketsphinx, :mod:`.asr`) how well each says its sentence, pairs the best with the worst, and
fine-tunes the pipeline's LM with the DPO loss (Rafailov et al. 2023) against a frozen copy of
itself; it then writes the aligned pipeline to OUT and reports held-out WER before and after.

Only the audio streams are scored: the text is the same for both members of a pair and is the
condition, not the choice (under the ``aligned`` layout its timing is the model's too, but the
judge speaks to what was said).
"""

import argparse
import copy
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .export import load_pretrained, save_pretrained


@dataclass
class Candidate:
    """One sampled utterance: its full frame grid ``[K, T]`` and the judge's verdict."""

    grid: np.ndarray
    audio_start: int
    wer: float


def sample_candidates(
    pipe: Any, text: str, voice: str, count: int, seed: int, judge: Any
) -> list[Candidate]:
    """Sample ``count`` utterances of ``text`` with the engine and judge their WER against it."""
    start = pipe.audio_start(text, voice)
    out = []
    for grid in pipe.generate_grids(text, voice, [seed * 1000 + i for i in range(count)]):
        codes = pipe.audio_codes(grid[None, :, start:])
        wave = pipe.codec.decode(codes)[0] if codes.shape[-1] else np.zeros(1, np.float32)
        hyp = judge.transcribe(np.asarray(wave).reshape(-1), pipe.sample_rate)
        out.append(Candidate(grid, start, judge.wer(text, hyp)))
    return out


def audio_log_prob(model: torch.nn.Module, grid: np.ndarray, start: int) -> torch.Tensor:
    """Return the summed log-prob of the audio frames ``>= start`` of ``grid`` (with grad)."""
    tokens = torch.from_numpy(grid)[None]
    return model.token_log_probs(tokens)[0, 1:, start:].sum()


def dpo_loss(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    chosen: Candidate,
    rejected: Candidate,
    beta: float,
) -> torch.Tensor:
    """Return ``-log sigmoid(beta * ((pol_c - ref_c) - (pol_r - ref_r)))`` for one pair."""
    with torch.no_grad():
        ref_c = audio_log_prob(reference, chosen.grid, chosen.audio_start)
        ref_r = audio_log_prob(reference, rejected.grid, rejected.audio_start)
    pol_c = audio_log_prob(policy, chosen.grid, chosen.audio_start)
    pol_r = audio_log_prob(policy, rejected.grid, rejected.audio_start)
    return -F.logsigmoid(beta * ((pol_c - ref_c) - (pol_r - ref_r)))


def build_pairs(
    pipe: Any,
    items: Sequence[tuple[str, str]],
    candidates: int,
    seed: int,
    judge: Any,
) -> tuple[list[tuple[Candidate, Candidate]], float]:
    """Return best-vs-worst pairs (ties skipped) and the mean WER of all candidates."""
    pairs, wers = [], []
    for i, (text, voice) in enumerate(items):
        cands = sample_candidates(pipe, text, voice, candidates, seed + i, judge)
        wers += [c.wer for c in cands]
        best = min(cands, key=lambda c: c.wer)
        worst = max(cands, key=lambda c: c.wer)
        if worst.wer > best.wer:
            pairs.append((best, worst))
    return pairs, float(np.mean(wers)) if wers else float("nan")


def write_pipeline(src: Path, out: Path, model: torch.nn.Module, dtype: str) -> None:
    """Copy pipeline ``src`` to ``out`` with the LM replaced by ``model``."""
    config = json.loads((src / "pipeline.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    lm_dir = out / config["lm"]
    save_pretrained(model, lm_dir, dtype=dtype, tokenizer=src / config["lm"] / "tokenizer.json")


def run(args: argparse.Namespace, judge: Any) -> dict[str, Any]:
    """Sample, judge, pair, fine-tune and export; return the report."""
    from .corpus import read_manifest

    torch.manual_seed(args.seed)
    import speechinfer as si

    src = Path(args.pipeline)
    pipe = si.Pipeline.load(src)
    voices = pipe.voices
    lm_dir = src / json.loads((src / "pipeline.json").read_text())["lm"]
    rows = read_manifest(args.corpus, split="train")
    seen, items = set(), []
    for row in rows:
        if row["text"] not in seen and row["voice"] in voices:
            seen.add(row["text"])
            items.append((row["text"], row["voice"]))
    items = items[: args.prompts]
    pairs, before = build_pairs(pipe, items, args.candidates, args.seed, judge)
    policy = load_pretrained(lm_dir).float().train()
    reference = copy.deepcopy(policy).eval()
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.lr)
    log = []
    for step in range(args.steps if pairs else 0):
        chosen, rejected = pairs[step % len(pairs)]
        loss = dpo_loss(policy, reference, chosen, rejected, args.beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append({"step": step, "loss": loss.item()})
    out = Path(args.out)
    write_pipeline(src, out, policy.eval(), args.dtype)
    return {
        "pairs": len(pairs),
        "train_candidate_wer": before,
        "steps": len(log),
        "final_loss": log[-1]["loss"] if log else None,
        "log": log,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", required=True, help="pipeline directory to align (docs/tts.md)")
    p.add_argument("--corpus", required=True, help="manifest.jsonl of the corpus (train split)")
    p.add_argument("--out", required=True, help="where to write the aligned pipeline")
    p.add_argument("--prompts", type=int, default=32, help="training sentences (default 32)")
    p.add_argument("--candidates", type=int, default=4, help="samples per sentence (default 4)")
    p.add_argument("--steps", type=int, default=64, help="DPO optimizer steps (default 64)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO temperature (default 0.1)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate (default 1e-5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run DPO from the command line; print the report's summary."""
    args = parse_args(argv)
    from . import asr

    report = run(args, asr)
    (Path(args.out) / "dpo_report.json").write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "log"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
