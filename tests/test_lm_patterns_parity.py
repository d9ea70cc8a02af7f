"""The engine serves every pattern of docs/lm.md like the PyTorch twin: "flatten", "depth" (with
and without per-position projections, with delays), "coarse_first" and hybrid text/speech
layouts. Logits and scores within 1e-4 relative, identical greedy generations (EOS included),
the -1 "no input" marker, batches of ragged prompts equal to each prompt alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import SpeechLM as TwinLM
from speechinfer_training.lm import small_config


def stream(name: str, vocab: int, delay: int = 0, role: str = "audio", **ids: int | None) -> dict:
    specials = {"pad_id": vocab - 3, "eos_id": vocab - 2, "bos_id": vocab - 1} | ids
    return {"name": name, "role": role, "vocab_size": vocab, "delay": delay, **specials}


DEPTH = {
    "d_model": 16,
    "n_layers": 2,
    "n_heads": 2,
    "n_kv_heads": 1,
    "ffn_dim": 40,
    "per_position_proj": True,
}
AUDIO3 = [stream("a0", 30), stream("a1", 21), stream("a2", 12)]

# Hybrid vocabularies of one stream: text ids, then unit ids, then markers and specials.
TEXT_IDS, UNIT_IDS = range(20), range(20, 50)
SPEECH_START = 50  # "text then speech": speech follows this id
TEXT_MARK, SPEECH_MARK = 50, 51  # word-level interleaving: [TEXT] w .. [SPEECH] u ..
TEXT_PAD = 20  # "text beside audio": the text stream's pad while speech goes on

CONFIGS = {
    "flatten-3": small_config(pattern="flatten", streams=AUDIO3),
    "depth-per-position-proj": small_config(pattern="depth", depth=DEPTH, streams=AUDIO3),
    "depth-shared-proj": small_config(
        pattern="depth",
        depth={**DEPTH, "d_model": 24, "n_heads": 4, "n_kv_heads": 2, "per_position_proj": False},
        streams=[stream("a0", 26), stream("a1", 19)],
    ),
    "depth-delays-012": small_config(
        pattern="depth",
        depth=DEPTH,
        streams=[{**s, "delay": d} for s, d in zip(AUDIO3, (0, 1, 2), strict=True)],
    ),
    "coarse-first-3": small_config(pattern="coarse_first", streams=AUDIO3),
    "coarse-first-4-tied-mqa": small_config(
        pattern="coarse_first",
        tie_embeddings=True,
        n_kv_heads=1,
        streams=[*AUDIO3, stream("a3", 15)],
    ),
    "hybrid-text-beside-audio": small_config(
        pattern="delay",
        streams=[
            stream("text", 24, role="text", pad_id=TEXT_PAD, eos_id=21, bos_id=23),
            stream("a0", 30, delay=1),
            stream("a1", 18, delay=2),
        ],
    ),
    "hybrid-text-then-speech": small_config(
        pattern="parallel", streams=[stream("text+units", 54, pad_id=51, eos_id=52, bos_id=53)]
    ),
    "hybrid-word-interleaved": small_config(
        pattern="delay", streams=[stream("interleaved", 55, pad_id=52, eos_id=53, bos_id=54)]
    ),
}
COARSE = [name for name in CONFIGS if name.startswith("coarse")]
# Weight seeds under which 32 greedy frames of the test prompt stay varied and hit no EOS.
LONG_RUN_SEEDS = {
    "flatten-3": 5,
    "depth-per-position-proj": 1,
    "depth-shared-proj": 6,
    "depth-delays-012": 5,
    "coarse-first-3": 7,
    "coarse-first-4-tied-mqa": 4,
    "hybrid-text-beside-audio": 4,
    "hybrid-text-then-speech": 5,
    "hybrid-word-interleaved": 2,
}

FRAMES = 32


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def random_tokens(
    vocabs: list[int], batch: int, length: int, seed: int, no_input: bool = False
) -> np.ndarray:
    """Random ids ``[batch, len(vocabs), length]``; with ``no_input`` about 1 in 6 is -1."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, v, size=(batch, length)) for v in vocabs]
    tokens = np.stack(rows, axis=1).astype(np.int64)
    if no_input:
        tokens[rng.random(tokens.shape) < 1 / 6] = -1
    return tokens


def step_vocabs(twin: TwinLM) -> list[int]:
    """Vocabularies of the rows of the main step grid (stream 0 alone for coarse_first)."""
    return twin.vocab_sizes[: twin.num_step_rows]


def engine_logits(lm: si.SpeechLM, steps: np.ndarray) -> list[np.ndarray]:
    got = lm.logits(steps)
    return got if isinstance(got, list) else [got]  # coarse_first: its one AR tensor


def twin_generate(twin: TwinLM, prompt: np.ndarray, frames: int, **kwargs) -> np.ndarray:
    return twin.generate_greedy(torch.from_numpy(prompt), frames, **kwargs).numpy()


def assert_not_degenerate(grid: np.ndarray, prompt_frames: int) -> None:
    """Guards the test itself: every generated row of random weights holds varied tokens."""
    for b in range(grid.shape[0]):
        for k in range(grid.shape[1]):
            generated = grid[b, k, prompt_frames:]
            assert len(np.unique(generated)) >= 3, (b, k, generated)


@pytest.mark.parametrize("no_input", [False, True], ids=["ids", "with-no-input"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_teacher_forced_logits_match_twin(export_lm, name: str, no_input: bool) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name))
    lm = si.SpeechLM.load(path)
    depth = twin.config["pattern"] == "depth"
    for batch, length in [(1, 2), (3, 13)]:
        steps = random_tokens(step_vocabs(twin), batch, length, seed=batch, no_input=no_input)
        got = engine_logits(lm, steps)
        with torch.no_grad():
            want = [x.numpy() for x in twin(torch.from_numpy(steps))]
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g.dtype == np.float32
            assert g.shape == (batch, length - 1 if depth else length, twin.vocab_sizes[k])
            assert rel_err(g, w) < 1e-4, f"stream {k}"


@pytest.mark.parametrize("no_input", [False, True], ids=["ids", "with-no-input"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_score_matches_twin(export_lm, name: str, no_input: bool) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name) + 1)
    lm = si.SpeechLM.load(path)
    grid = random_tokens(twin.vocab_sizes, 3, 9, seed=7, no_input=no_input)
    got = lm.score(grid)
    want = twin.score(torch.from_numpy(grid)).numpy()
    assert got.dtype == np.float64
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(lm.score(grid[1:2]), got[1:2], rtol=1e-5)


@pytest.mark.parametrize("name", COARSE)
def test_nar_logits_match_twin(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=3)
    lm = si.SpeechLM.load(path)
    for no_input in (False, True):
        grid = random_tokens(twin.vocab_sizes, 2, 7, seed=5, no_input=no_input)
        for stage in range(1, twin.num_streams):
            for prompt_frames in (1, 4, 7):
                got = lm.nar_logits(grid, stage, prompt_frames)
                want = twin.nar_logits(torch.from_numpy(grid), stage, prompt_frames)
                assert got.dtype == np.float32
                assert got.shape == (2, 7, twin.vocab_sizes[stage])
                assert rel_err(got, want.detach().numpy()) < 1e-4, (stage, prompt_frames)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_greedy_generation_matches_twin(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=LONG_RUN_SEEDS[name])
    lm = si.SpeechLM.load(path)
    prompt = random_tokens(twin.vocab_sizes, 3, 4, seed=3)
    got = lm.generate(prompt, max_frames=FRAMES)
    want = twin_generate(twin, prompt, FRAMES)
    assert_not_degenerate(want, 4)
    assert got.dtype == np.int64
    assert got.shape == (3, twin.num_streams, 4 + FRAMES)
    np.testing.assert_array_equal(got[..., :4], prompt)
    np.testing.assert_array_equal(got, want)
    # A single sequence alone equals its row of the batch.
    np.testing.assert_array_equal(lm.generate(prompt[1:2], max_frames=FRAMES), got[1:2])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ragged_prompt_batch_equals_each_alone(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name) + 3)
    lm = si.SpeechLM.load(path)
    prompts = [random_tokens(twin.vocab_sizes, 1, t, seed=t)[0] for t in (2, 5, 3)]
    got = lm.generate(prompts, max_frames=FRAMES)
    assert isinstance(got, list) and len(got) == 3
    for prompt, out in zip(prompts, got, strict=True):
        assert out.shape == (twin.num_streams, prompt.shape[1] + FRAMES)
        np.testing.assert_array_equal(out, lm.generate(prompt[None], max_frames=FRAMES)[0])
        np.testing.assert_array_equal(out, twin_generate(twin, prompt[None], FRAMES)[0])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_input_in_prompts_matches_twin(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name) + 4)
    lm = si.SpeechLM.load(path)
    prompt = random_tokens(twin.vocab_sizes, 3, 5, seed=11, no_input=True)
    prompt[0, -1, -1] = -1  # the last stream's last prompt frame (delayed: lands late)
    got = lm.generate(prompt, max_frames=FRAMES)
    np.testing.assert_array_equal(got[..., :5], prompt)
    np.testing.assert_array_equal(got, twin_generate(twin, prompt, FRAMES))


def biased_to_end(twin: TwinLM, prompt: np.ndarray, frame: int) -> str:
    """Make the end stream's eos win wherever the free-run token of ``frame`` (item 0) would.

    Returns a description of the change. The eos row of the head that predicts the end stream
    becomes 1.05 times the row of that token, so eos beats it by a wide margin where it wins.
    """
    end = twin.config["end_stream"]
    eos = twin.config["streams"][end]["eos_id"]
    free = twin_generate(twin, prompt, frame - prompt.shape[-1] + 1, stop_on_eos=False)
    x = int(free[0, end, frame])
    if twin.depth is not None:
        head = twin.depth.heads[end]
    elif twin.heads is not None:
        head = twin.heads[end]
    else:
        head = twin.embeddings[end]  # tied
    with torch.no_grad():
        head.weight[eos] = 1.05 * head.weight[x]
    return f"eos {eos} follows {x}"


def without_end_ids(config: dict) -> dict:
    """Stream 1 loses its eos_id (pad at t_e), stream 2 its eos and pad ids (generated at t_e,
    bos after)."""
    streams = [dict(s) for s in config["streams"]]
    streams[1]["eos_id"] = None
    if len(streams) > 2:
        streams[2]["eos_id"] = streams[2]["pad_id"] = None
    return {**config, "streams": streams}


EOS_CASES = [(name, False) for name in CONFIGS] + [
    (name, True) for name, config in CONFIGS.items() if len(config["streams"]) > 1
]


@pytest.mark.parametrize(
    ("name", "missing_ids"),
    EOS_CASES,
    ids=[f"{n}-{'missing' if m else 'all'}-ids" for n, m in EOS_CASES],
)
def test_eos_generation_matches_twin(
    export_lm, tmp_path: Path, name: str, missing_ids: bool
) -> None:
    config = without_end_ids(CONFIGS[name]) if missing_ids else CONFIGS[name]
    twin, _ = export_lm(config, seed=len(name) + 5)
    prompt = random_tokens(twin.vocab_sizes, 3, 3, seed=13)
    how = biased_to_end(twin, prompt, frame=9)
    lm = si.SpeechLM.load(save_pretrained(twin, tmp_path / "eos"))
    want = twin_generate(twin, prompt, FRAMES)
    eos = twin.config["streams"][0]["eos_id"]
    assert (want[:, 0, 3:] == eos).any(), f"no sequence ended ({how})"
    np.testing.assert_array_equal(lm.generate(prompt, max_frames=FRAMES), want)
    np.testing.assert_array_equal(lm.generate(prompt[2:], max_frames=FRAMES), want[2:])
    free = lm.generate(prompt, max_frames=FRAMES, stop_on_eos=False)
    np.testing.assert_array_equal(free, twin_generate(twin, prompt, FRAMES, stop_on_eos=False))


def hybrid_prompts(name: str) -> list[np.ndarray]:
    """Prompts ``[K, T]`` shaped like real use of each hybrid layout."""
    if name == "hybrid-text-then-speech":
        texts = [[3, 7, 12, 5], [9, 1], [14, 2, 2, 8, 19, 4]]
        return [np.array([[*t, SPEECH_START]], dtype=np.int64) for t in texts]
    if name == "hybrid-word-interleaved":
        rows = [
            [TEXT_MARK, 3, 7, SPEECH_MARK, 25, 31, 40, TEXT_MARK, 9, SPEECH_MARK],
            [TEXT_MARK, 11, SPEECH_MARK],
            [TEXT_MARK, 4, SPEECH_MARK, 22, 22, 47, TEXT_MARK, 16, 2, SPEECH_MARK, 33],
        ]
        return [np.array([r], dtype=np.int64) for r in rows]
    assert name == "hybrid-text-beside-audio"
    rng = np.random.default_rng(17)
    prompts = []
    for words in ([4, 8, 15], [16], [2, 3, 5, 7]):
        t = len(words) + 2
        text = [*words, TEXT_PAD, TEXT_PAD]
        prompts.append(
            np.stack([text, rng.integers(0, 27, size=t), rng.integers(0, 15, size=t)]).astype(
                np.int64
            )
        )
    return prompts


@pytest.mark.parametrize("name", [n for n in CONFIGS if n.startswith("hybrid")])
def test_hybrid_prompts_generate_like_twin(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name], seed=len(name) + 6)
    lm = si.SpeechLM.load(path)
    prompts = hybrid_prompts(name)
    got = lm.generate(prompts, max_frames=FRAMES)
    for prompt, out in zip(prompts, got, strict=True):
        want = twin_generate(twin, prompt[None], FRAMES)[0]
        np.testing.assert_array_equal(out, want)
    # Equal lengths: one [B, K, T] batch too.
    same = np.stack([p[:, :3] for p in prompts])
    np.testing.assert_array_equal(
        lm.generate(same, max_frames=FRAMES), twin_generate(twin, same, FRAMES)
    )
    score_grid = np.stack([o[:, :8] for o in got])
    np.testing.assert_allclose(
        lm.score(score_grid), twin.score(torch.from_numpy(score_grid)).numpy(), rtol=1e-4
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_properties_per_pattern(export_lm, name: str) -> None:
    twin, path = export_lm(CONFIGS[name])
    lm = si.SpeechLM.load(path)
    assert lm.pattern == twin.config["pattern"]
    assert lm.num_streams == twin.num_streams
    assert lm.vocab_sizes == twin.vocab_sizes
    assert lm.special_ids == twin.special_ids
    assert lm.delays == [s["delay"] for s in twin.config["streams"]]
    prompt = random_tokens(twin.vocab_sizes, 2, 3, seed=0)
    np.testing.assert_array_equal(lm.generate(prompt, max_frames=0), prompt)
