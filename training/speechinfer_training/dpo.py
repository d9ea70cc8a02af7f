"""Preference alignment with automatic feedback (Align-SLM style DPO) for a TTS pipeline.

``python -m speechinfer_training.dpo --pipeline DIR --corpus MANIFEST --out OUT`` samples
``--candidates`` utterances per training sentence with the Rust engine, asks the ASR judge
(pocketsphinx, :mod:`.asr`) how well each says its sentence, pairs the best with the worst
(:mod:`.preference`), and fine-tunes the pipeline's LM with the DPO loss (Rafailov et al. 2023)
against a frozen copy of itself; it then writes the aligned pipeline to OUT. With
``--heldout N`` it also samples N held-out sentences before and after and reports their WER.

By default only the audio streams are scored: the text is the same for both members of a pair
and is the condition. Under the ``aligned`` layout the *timing* of the text is sampled too, so
``--score-text`` lets the preference move it as well.
"""

import argparse
import copy
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .export import load_pretrained, save_pretrained
from .preference import (
    Candidate,
    best_worst_pairs,
    cached_samples,
    sample_all,
    training_items,
)


def candidate_log_prob(
    model: torch.nn.Module, candidate: Candidate, score_text: bool = False
) -> torch.Tensor:
    """Return the summed log-prob (with grad) of ``candidate``'s frames from ``audio_start`` on.

    The audio streams are scored, and with ``score_text`` the text stream too.
    """
    tokens = torch.from_numpy(candidate.grid)[None]
    first = 0 if score_text else 1
    return model.token_log_probs(tokens)[0, first:, candidate.audio_start :].sum()


def scored_cells(candidate: Candidate, score_text: bool = False) -> int:
    """Return how many cells :func:`candidate_log_prob` sums (``-1`` cells score nothing)."""
    first = 0 if score_text else 1
    return int((candidate.grid[first:, candidate.audio_start :] >= 0).sum())


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the mean DPO loss ``-log sigmoid(margin)`` and the per-pair margins (detached).

    ``margin = beta * ((pol_c - ref_c) - (pol_r - ref_r))``, the implicit reward difference.
    """
    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margin).mean(), margin.detach()


def reference_log_probs(
    reference: torch.nn.Module, pairs: Sequence[tuple[Candidate, Candidate]], score_text: bool
) -> torch.Tensor:
    """``[P, 2]`` log-probs of (chosen, rejected) under the frozen reference."""
    with torch.no_grad():
        return torch.tensor(
            [[candidate_log_prob(reference, c, score_text).item() for c in pair] for pair in pairs],
            dtype=torch.float32,
        ).reshape(len(pairs), 2)


def train_dpo(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    pairs: Sequence[tuple[Candidate, Candidate]],
    args: argparse.Namespace,
) -> list[dict[str, float]]:
    """Run ``args.steps`` DPO steps of ``args.batch`` pairs (epochs in a seeded random order)."""
    if not pairs:
        return []
    ref = reference_log_probs(reference, pairs, args.score_text)
    chosen_cells = torch.tensor([scored_cells(c, args.score_text) for c, _ in pairs]).clamp(min=1)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    order: list[int] = []
    log = []
    for step in range(args.steps):
        batch = []
        while len(batch) < min(args.batch, len(pairs)):
            if not order:
                order = torch.randperm(len(pairs), generator=generator).tolist()
            batch.append(order.pop())
        chosen = torch.stack(
            [candidate_log_prob(policy, pairs[i][0], args.score_text) for i in batch]
        )
        rejected = torch.stack(
            [candidate_log_prob(policy, pairs[i][1], args.score_text) for i in batch]
        )
        loss, margin = dpo_loss(chosen, rejected, ref[batch, 0], ref[batch, 1], args.beta)
        # RPO (Pang et al. 2024): the chosen sample's per-cell NLL keeps its likelihood up.
        nll = -(chosen / chosen_cells[batch]).mean()
        loss = loss + args.nll_weight * nll if args.nll_weight > 0 else loss
        optimizer.zero_grad()
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
        optimizer.step()
        record = {
            "step": step,
            "loss": loss.item(),
            "margin": margin.mean().item(),
            "accuracy": (margin > 0).float().mean().item(),
            "chosen_nll": nll.item(),
        }
        log.append(record)
        if args.print_every and (step + 1) % args.print_every == 0:
            print(json.dumps(record), flush=True)
    return log


def write_pipeline(src: Path, out: Path, model: torch.nn.Module, dtype: str) -> None:
    """Copy pipeline ``src`` to ``out`` with the LM replaced by ``model``."""
    config = json.loads((src / "pipeline.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    lm_dir = out / config["lm"]
    save_pretrained(model, lm_dir, dtype=dtype, tokenizer=src / config["lm"] / "tokenizer.json")


def mean_wer(candidates: Sequence[Sequence[Candidate]]) -> float:
    """Mean WER over every candidate (NaN when there are none)."""
    wers = [c.wer for group in candidates for c in group]
    return float(np.mean(wers)) if wers else float("nan")


def run(args: argparse.Namespace, judge: Any = None) -> dict[str, Any]:
    """Sample, judge, pair, fine-tune and export; return the report."""
    from .corpus import read_manifest

    torch.manual_seed(args.seed)
    import speechinfer as si

    src = Path(args.pipeline)
    voices = si.Pipeline.load(src).voices
    lm_dir = src / json.loads((src / "pipeline.json").read_text())["lm"]
    cache = Path(args.cache) if args.cache else None
    workers = args.workers if judge is None else 1
    items = training_items(read_manifest(args.corpus, split="train"), voices, args.prompts)
    candidates = cached_samples(
        cache, "train", src, items, args.candidates, args.seed, judge, workers
    )
    pairs = best_worst_pairs(candidates, args.min_margin)
    heldout = training_items(read_manifest(args.corpus, split="heldout"), voices, args.heldout)
    # Held-out seeds are offset so they never coincide with a training prompt's.
    heldout_seed = args.seed + 1_000_000
    before = cached_samples(
        cache, "heldout", src, heldout, args.heldout_candidates, heldout_seed, judge, workers
    )

    policy = load_pretrained(lm_dir).float().train()
    reference = copy.deepcopy(policy).eval()
    log = train_dpo(policy, reference, pairs, args)
    out = Path(args.out)
    write_pipeline(src, out, policy.eval(), args.dtype)
    after = sample_all(out, heldout, args.heldout_candidates, heldout_seed, judge, workers)
    return {
        "prompts": len(items),
        "pairs": len(pairs),
        "train_candidate_wer": mean_wer(candidates),
        "chosen_wer": float(np.mean([c.wer for c, _ in pairs])) if pairs else float("nan"),
        "rejected_wer": float(np.mean([r.wer for _, r in pairs])) if pairs else float("nan"),
        "heldout_sentences": len(heldout),
        "heldout_wer_before": mean_wer(before),
        "heldout_wer_after": mean_wer(after),
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
    p.add_argument("--min-margin", type=float, default=0.0,
                   help="pair a prompt only if its WERs differ by more (default 0)")  # fmt: skip
    p.add_argument("--steps", type=int, default=64, help="DPO optimizer steps (default 64)")
    p.add_argument("--batch", type=int, default=1, help="pairs per step (default 1)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO temperature (default 0.1)")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate (default 1e-5)")
    p.add_argument("--nll-weight", type=float, default=0.0,
                   help="weight of the chosen samples' per-cell NLL (RPO; default 0)")  # fmt: skip
    p.add_argument("--grad-clip", type=float, default=1.0, help="0 = off (default 1.0)")
    p.add_argument("--score-text", action="store_true",
                   help="score the sampled text frames too (aligned layout: timing)")  # fmt: skip
    p.add_argument("--heldout", type=int, default=0,
                   help="held-out sentences to sample before and after (default 0)")  # fmt: skip
    p.add_argument("--heldout-candidates", type=int, default=2, help="samples each (default 2)")
    p.add_argument("--workers", type=int, default=1, help="sampling processes (default 1)")
    p.add_argument("--cache", help="directory keeping sampled candidates between runs")
    p.add_argument("--print-every", type=int, default=0, help="print every N steps (0 = never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    args = p.parse_args(argv)
    if min(args.prompts, args.candidates, args.batch, args.workers) < 1 or args.steps < 0:
        p.error("prompts, candidates, batch and workers must be >= 1, steps >= 0")
    if args.heldout < 0 or args.heldout_candidates < 1:
        p.error("heldout must be >= 0 and heldout-candidates >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run DPO from the command line; print the report's summary."""
    args = parse_args(argv)
    report = run(args)
    (Path(args.out) / "dpo_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "log"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
