"""The PyTorch LM twin alone: patterns against the verified grids, config, score, generation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from speechinfer_training import patterns as P
from speechinfer_training.export import load_pretrained, save_pretrained
from speechinfer_training.lm import DEFAULT_CONFIG, SpeechLM, resolve_lm_config, small_config
from speechinfer_training.registry import registered_model_types

# Every grid of reference/patterns.md (K = 3, T = 4): S = special, n = frame n - 1.
GRIDS = {
    P.Delay((0, 1, 2)): """
        S  1  2  3  4  S  S
        S  S  1  2  3  4  S
        S  S  S  1  2  3  4""",
    P.Parallel(): """
        S  1  2  3  4
        S  1  2  3  4
        S  1  2  3  4""",
    P.Delay((0, 2, 3)): """
        S  1  2  3  4  S  S  S
        S  S  S  1  2  3  4  S
        S  S  S  S  1  2  3  4""",
    P.Delay((0, 1, 2), flatten_first=1): """
        S  1  S  S  2  3  4  S  S
        S  S  1  S  S  2  3  4  S
        S  S  S  1  S  S  2  3  4""",
    P.flatten(3): """
        S  1  S  S  2  S  S  3  S  S  4  S  S
        S  S  1  S  S  2  S  S  3  S  S  4  S
        S  S  S  1  S  S  2  S  S  3  S  S  4""",
    P.Unroll((0, 1, 1)): """
        S  1  S  2  S  3  S  4  S
        S  S  1  S  2  S  3  S  4
        S  S  1  S  2  S  3  S  4""",
    P.CoarseFirst(): """
        S  1  2  3  4  S  S  S  S
        S  S  S  S  S  1  2  3  4
        S  S  S  S  S  1  2  3  4""",
}


def parse(text: str) -> list[list[int]]:
    return [
        [-1 if c == "S" else int(c) - 1 for c in line.split()] for line in text.strip().splitlines()
    ]


@pytest.mark.parametrize("kind", list(GRIDS), ids=str)
def test_patterns_match_verified_grids(kind: P.PatternKind) -> None:
    layout = P.Layout(kind, 3, 4)
    assert layout.indices.tolist() == parse(GRIDS[kind])


def random_kind(rng: random.Random, k_n: int) -> P.PatternKind:
    choice = rng.randrange(4)
    if choice == 0:
        return P.Parallel()
    if choice == 1:
        return P.CoarseFirst()
    if choice == 2:
        flattening = [0]
        for _ in range(k_n - 1):
            flattening.append(flattening[-1] + rng.randrange(2))
        return P.Unroll(tuple(flattening))
    delays = tuple(rng.randrange(6) for _ in range(k_n))
    return P.Delay(delays, rng.randrange(4) if rng.randrange(3) == 0 else 0)


def test_pattern_properties() -> None:
    rng = random.Random(0)
    for _ in range(300):
        k_n, t_n = rng.randint(1, 6), rng.randint(1, 12)
        kind = random_kind(rng, k_n)
        layout = P.Layout(kind, k_n, t_n)
        grid = torch.randint(0, 1000, (2, k_n, t_n))
        special = [5000 + k for k in range(k_n)]
        steps = layout.apply(grid, special)
        assert steps.shape == (2, k_n, layout.num_steps)
        assert torch.equal(layout.revert(steps), grid), kind
        assert (steps[..., 0] >= 5000).all()
        assert int((layout.indices >= 0).sum()) == k_n * t_n
        if isinstance(kind, P.Delay) and kind.flatten_first == 0:
            assert layout.num_steps == t_n + max(kind.delays) + 1


def test_config_defaults_and_validation() -> None:
    model = SpeechLM({})
    assert model.config == DEFAULT_CONFIG
    assert model.num_streams == 4
    assert "speechinfer-lm" in registered_model_types()
    assert model.pattern_kind == P.Delay((0, 1, 2, 3))
    bad = [
        ({"n_kv_heads": 3}, "must divide"),
        ({"n_heads": 6}, "even head_dim"),
        ({"pattern": "flat"}, "pattern must be one of"),
        ({"colour": 1}, "unknown config keys"),
        ({"streams": []}, "non-empty"),
        ({"pattern": "parallel"}, "needs pattern 'delay'"),
        ({"streams": [{**DEFAULT_CONFIG["streams"][0], "bos_id": None}]}, "bos_id must be set"),
        ({"streams": [{**DEFAULT_CONFIG["streams"][0], "eos_id": 2000}]}, "outside"),
        ({"streams": [{"name": "x"}]}, "missing keys"),
    ]
    for config, message in bad:
        with pytest.raises(ValueError, match=message):
            resolve_lm_config(config)


def test_export_round_trip(tmp_path: Path) -> None:
    for tie in (False, True):
        torch.manual_seed(0)
        model = SpeechLM(small_config(tie_embeddings=tie)).eval()
        names = set(model.export_state_dict())
        assert ("heads.0.weight" in names) != tie
        assert "layers.1.attn.k_proj.weight" in names
        assert model.export_state_dict()["layers.0.attn.k_proj.weight"].shape == (16, 32)
        path = save_pretrained(model, tmp_path / f"lm{tie}")
        loaded = load_pretrained(path)
        steps = torch.randint(0, 20, (2, 2, 6))
        for a, b in zip(model(steps), loaded(steps), strict=True):
            torch.testing.assert_close(a, b)


def test_forward_is_causal() -> None:
    torch.manual_seed(1)
    model = SpeechLM(small_config()).eval()
    steps = torch.randint(0, 20, (1, 2, 8))
    changed = steps.clone()
    changed[:, :, 5:] = (changed[:, :, 5:] + 1) % 20
    with torch.no_grad():
        for a, b in zip(model(steps), model(changed), strict=True):
            torch.testing.assert_close(a[:, :5], b[:, :5])
            assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_score_is_the_sum_of_next_step_log_probs() -> None:
    torch.manual_seed(2)
    model = SpeechLM(small_config()).eval()
    grid = torch.randint(0, 20, (2, 2, 5))
    layout = model.layout(5)
    steps = layout.apply(grid, model.special_ids)
    with torch.no_grad():
        logits = model(steps[..., :-1])
    want = torch.zeros(2, dtype=torch.float64)
    for k in range(2):
        for t in range(1, 5):
            s = int(layout.first_step[k, t])
            lp = logits[k][:, s - 1].double().log_softmax(-1)
            want += lp[torch.arange(2), grid[:, k, t]]
    got = model.score(grid)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)


def test_generate_greedy_keeps_the_prompt_and_follows_argmax() -> None:
    torch.manual_seed(3)
    model = SpeechLM(small_config()).eval()
    prompt = torch.randint(0, 20, (2, 2, 3))
    out = model.generate_greedy(prompt, 5)
    assert out.shape == (2, 2, 8)
    assert torch.equal(out[..., :3], prompt)
    # Teacher forcing the result reproduces it: every generated token is the argmax.
    layout = model.layout(8)
    steps = layout.apply(out, model.special_ids)
    with torch.no_grad():
        logits = model(steps[..., :-1])
    for k in range(2):
        for t in range(3, 8):
            s = int(layout.first_step[k, t])
            assert torch.equal(logits[k][:, s - 1].argmax(-1), out[:, k, t])
