"""The sampler through the engine: every processor of crates/core/src/sampling.rs and both CFG
formulas checked statistically (chi-square of 2000 seeded one-frame draws against the processed
distribution of the engine's own teacher-forced logits), and whole sampled generations replayed
token by token with the documented xoshiro256** stream (column order, then stream order)."""

from __future__ import annotations

import numpy as np
import pytest
import speechinfer as si
from lm_generation_helpers import (
    assert_fits,
    lay_out,
    processed,
    processed_clear_of_boundaries,
    random_grid,
    replay,
    stream,
    total_variation,
)
from speechinfer_training.lm import small_config

DRAWS = 2000
# Three streams of small vocabularies, "parallel": frame t at step t + 1, step 0 all-special.
STAT_CONFIG = small_config(
    pattern="parallel", streams=[stream("a0", 12), stream("a1", 10), stream("a2", 14)]
)
STAT_PROMPT = np.array([[1, 4, 7, 2], [3, 0, 5, 6], [8, 2, 10, 4]], dtype=np.int64)
CFG_PROMPT = np.array([[5, 9], [1, 8], [12, 3]], dtype=np.int64)

# One Sampling (keywords) per stream, or None = greedy; all streams are drawn in one generate.
STAT_CASES: dict[str, list[dict | None]] = {
    "temperature-top_k-top_p": [{"temperature": 0.6}, {"top_k": 4}, {"top_p": 0.6}],
    "min_p-repetition_penalty": [
        {"min_p": 0.12, "temperature": 1.5},
        {"repetition_penalty": 6.0},
        {"repetition_penalty": 3.0, "repetition_window": 2, "temperature": 0.8},
    ],
    "chain-mask-greedy": [
        {"temperature": 1.7, "top_k": 7, "top_p": 0.9, "min_p": 0.05},
        {"temperature": 1.2, "allowed_tokens": [0, 2, 3, 5, 7, 8]},
        None,
    ],
    "cfg-no-prompt": [
        {"cfg_scale": 2.5},
        {"cfg_scale": 1.0, "cfg_formula": "cond_plus", "cfg_top_k": 5},
        {"cfg_scale": 0.5, "temperature": 0.8, "top_k": 6},
    ],
    "cfg-explicit-prompt": [
        {"cfg_scale": 3.0},
        {"cfg_scale": 0.7, "cfg_formula": "cond_plus", "cfg_top_k": 6, "top_p": 0.8},
        None,
    ],
}


def sampling_list(specs: list[dict | None]) -> list[si.Sampling | None]:
    return [None if s is None else si.Sampling(**s) for s in specs]


def last_logits(lm: si.SpeechLM, twin, grid: np.ndarray) -> list[np.ndarray]:
    """Per stream, the teacher-forced logits that predict the frame after ``grid`` [K, T]."""
    return [x[0, -1] for x in lm.logits(lay_out(twin, grid[None]))]


@pytest.mark.parametrize("case", list(STAT_CASES))
def test_one_frame_draws_follow_processed_distribution(export_lm, case: str) -> None:
    twin, path = export_lm(STAT_CONFIG, seed=2)
    lm = si.SpeechLM.load(path)
    specs = STAT_CASES[case]
    explicit = case == "cfg-explicit-prompt"
    kwargs = {"cfg_prompt": np.repeat(CFG_PROMPT[None], DRAWS, 0)} if explicit else {}
    out = lm.generate(
        np.repeat(STAT_PROMPT[None], DRAWS, 0),
        1,
        sampling_list(specs),
        seed=list(range(DRAWS)),
        stop_on_eos=False,
        **kwargs,
    )
    assert out.shape == (DRAWS, 3, 5)
    np.testing.assert_array_equal(out[:, :, :4], np.repeat(STAT_PROMPT[None], DRAWS, 0))
    cond = last_logits(lm, twin, STAT_PROMPT)
    # The unconditional branch: no prompt frames (only the all-special step 0) or CFG_PROMPT.
    no_prompt = [x[0, 0] for x in lm.logits(np.array([twin.special_ids])[..., None])]
    uncond = last_logits(lm, twin, CFG_PROMPT) if explicit else no_prompt
    for k, spec in enumerate(specs):
        tokens = out[:, k, 4]
        raw = processed(cond[k])
        if spec is None:
            assert (tokens == np.argmax(cond[k])).all(), f"greedy stream {k}"
            continue
        history = list(STAT_PROMPT[k])
        want = processed_clear_of_boundaries(cond[k], uncond[k], history, **spec)
        # The test can fail: the processed distribution is far from the raw one (and, for CFG,
        # from the other formula and the other unconditional prompt; for a repetition window,
        # from penalising the whole history).
        others = [raw]
        if "cfg_scale" in spec:
            other = (
                "cond_plus"
                if spec.get("cfg_formula", "uncond_plus") == "uncond_plus"
                else ("uncond_plus")
            )
            others.append(processed(cond[k], uncond[k], history, **{**spec, "cfg_formula": other}))
            if explicit:
                others.append(processed(cond[k], no_prompt[k], history, **spec))
        if spec.get("repetition_window"):
            others.append(processed(cond[k], None, history, **{**spec, "repetition_window": 0}))
        for i, other in enumerate(others):
            assert total_variation(want, other) > 0.05, f"{case} stream {k}: weak test ({i})"
        assert_fits(tokens, want, f"{case} stream {k} {spec}")
        # The same draws do not fit the unprocessed softmax: the statistics can tell.
        with pytest.raises(AssertionError, match=r"chi-square|impossible"):
            assert_fits(tokens, raw)


# Multi-frame generations replayed exactly: (config, per-stream sampling, cfg_prompt frames).
DELAY3 = small_config(streams=[stream("a0", 40), stream("a1", 24, 1), stream("a2", 16, 2)])
REPLAY_CASES = {
    "delay-temperature-1": (DELAY3, [{}, {}, {}], None),
    "delay-filters-greedy-stream": (
        DELAY3,
        [{"temperature": 0.8, "top_k": 10}, None, {"top_p": 0.8, "min_p": 0.02}],
        None,
    ),
    "delay-repetition": (
        DELAY3,
        [{"repetition_penalty": 4.0}, {"repetition_penalty": 2.0, "repetition_window": 3}, {}],
        None,
    ),
    "delay-cfg-sampled": (
        DELAY3,
        [{"cfg_scale": 2.0}, {"cfg_scale": 1.5, "cfg_formula": "cond_plus", "cfg_top_k": 8}, {}],
        None,
    ),
    "delay-cfg-greedy": (DELAY3, [{"cfg_scale": 3.0, "temperature": 0.0}, None, None], None),
    "delay-cfg-prompt-greedy": (
        DELAY3,
        [{"cfg_scale": 3.0, "temperature": 0.0}, {"cfg_scale": 2.0, "temperature": 0.0}, None],
        2,
    ),
    "delay-cfg-prompt-sampled": (DELAY3, [{"cfg_scale": 2.0}, {"cfg_scale": 2.0}, {}], 5),
    "flatten-temperature-1": (
        small_config(pattern="flatten", streams=[stream("a0", 30), stream("a1", 20)]),
        [{}, {"temperature": 1.3, "top_k": 12}],
        None,
    ),
    "flatten-cfg": (
        small_config(pattern="flatten", streams=[stream("a0", 30), stream("a1", 20)]),
        [{"cfg_scale": 2.0}, {"cfg_scale": 2.0, "temperature": 0.0}],
        3,
    ),
}


@pytest.mark.parametrize("case", list(REPLAY_CASES))
def test_generation_replays_with_documented_rng(export_lm, case: str) -> None:
    config, specs, cfg_frames = REPLAY_CASES[case]
    twin, path = export_lm(config, seed=3)
    lm = si.SpeechLM.load(path)
    prompt, frames, seeds = random_grid(twin.vocab_sizes, 3, 3, seed=1), 10, [5, 17, 2**40 + 3]
    kwargs = {}
    if cfg_frames is not None:
        kwargs["cfg_prompt"] = random_grid(twin.vocab_sizes, 3, cfg_frames, seed=9)
    out = lm.generate(prompt, frames, sampling_list(specs), seed=seeds, stop_on_eos=False, **kwargs)
    draws = 0
    for b in range(3):
        cfg_prompt = kwargs["cfg_prompt"][b] if cfg_frames is not None else None
        draws += replay(lm, twin, out[b], 3, specs, seeds[b], cfg_prompt=cfg_prompt)
    sampled = sum(s is not None and s.get("temperature", 1.0) > 0 for s in specs)
    assert draws == 3 * frames * sampled
    # The sampled streams really are random: another seed changes them.
    if sampled:
        again = lm.generate(
            prompt, frames, sampling_list(specs), seed=[6, 18, 1], stop_on_eos=False, **kwargs
        )
        assert not np.array_equal(again, out)


def test_cfg_prompt_of_zero_frames_is_the_default(export_lm) -> None:
    twin, path = export_lm(DELAY3, seed=3)
    lm = si.SpeechLM.load(path)
    prompt = random_grid(twin.vocab_sizes, 2, 4, seed=2)
    guided = si.Sampling(cfg_scale=2.0)
    default = lm.generate(prompt, 8, guided, seed=4, stop_on_eos=False)
    empty = np.zeros((2, 3, 0), dtype=np.int64)
    listed = lm.generate(list(prompt), 8, guided, seed=4, stop_on_eos=False, cfg_prompt=list(empty))
    np.testing.assert_array_equal(np.stack(listed), default)
    # A non-empty unconditional prompt changes the guided result.
    other = lm.generate(prompt, 8, guided, seed=4, stop_on_eos=False, cfg_prompt=prompt[:, :, :2])
    assert not np.array_equal(other, default)
    # The array form of "no prompt frames", [B, K, 0] ("same form as prompt").
    np.testing.assert_array_equal(
        lm.generate(prompt, 8, guided, seed=4, stop_on_eos=False, cfg_prompt=empty), default
    )
