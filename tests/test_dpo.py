"""DPO pieces without the engine: prompt choice, pairing, the candidate cache and the loss.

The whole stage (engine sampling, pocketsphinx judge, export) runs in
``tests/test_pipeline_miniature.py``.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from speechinfer_training import compare_pipelines, dpo
from speechinfer_training import tts_data as td
from speechinfer_training.lm import SpeechLM
from speechinfer_training.preference import (
    Candidate,
    best_worst_pairs,
    load_candidates,
    save_candidates,
    training_items,
)

SIZES = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64}


def test_training_items_take_voices_in_turn() -> None:
    rows = [{"text": t, "voice": v} for t in "ABCDE" for v in ("x", "y", "z")]
    rows = [r for r in rows if not (r["text"] == "B" and r["voice"] == "y")]
    rows.append({"text": "F", "voice": "other"})  # no pipeline voice reads it
    items = training_items(rows, ["x", "y"], 10)
    assert items == [("A", "x"), ("B", "x"), ("C", "x"), ("D", "y"), ("E", "x")]
    assert training_items(rows, ["y", "x"], 2) == [("A", "y"), ("B", "x")]


def candidate(wer: float, fill: int = 0) -> Candidate:
    return Candidate(np.full((3, 4), fill, dtype=np.int64), 1, wer)


def test_best_worst_pairs_skip_ties_and_small_margins() -> None:
    groups = [
        [candidate(0.5), candidate(0.1), candidate(0.9)],
        [candidate(0.3), candidate(0.3)],
        [candidate(0.2), candidate(0.25)],
        [],
    ]
    pairs = best_worst_pairs(groups)
    assert [(c.wer, r.wer) for c, r in pairs] == [(0.1, 0.9), (0.2, 0.25)]
    assert [(c.wer, r.wer) for c, r in best_worst_pairs(groups, 0.1)] == [(0.1, 0.9)]


def test_candidate_cache_round_trip_and_key(tmp_path: Path) -> None:
    groups = [[candidate(0.5, 3), candidate(0.0, 7)], [candidate(1.0, 9)]]
    path = tmp_path / "cache" / "train.npz"
    key = {"pipeline": "abc", "items": [["t", "v"]], "count": 2, "seed": 0}
    save_candidates(path, key, groups)
    back = load_candidates(path, key)
    assert back is not None
    assert [[(c.grid.tolist(), c.audio_start, c.wer) for c in g] for g in back] == [
        [(c.grid.tolist(), c.audio_start, c.wer) for c in g] for g in groups
    ]
    assert load_candidates(path, {**key, "seed": 1}) is None  # other settings: sample again
    assert load_candidates(tmp_path / "missing.npz", key) is None


def test_dpo_loss_is_log_two_at_the_reference_and_falls_with_the_margin() -> None:
    zero = torch.zeros(3)
    loss, margin = dpo.dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2.0)) and margin.tolist() == [0.0] * 3
    chosen_up = torch.tensor([5.0, 5.0, 5.0])
    loss, margin = dpo.dpo_loss(chosen_up, zero, zero, zero, beta=0.5)
    assert margin.tolist() == [2.5] * 3
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-2.5))))


def tiny_tts_lm() -> SpeechLM:
    torch.manual_seed(0)
    return SpeechLM(td.tts_lm_config(["a", "b"], 16, 2, **SIZES)).train()


def random_candidate(seed: int, wer: float) -> Candidate:
    generator = np.random.default_rng(seed)
    grid = td.utterance_grid(0, [7, 8], generator.integers(0, 16, (2, 6)), 16).numpy()
    return Candidate(grid, 4, wer)


def test_train_dpo_raises_chosen_over_rejected() -> None:
    policy = tiny_tts_lm()
    reference = copy.deepcopy(policy).eval()
    pairs = [(random_candidate(2 * i, 0.0), random_candidate(2 * i + 1, 1.0)) for i in range(3)]
    args = argparse.Namespace(
        steps=20, batch=2, lr=3e-3, beta=0.1, grad_clip=1.0, seed=0, score_text=False,
        print_every=0, nll_weight=0.0,
    )  # fmt: skip
    log = dpo.train_dpo(policy, reference, pairs, args)
    assert len(log) == 20 and log[0]["loss"] == pytest.approx(math.log(2.0), abs=1e-6)
    assert log[-1]["loss"] < 0.5 * log[0]["loss"] and log[-1]["accuracy"] == 1.0

    def gap(model: torch.nn.Module, score_text: bool = False) -> float:
        with torch.no_grad():
            return sum(
                (
                    dpo.candidate_log_prob(model, c, score_text)
                    - dpo.candidate_log_prob(model, r, score_text)
                ).item()
                for c, r in pairs
            )

    assert gap(policy) > gap(reference) + 1.0
    # Scoring the text stream adds its cells (pad after the prompt; each has a log-prob < 0).
    assert (
        dpo.candidate_log_prob(policy, pairs[0][0], True).item()
        < dpo.candidate_log_prob(policy, pairs[0][0]).item() - 1e-3
    )
    assert dpo.train_dpo(policy, reference, [], args) == []


def test_cli_rejects_bad_counts() -> None:
    base = ["--pipeline", "p", "--corpus", "c", "--out", "o"]
    for bad in (["--batch", "0"], ["--workers", "0"], ["--heldout", "-1"], ["--steps", "-1"]):
        with pytest.raises(SystemExit):
            dpo.parse_args(base + bad)
    assert dpo.parse_args(base).batch == 1


def test_nll_weight_raises_the_chosen_likelihood() -> None:
    pairs = [(random_candidate(2 * i, 0.0), random_candidate(2 * i + 1, 1.0)) for i in range(3)]
    cells = dpo.scored_cells(pairs[0][0])
    assert cells == 2 * 6 + 2  # two codebooks, six frames and the EOS frame
    assert dpo.scored_cells(pairs[0][0], score_text=True) == cells + 7

    def chosen_nll(nll_weight: float) -> float:
        policy = tiny_tts_lm()
        args = argparse.Namespace(
            steps=10, batch=3, lr=3e-3, beta=0.1, grad_clip=1.0, seed=0, score_text=False,
            print_every=0, nll_weight=nll_weight,
        )  # fmt: skip
        log = dpo.train_dpo(policy, copy.deepcopy(policy).eval(), pairs, args)
        return log[-1]["chosen_nll"]

    assert chosen_nll(1.0) < chosen_nll(0.0)


def test_paired_difference_cancels_sentence_difficulty() -> None:
    baseline = np.array([[0.0, 0.2], [0.8, 1.0], [0.4, 0.4]])
    better = baseline - 0.1  # every sentence 0.1 better: no spread at all
    mean, stderr = compare_pipelines.paired_difference(better, baseline)
    assert mean == pytest.approx(-0.1) and stderr == pytest.approx(0.0, abs=1e-12)
    noisy = baseline + np.array([[0.1], [-0.1], [0.3]])
    mean, stderr = compare_pipelines.paired_difference(noisy, baseline)
    assert mean == pytest.approx(0.1) and stderr == pytest.approx(0.2 / np.sqrt(3))
    assert np.isnan(compare_pipelines.paired_difference(baseline[:1], baseline[:1])[1])
