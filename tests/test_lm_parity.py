"""The engine's SpeechLM reproduces the PyTorch twin: logits and scores within 1e-4 relative,
identical greedy generations."""

from __future__ import annotations

import numpy as np
import pytest
import speechinfer as si
import torch
from speechinfer_training.lm import SpeechLM as TwinLM
from speechinfer_training.lm import small_config


def stream(name: str, vocab: int, delay: int = 0, role: str = "audio") -> dict:
    return {
        "name": name,
        "role": role,
        "vocab_size": vocab,
        "pad_id": vocab - 3,
        "bos_id": vocab - 1,
        "eos_id": vocab - 2,
        "delay": delay,
    }


CONFIGS = {
    "gqa-delay-untied": small_config(),
    "mha-parallel-tied-3-streams": small_config(
        n_kv_heads=4,
        tie_embeddings=True,
        pattern="parallel",
        streams=[stream("text", 33, role="text"), stream("a0", 17), stream("a1", 9)],
    ),
    "mqa-uneven-delay": small_config(
        d_model=48,
        n_layers=3,
        n_heads=4,
        n_kv_heads=1,
        ffn_dim=80,
        rope_theta=500.0,
        norm_eps=1e-6,
        streams=[stream("a0", 30), stream("a1", 21, 2), stream("a2", 12, 3)],
    ),
    "gqa-delay-tied-single-stream": small_config(
        n_heads=2, n_kv_heads=1, tie_embeddings=True, streams=[stream("a0", 50, 0)]
    ),
    "default": {},
}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def random_tokens(model: TwinLM, batch: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, v, size=(batch, length)) for v in model.vocab_sizes]
    return np.stack(rows, axis=1).astype(np.int64)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_teacher_forced_logits_match_twin(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name))
    lm = si.SpeechLM.load(path)
    for batch, length in [(1, 1), (3, 13)]:
        steps = random_tokens(twin, batch, length, seed=batch)
        got = lm.logits(steps)
        with torch.no_grad():
            want = [x.numpy() for x in twin(torch.from_numpy(steps))]
        assert len(got) == twin.num_streams
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g.dtype == np.float32
            assert g.shape == (batch, length, twin.vocab_sizes[k])
            assert rel_err(g, w) < 1e-4, f"stream {k}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_score_matches_twin(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name) + 1)
    lm = si.SpeechLM.load(path)
    grid = random_tokens(twin, 3, 9, seed=7)
    got = lm.score(grid)
    want = twin.score(torch.from_numpy(grid)).numpy()
    assert got.dtype == np.float64
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # Each item alone scores the same as in the batch.
    np.testing.assert_allclose(lm.score(grid[1:2]), got[1:2], rtol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_generation_matches_twin(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name) + 2)
    lm = si.SpeechLM.load(path)
    prompt = random_tokens(twin, 2, 4, seed=3)
    frames = 32
    got = lm.generate(prompt, max_frames=frames)
    want = twin.generate_greedy(torch.from_numpy(prompt), frames).numpy()
    assert got.dtype == np.int64
    assert got.shape == (2, twin.num_streams, 4 + frames)
    np.testing.assert_array_equal(got[..., :4], prompt)
    np.testing.assert_array_equal(got, want)
    # Batched and alone agree.
    np.testing.assert_array_equal(lm.generate(prompt[1:], max_frames=frames), got[1:])


def test_properties(export_lm) -> None:
    _, path = export_lm(CONFIGS["mqa-uneven-delay"])
    lm = si.SpeechLM.load(path)
    assert lm.num_streams == 3
    assert lm.vocab_sizes == [30, 21, 12]
    assert lm.pattern == "delay"
    assert lm.delays == [0, 2, 3]
    assert lm.special_ids == [29, 20, 11]
    assert lm.max_context == 256
    assert "SpeechLM(num_streams=3" in repr(lm)
    _, path = export_lm(CONFIGS["mha-parallel-tied-3-streams"])
    lm = si.SpeechLM.load(path)
    assert (lm.pattern, lm.delays) == ("parallel", [0, 0, 0])


def test_generate_zero_frames_returns_prompt(export_lm) -> None:
    twin, path = export_lm(CONFIGS["gqa-delay-untied"])
    prompt = random_tokens(twin, 2, 3, seed=0)
    np.testing.assert_array_equal(si.SpeechLM.load(path).generate(prompt, 0), prompt)
