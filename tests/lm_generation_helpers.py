"""Helpers of the generation tests (test_lm_generation, test_lm_sampling, test_lm_session):
stream configs, laying grids out as steps, the processor chain of crates/core/src/sampling.rs in
numpy, a chi-square goodness-of-fit check and the engine's xoshiro256** RNG."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import chisquare
from speechinfer_training.lm import SpeechLM as TwinLM

MASK64 = (1 << 64) - 1


def stream(name: str, vocab: int, delay: int = 0, role: str = "audio", **ids: int | None) -> dict:
    """A stream config entry: pad, eos, bos are the last three ids unless given."""
    specials = {"pad_id": vocab - 3, "eos_id": vocab - 2, "bos_id": vocab - 1} | ids
    return {"name": name, "role": role, "vocab_size": vocab, "delay": delay, **specials}


def random_grid(vocabs: Sequence[int], batch: int, frames: int, seed: int) -> np.ndarray:
    """Random non-special ids ``[batch, K, frames]`` (the last three ids of each stream avoided)."""
    rng = np.random.default_rng(seed)
    rows = [rng.integers(0, v - 3, size=(batch, frames)) for v in vocabs]
    return np.stack(rows, axis=1).astype(np.int64)


def lay_out(twin: TwinLM, grid: np.ndarray) -> np.ndarray:
    """The step grid ``[B, K, S]`` of a frame grid ``[B, K, T]`` (specials = bos ids)."""
    layout = twin.layout(grid.shape[-1])
    return layout.apply(torch.from_numpy(np.ascontiguousarray(grid)), twin.special_ids).numpy()


def first_steps(twin: TwinLM, frames: int) -> np.ndarray:
    """``[K, frames]``: the step holding frame t of stream k."""
    return twin.layout(frames).first_step.numpy()


def top_k_filter(row: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest entries (ties towards lower ids), others -inf."""
    if k >= len(row):
        return row
    order = np.argsort(-row.astype(np.float64), kind="stable")
    out = np.full_like(row, -np.inf)
    out[order[:k]] = row[order[:k]]
    return out


def cfg_combine(cond: np.ndarray, uncond: np.ndarray, scale: float, formula: str) -> np.ndarray:
    c, u, s = cond.astype(np.float32), uncond.astype(np.float32), np.float32(scale)
    if formula == "uncond_plus":
        return (u + s * (c - u)).astype(np.float32)
    assert formula == "cond_plus"
    return (c + s * (c - u)).astype(np.float32)


def processed(
    cond: np.ndarray,
    uncond: np.ndarray | None = None,
    history: Sequence[int] = (),
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    repetition_window: int = 0,
    cfg_scale: float | None = None,
    cfg_formula: str = "uncond_plus",
    cfg_top_k: int | None = None,
    allowed_tokens: Sequence[int] | None = None,
) -> np.ndarray:
    """The distribution (float64) the engine draws from, written from sampling.rs's docs:
    CFG combine → mask → cfg_top_k → repetition penalty → temperature → top_k → top_p → min_p →
    softmax. Temperature 0 gives the argmax one-hot. The keyword names are ``si.Sampling``'s."""
    row = np.asarray(cond, dtype=np.float32).copy()
    if cfg_scale is not None:
        assert uncond is not None
        row = cfg_combine(row, uncond, cfg_scale, cfg_formula)
    if allowed_tokens is not None:
        keep = np.zeros(len(row), dtype=bool)
        keep[list(allowed_tokens)] = True
        row[~keep] = -np.inf
    if cfg_scale is not None and cfg_top_k is not None:
        row = top_k_filter(row, cfg_top_k)
    if repetition_penalty is not None:
        recent = list(history)[-repetition_window:] if repetition_window else list(history)
        p = np.float32(repetition_penalty)
        for i in sorted(set(recent)):
            row[i] = row[i] / p if row[i] > 0 else row[i] * p
    if temperature == 0:
        out = np.zeros(len(row))
        out[int(np.argmax(row))] = 1.0
        return out
    if temperature != 1.0:
        m = np.float64(row.max())
        row = ((row.astype(np.float64) - m) / np.float64(np.float32(temperature))).astype(
            np.float32
        )
    if top_k is not None:
        row = top_k_filter(row, top_k)
    if top_p is not None and top_p < 1.0:
        w = np.exp(row.astype(np.float64) - np.float64(row.max()))
        w /= w.sum()
        order = np.argsort(-row.astype(np.float64), kind="stable")
        keep = np.zeros(len(row), dtype=bool)
        cum = 0.0
        for i in order:
            keep[i] = True
            cum += w[i]
            if cum >= np.float64(np.float32(top_p)):
                break
        row[~keep] = -np.inf
    if min_p is not None and min_p > 0:
        rel = np.exp(row.astype(np.float64) - np.float64(row.max()))
        row[rel < np.float64(np.float32(min_p))] = -np.inf
    w = np.exp(row.astype(np.float64) - np.float64(row.max()))
    return w / w.sum()


def processed_clear_of_boundaries(*args: Any, **kwargs: Any) -> np.ndarray:
    """``processed``, after checking that nudging the logits by 1e-4 keeps the same support, so
    the tiny differences between cached and teacher-forced logits cannot flip a filter."""
    want = processed(*args, **kwargs)
    rng = np.random.default_rng(0)
    cond, rest = args[0], args[1:]
    for _ in range(4):
        nudged = cond + rng.uniform(-1e-4, 1e-4, size=cond.shape).astype(np.float32)
        assert np.array_equal(processed(nudged, *rest, **kwargs) > 0, want > 0), (
            "test parameters sit on a filter boundary",
            kwargs,
        )
    return want


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def assert_fits(tokens: np.ndarray, probs: np.ndarray, what: str = "") -> float:
    """Chi-square goodness of fit of ``tokens`` to ``probs`` (p > 1e-3): tokens of probability 0
    never appear; bins expecting fewer than 5 draws are merged. Returns the p-value."""
    n = len(tokens)
    counts = np.bincount(tokens, minlength=len(probs))
    assert len(counts) == len(probs), f"{what}: token ids outside the vocabulary"
    impossible = probs == 0
    assert counts[impossible].sum() == 0, (
        f"{what}: drew impossible tokens {np.flatnonzero(impossible & (counts > 0))}"
    )
    expected = probs * n
    big = (expected >= 5) & ~impossible
    f_obs = list(counts[big])
    f_exp = list(expected[big])
    small = ~big & ~impossible
    if small.any():
        f_obs.append(counts[small].sum())
        f_exp.append(expected[small].sum())
    if len(f_obs) < 2:
        assert f_obs[0] == n, what
        return 1.0
    f_exp_arr = np.array(f_exp) * n / np.sum(f_exp)
    p_value = float(chisquare(np.array(f_obs), f_exp_arr).pvalue)
    assert p_value > 1e-3, (
        f"{what}: chi-square p = {p_value:.2e}, counts {counts}, expected {expected.round(1)}"
    )
    return p_value


class Xoshiro:
    """xoshiro256** seeded through SplitMix64, as crates/core/src/rng.rs."""

    def __init__(self, seed: int) -> None:
        state = seed
        self.s = []
        for _ in range(4):
            state = (state + 0x9E3779B97F4A7C15) & MASK64
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & MASK64

    def next_u64(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def next_f64(self) -> float:
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


def inverse_cdf(probs: np.ndarray, u: float, slack: float = 1e-5) -> set[int]:
    """The token(s) an inverse-CDF draw of ``u`` picks: one id, or two when ``u`` lies within
    ``slack`` of a boundary of the cumulative distribution."""
    cum = np.cumsum(probs)
    picks = set()
    for v in (u - slack, u, u + slack):
        v = min(max(v, 0.0), 1.0 - 1e-12)
        i = int(np.searchsorted(cum, v, side="right"))
        i = min(i, len(probs) - 1)
        while probs[i] == 0:  # rounding past the end: the last possible token
            i -= 1
        picks.add(i)
    return picks


def greedy_picks(*args: Any, **kwargs: Any) -> set[int]:
    """The argmax of the processed row, plus any id that wins when the logits move by 1e-4."""
    kwargs = {**kwargs, "temperature": 0.0}
    cond, rest = args[0], args[1:]
    picks = {int(np.argmax(processed(cond, *rest, **kwargs)))}
    rng = np.random.default_rng(1)
    for _ in range(4):
        nudged = cond + rng.uniform(-1e-4, 1e-4, size=cond.shape).astype(np.float32)
        picks.add(int(np.argmax(processed(nudged, *rest, **kwargs))))
    return picks


def end_ids(twin: TwinLM) -> tuple[list[int | None], list[int]]:
    """Per stream: the token of the EOS frame (eos, else pad) and the fill token after it."""
    streams = twin.config["streams"]
    at_end = [s["eos_id"] if s["eos_id"] is not None else s["pad_id"] for s in streams]
    fill = [
        next(i for i in (s["pad_id"], s["eos_id"], s["bos_id"]) if i is not None) for s in streams
    ]
    return at_end, fill


def replay(
    lm: Any,
    twin: TwinLM,
    out: np.ndarray,
    prompt_frames: int,
    specs: Sequence[dict | None],
    seed: int,
    *,
    stop_on_eos: bool = False,
    cfg_prompt: np.ndarray | None = None,
    generated: np.ndarray | None = None,
) -> int:
    """Checks one generated sequence ``out`` ``[K, T + N]`` token by token against docs/lm.md:
    columns in order, streams in order, each to-generate position drawn from the processed
    teacher-forced logits of the column before with one ``next_f64`` of the sequence's own
    xoshiro256** (none for greedy streams), EOS forcing included. ``specs[k]`` holds stream k's
    ``si.Sampling`` keywords (``None`` = greedy). ``generated`` (bool ``[K, T + N]``, sessions)
    marks the positions the engine picked; by default every frame ``>= prompt_frames``.
    Returns the number of draws."""
    k_n, total = out.shape
    t_n = prompt_frames
    steps = lay_out(twin, out[None])
    logits = [x[0] for x in lm.logits(steps)]
    fs = first_steps(twin, total)
    guided = any(s is not None and s.get("cfg_scale") is not None for s in specs)
    if guided:
        uncond_prompt = np.zeros((k_n, 0), np.int64) if cfg_prompt is None else cfg_prompt
        t_u = uncond_prompt.shape[1]
        uncond_grid = np.concatenate([uncond_prompt, out[:, t_n:]], axis=1)
        uncond_logits = [x[0] for x in lm.logits(lay_out(twin, uncond_grid[None]))]
        fs_u = first_steps(twin, uncond_grid.shape[1])
    at_end, fill = end_ids(twin)
    end = twin.config["end_stream"]
    eos = twin.config["streams"][end]["eos_id"]
    frame_at = {(k, int(fs[k, t])): t for k in range(k_n) for t in range(total)}
    rng = Xoshiro(seed)
    t_e = None
    draws = 0
    for s in range(1, steps.shape[-1]):
        if t_e is not None and s > fs[:, t_e].max():
            break
        for k in range(k_n):
            t = frame_at.get((k, s))
            if t is None or (t < t_n if generated is None else not generated[k, t]):
                continue
            token = int(out[k, t])
            where = f"stream {k} frame {t} (step {s})"
            if t_e is not None and t > t_e:
                assert token == fill[k], f"{where}: after EOS expected fill {fill[k]}, got {token}"
                continue
            if t_e is not None and t == t_e and at_end[k] is not None:
                assert token == at_end[k], f"{where}: EOS frame expected {at_end[k]}, got {token}"
                continue
            spec = dict(specs[k]) if specs[k] is not None else {"temperature": 0.0}
            history = [int(x) for x in out[k, :t] if x >= 0]
            uncond = None
            if spec.get("cfg_scale") is not None:
                uncond = uncond_logits[k][fs_u[k, t_u + t - t_n] - 1]
            cond = logits[k][s - 1]
            if spec.get("temperature", 1.0) == 0:
                picks = greedy_picks(cond, uncond, history, **spec)
            else:
                picks = inverse_cdf(processed(cond, uncond, history, **spec), rng.next_f64())
                draws += 1
            assert token in picks, f"{where}: expected one of {sorted(picks)}, got {token}"
            if stop_on_eos and k == end and token == eos and t_e is None:
                t_e = t
    if t_e is not None:
        for k in range(k_n):
            assert (out[k, t_e + 1 :] == fill[k]).all(), f"stream {k} after EOS frame {t_e}"
    return draws
