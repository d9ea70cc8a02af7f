"""SpeechLM.session end to end: forced frames feed exactly the teacher-forced step grid, full
duplex (forced user streams, picked system streams), the -1 / -2 markers, flush / reset, bad
frames and the context limit (docs/lm.md, "Token markers" and "Generation, sessions and EOS")."""

from __future__ import annotations

import numpy as np
import pytest
import speechinfer as si
import torch
from lm_generation_helpers import first_steps, lay_out, random_grid, replay, stream
from speechinfer_training.lm import small_config

DELAY3 = small_config(streams=[stream("a0", 40), stream("a1", 24, 1), stream("a2", 16, 2)])
PATTERNS = {
    "delay-012": DELAY3,
    "parallel": small_config(pattern="parallel", streams=[stream("a0", 30), stream("a1", 20)]),
    "flatten": small_config(pattern="flatten", streams=[stream("a0", 30), stream("a1", 20)]),
}
# Full duplex: streams 0-1 the system's (picked), 2-3 the user's (forced frame by frame).
DUPLEX = small_config(
    streams=[
        stream("sys_text", 32, 0, role="text"),
        stream("sys_audio", 24, 1),
        stream("user_text", 28, 0, role="text"),
        stream("user_audio", 20, 1),
    ]
)


def load(export_lm, config: dict, seed: int = 0):
    twin, path = export_lm(config, seed=seed)
    return twin, si.SpeechLM.load(path)


def last_fed_column(twin, t: int) -> int:
    """After session call t, every column holding only frames <= t has been fed."""
    return int(first_steps(twin, t + 2)[:, t + 1].min()) - 1


def run_session(sess: si.Session, frames: np.ndarray, logits: list | None = None) -> np.ndarray:
    """Steps through frames ``[B, K, T]``, flushes, returns every returned frame joined."""
    out = []
    for t in range(frames.shape[-1]):
        out.append(sess.step(frames[:, :, t]))
        if logits is not None:
            logits.append(sess.logits)
    out.append(sess.flush())
    return np.concatenate(out, axis=-1)


@pytest.mark.parametrize("name", list(PATTERNS))
def test_forced_session_feeds_the_teacher_forced_grid(export_lm, name: str) -> None:
    twin, lm = load(export_lm, PATTERNS[name], seed=1)
    k_n, t_n = twin.num_streams, 7
    grid = random_grid(twin.vocab_sizes, 2, t_n, seed=2)
    # One extra frame so that the columns fed after the last call all exist.
    want = lm.logits(lay_out(twin, np.concatenate([grid, grid[:, :, :1]], axis=-1)))
    sess = lm.session(2)
    assert sess.batch_size == 2 and sess.frames == 0 and sess.logits == []
    max_delay = max(s["delay"] for s in twin.config["streams"])
    chunks = []
    for t in range(t_n):
        chunk = sess.step(grid[:, :, t])
        assert chunk.dtype == np.int64 and chunk.shape[:2] == (2, k_n)
        # "delay": frame t - max(delay) completes with call t; the others: frame t.
        assert chunk.shape[2] == (1 if t >= max_delay else 0), t
        chunks.append(chunk)
        assert sess.frames == t + 1
        got = sess.logits
        assert len(got) == k_n
        c = last_fed_column(twin, t)
        for k in range(k_n):
            assert got[k].dtype == np.float32 and got[k].shape == (2, twin.vocab_sizes[k])
            np.testing.assert_allclose(got[k], want[k][:, c], rtol=1e-5, atol=1e-5)
    rest = sess.flush()
    assert rest.shape == (2, k_n, max_delay)
    np.testing.assert_array_equal(np.concatenate([*chunks, rest], axis=-1), grid)


@pytest.mark.parametrize("sampling", [None, "sampled"])
def test_session_of_prompt_then_picks_equals_generate(export_lm, sampling) -> None:
    twin, lm = load(export_lm, DELAY3, seed=2)
    sampling = si.Sampling(temperature=1.1, top_k=20) if sampling else None
    prompt, n = random_grid(twin.vocab_sizes, 3, 3, seed=3), 8
    want = lm.generate(prompt, n, sampling, seed=[4, 5, 6], stop_on_eos=False)
    frames = np.concatenate([prompt, np.full((3, 3, n), si.SAMPLE)], axis=-1)
    got = run_session(lm.session(3, sampling, seed=[4, 5, 6]), frames)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sampling", [None, "sampled"])
def test_full_duplex(export_lm, sampling) -> None:
    twin, lm = load(export_lm, DUPLEX, seed=3)
    specs = [None] * 4 if sampling is None else [{"temperature": 0.9}, {}, None, None]
    samplings = [None if s is None else si.Sampling(**s) for s in specs]
    t_n, seeds = 10, [7, 8]
    user = random_grid(twin.vocab_sizes, 2, t_n, seed=4)[:, 2:]
    frames = np.full((2, 4, t_n), si.SAMPLE, dtype=np.int64)
    frames[:, 2:] = user
    logits: list = []
    got = run_session(lm.session(2, samplings, seed=seeds), frames, logits)
    assert got.shape == (2, 4, t_n)
    np.testing.assert_array_equal(got[:, 2:], user)  # forced tokens come back unchanged
    for k in (0, 1):
        assert ((got[:, k] >= 0) & (got[:, k] < twin.vocab_sizes[k])).all()
    generated = np.zeros((4, t_n), dtype=bool)
    generated[:2] = True
    for b in range(2):
        # Each system token is drawn (or argmax-ed) from the teacher-forced logits of the
        # column before it, in column then stream order, with the sequence's own RNG.
        replay(lm, twin, got[b], 0, specs, seeds[b], generated=generated)
    # The logits after each call are those of the finished grid's column t + 1.
    want = lm.logits(lay_out(twin, got))
    for t, rows in enumerate(logits):
        for k in range(4):
            np.testing.assert_allclose(rows[k], want[k][:, t + 1], rtol=1e-5, atol=1e-5)
    # Deterministic per seed; another seed picks other sampled tokens.
    again = run_session(lm.session(2, samplings, seed=seeds), frames)
    np.testing.assert_array_equal(again, got)
    if sampling is not None:
        other = run_session(lm.session(2, samplings, seed=[9, 10]), frames)
        assert not np.array_equal(other[:, :2], got[:, :2])
        np.testing.assert_array_equal(other[:, 2:], user)


def test_no_input_is_a_zero_embedding(export_lm) -> None:
    twin, lm = load(export_lm, DELAY3, seed=4)
    grid = random_grid(twin.vocab_sizes, 2, 6, seed=5)
    grid[0, 1, 2] = grid[1, 0, 4] = grid[1, 2, 0] = grid[0, 0, 5] = si.NO_INPUT
    logits: list = []
    got = run_session(lm.session(2), grid, logits)
    np.testing.assert_array_equal(got, grid)  # -1 positions come back as -1
    steps = lay_out(twin, np.concatenate([grid, grid[:, :, :1]], axis=-1))
    with torch.no_grad():
        twin_logits = [x.numpy() for x in twin(torch.from_numpy(steps))]
    engine_logits = lm.logits(steps)
    for t, rows in enumerate(logits):
        c = last_fed_column(twin, t)
        for k in range(3):
            np.testing.assert_allclose(rows[k], engine_logits[k][:, c], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(rows[k], twin_logits[k][:, c], rtol=1e-4, atol=1e-4)
    # -1 is not some real token: forcing any id there changes the logits.
    for token in (0, twin.special_ids[1]):
        forced = grid.copy()
        forced[0, 1, 2] = token
        sess = lm.session(2)
        for t in range(4):  # stream 1's frame 2 sits at step 4, fed by call 3
            sess.step(forced[:, :, t])
        assert np.abs(sess.logits[0][0] - logits[3][0][0]).max() > 1e-3
    # -1 beside picked positions: the picks use the zero-embedding logits.
    frames = np.full((1, 3, 5), si.SAMPLE, dtype=np.int64)
    frames[0, :, :2] = si.NO_INPUT
    out = run_session(lm.session(1), frames)
    generated = frames[0] == si.SAMPLE
    replay(lm, twin, out[0], 0, [None] * 3, 0, generated=generated)


def test_flush_then_reset(export_lm) -> None:
    twin, lm = load(export_lm, DELAY3, seed=5)
    sampling = si.Sampling(temperature=1.0)
    frames = np.full((2, 3, 6), si.SAMPLE, dtype=np.int64)
    frames[:, :, :2] = random_grid(twin.vocab_sizes, 2, 2, seed=6)
    sess = lm.session(2, sampling, seed=[3, 4])
    first = run_session(sess, frames)
    step = frames[:, :, 0]
    with pytest.raises(si.InputError, match="reset"):
        sess.step(step)
    with pytest.raises(si.InputError, match="reset"):
        sess.step(step)  # still refused: only reset() reopens it
    sess.reset()
    assert sess.frames == 0 and sess.logits == []
    np.testing.assert_array_equal(run_session(sess, frames), first)
    # Reset in the middle of a run restarts it too.
    sess.reset()
    sess.step(frames[:, :, 0])
    sess.step(frames[:, :, 1])
    sess.step(frames[:, :, 2])
    sess.reset()
    np.testing.assert_array_equal(run_session(sess, frames), first)
    # Flushing a session that got no frame returns no frames.
    sess.reset()
    assert sess.flush().shape == (2, 3, 0)


def test_bad_frames_leave_the_session_untouched(export_lm) -> None:
    twin, lm = load(export_lm, DELAY3, seed=6)
    sampling = si.Sampling(top_k=10)
    frames = np.full((2, 3, 5), si.SAMPLE, dtype=np.int64)
    frames[:, 1] = random_grid(twin.vocab_sizes, 2, 5, seed=7)[:, 1]
    clean = run_session(lm.session(2, sampling, seed=1), frames)
    sess = lm.session(2, sampling, seed=1)
    out = [sess.step(frames[:, :, 0]), sess.step(frames[:, :, 1])]
    good = frames[:, :, 2]
    oov = good.copy()
    oov[1, 1] = 24  # stream 1 has 24 ids
    bad = {
        "1-D": good[0],
        "3-D": good[:, :, None],
        "too many streams": np.concatenate([good, good[:, :1]], axis=1),
        "too many sequences": np.concatenate([good, good[:1]], axis=0),
        "float": good.astype(np.float32),
        "list": good.tolist(),
        "out of vocabulary": oov,
        "-5": np.where(good == si.SAMPLE, -5, good),
        "-3": np.where(good == si.SAMPLE, -3, good),
    }
    for what, frame in bad.items():
        with pytest.raises(si.InputError):
            sess.step(frame)
        assert sess.frames == 2, what
    with pytest.raises(si.InputError, match="24"):
        sess.step(oov)
    out += [sess.step(frames[:, :, t]) for t in (2, 3, 4)]
    out.append(sess.flush())
    np.testing.assert_array_equal(np.concatenate(out, axis=-1), clean)


def test_bad_session_arguments(export_lm) -> None:
    _, lm = load(export_lm, DELAY3)
    with pytest.raises(si.InputError, match="seed"):
        lm.session(2, si.Sampling(), seed=[1, 2, 3])
    with pytest.raises(si.InputError, match="batch_size"):
        lm.session(-1)
    with pytest.raises(si.InputError):
        lm.session(0)
    with pytest.raises(si.InputError, match="sampling"):
        lm.session(1, [si.Sampling()] * 2)
    with pytest.raises(si.InputError, match="allowed_tokens"):
        lm.session(1, si.Sampling(allowed_tokens=[30]))  # stream 2 has 16 ids


def test_context_limit_keeps_the_session_intact(export_lm) -> None:
    twin, lm = load(export_lm, small_config(max_context=12), seed=7)  # delays [0, 1]
    grid = random_grid(twin.vocab_sizes, 1, 12, seed=8)
    sess = lm.session(1)
    out = []
    # Call t feeds columns 0 ..= t + 1: t + 2 positions, so frames 0 ..= 10 fit.
    for t in range(11):
        out.append(sess.step(grid[:, :, t]))
    logits = sess.logits
    with pytest.raises(si.InputError, match="max_context"):
        sess.step(grid[:, :, 11])
    with pytest.raises(si.InputError, match="max_context"):
        sess.step(np.full((1, 2), si.SAMPLE, dtype=np.int64))
    assert sess.frames == 11
    for k in range(2):
        np.testing.assert_array_equal(sess.logits[k], logits[k])
    out.append(sess.flush())
    np.testing.assert_array_equal(np.concatenate(out, axis=-1), grid[:, :, :11])
    sess.reset()
    np.testing.assert_array_equal(run_session(sess, grid[:, :, :11]), grid[:, :, :11])
