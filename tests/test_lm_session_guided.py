"""Guided sessions: a ``cfg_scale`` in a session's sampling gives every sequence an
unconditional twin fed by ``step(frame, uncond)`` (docs/lm.md, "Generation, sessions and EOS")."""

from __future__ import annotations

import numpy as np
import pytest
import speechinfer as si
from lm_generation_helpers import random_grid, stream
from speechinfer_training.lm import small_config

DELAY3 = small_config(streams=[stream("a0", 40), stream("a1", 24, 1), stream("a2", 16, 2)])
# A text stream forced by the caller beside audio streams the model picks (the TTS layout).
TEXT_AUDIO = small_config(
    streams=[stream("text", 32, 0, role="text"), stream("a0", 24, 1), stream("a1", 20, 2)]
)


def guided_run(sess: si.Session, frames: np.ndarray, uncond: np.ndarray) -> np.ndarray:
    """Steps through frames and unconditional frames ``[B, K, T]``, flushes, joins the output."""
    out = [sess.step(frames[:, :, t], uncond[:, :, t]) for t in range(frames.shape[-1])]
    out.append(sess.flush())
    return np.concatenate(out, axis=-1)


@pytest.mark.parametrize("sampling", ["greedy", "sampled"])
def test_guided_session_equals_generate_with_cfg_prompt(export_lm, sampling: str) -> None:
    twin, path = export_lm(DELAY3, seed=11)
    lm = si.SpeechLM.load(path)
    kwargs = {"temperature": 0.0} if sampling == "greedy" else {"temperature": 1.2, "top_k": 12}
    guided = si.Sampling(cfg_scale=2.5, **kwargs)
    prompt = random_grid(twin.vocab_sizes, 2, 4, seed=12)
    uncond_prompt = random_grid(twin.vocab_sizes, 2, 4, seed=13)
    n, seeds = 9, [5, 6]
    want = lm.generate(
        prompt, n, guided, seed=seeds, stop_on_eos=False, cfg_prompt=list(uncond_prompt)
    )
    picks = np.full((2, 3, n), si.SAMPLE, dtype=np.int64)
    frames = np.concatenate([prompt, picks], axis=-1)
    uncond = np.concatenate([uncond_prompt, picks], axis=-1)
    sess = lm.session(2, guided, seed=seeds)
    assert sess.guided and sess.batch_size == 2
    got = guided_run(sess, frames, uncond)
    np.testing.assert_array_equal(got, want)
    # Guidance changes the picks (the same session unguided picks otherwise) ...
    plain = lm.generate(prompt, n, si.Sampling(**kwargs), seed=seeds, stop_on_eos=False)
    assert not np.array_equal(plain, want)
    # ... and reset() replays the run exactly.
    sess.reset()
    np.testing.assert_array_equal(guided_run(sess, frames, uncond), want)


def test_guided_session_with_a_forced_stream(export_lm) -> None:
    """The caller forces the text stream in both; the twin's text differs, so do the picks."""
    twin, path = export_lm(TEXT_AUDIO, seed=14)
    lm = si.SpeechLM.load(path)
    sampling = [si.Sampling(temperature=0.0), *[si.Sampling(cfg_scale=3.0, top_k=8)] * 2]
    text = random_grid(twin.vocab_sizes, 1, 10, seed=15)[:, 0]
    frames = np.full((1, 3, 10), si.SAMPLE, dtype=np.int64)
    frames[:, 0] = text
    frames[:, 1:, 0] = si.NO_INPUT
    uncond = frames.copy()
    uncond[:, 0, 1:] = 0  # the "no text" stream: pad after the first frame
    got = guided_run(lm.session(1, sampling, seed=3), frames, uncond)
    np.testing.assert_array_equal(got[:, 0], text)
    again = guided_run(lm.session(1, sampling, seed=3), frames, uncond)
    np.testing.assert_array_equal(again, got)
    other = guided_run(lm.session(1, sampling, seed=3), frames, frames)
    assert not np.array_equal(other[:, 1:], got[:, 1:])


def test_guided_session_errors(export_lm) -> None:
    _, path = export_lm(DELAY3, seed=16)
    lm = si.SpeechLM.load(path)
    frame = np.full((2, 3), si.SAMPLE, dtype=np.int64)
    guided = lm.session(2, si.Sampling(cfg_scale=2.0))
    with pytest.raises(si.InputError, match="uncond"):
        guided.step(frame)
    with pytest.raises(si.InputError, match="uncond"):
        guided.step(frame, frame[:1])
    oov = frame.copy()
    oov[0, 0] = 40  # stream 0 has 40 ids
    with pytest.raises(si.InputError, match="uncond"):
        guided.step(frame, oov)
    assert guided.frames == 0
    guided.step(frame, frame)
    assert guided.frames == 1
    plain = lm.session(2)
    assert not plain.guided
    with pytest.raises(si.InputError, match="guided"):
        plain.step(frame, frame)
    assert plain.frames == 0
