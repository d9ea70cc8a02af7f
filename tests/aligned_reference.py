"""The aligned layout's frame loop written in Python on a ``Session``: the reference that the
engine's ``generate_aligned`` (crates/tts/src/aligned.rs) must equal grid for grid. This was the
pipeline's own implementation until the loop moved into the engine for the scheduler."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray
from speechinfer._aligned import EOS, MAX_HOLD_FRAMES, MAX_TAIL_FRAMES, PAD
from speechinfer._native import NO_INPUT, SAMPLE, Sampling, SpeechLM


def _probability(logits: NDArray[np.float64], token: int) -> float:
    """Softmax probability of ``token``."""
    top = float(logits.max())
    return float(np.exp(logits[token] - top) / np.exp(logits - top).sum())


def reference_aligned(
    lm: SpeechLM,
    sampling: Sequence[Sampling],
    voice_token: int,
    text_ids: Sequence[int],
    max_frames: int,
    codebook_size: int,
    seed: int,
    on_frame: Callable[[int], None] | None = None,
    max_tail_frames: int = MAX_TAIL_FRAMES,
) -> NDArray[np.int64]:
    """Return the generated grid ``[K, n]``: frame 0 the voice, then the audio frames and, when
    speech ended within ``max_frames``, the EOS frame (audio ``eos`` in every audio stream).

    ``sampling`` must not let ``audio0`` sample EOS. ``on_frame(frames)`` is called with the
    count of complete audio frames as they come.
    """
    k_n, lead = lm.num_streams, min(lm.delays[1:])
    session = lm.session(1, sampling=list(sampling), seed=seed)
    # The unconditional twin's frames (guided sessions): the voice, then no text.
    text_less = np.full((1, k_n), SAMPLE, dtype=np.int64)
    text_less[0, 0] = PAD
    rng = np.random.default_rng(seed)
    queue = [*text_ids, EOS]
    position = held = 0
    text_end: int | None = None  # the frame that holds the text's eos
    end: int | None = None  # the EOS frame
    first = np.full((1, k_n), NO_INPUT, dtype=np.int64)
    first[0, 0] = voice_token
    chunks = [session.step(first, first if session.guided else None)]
    done = chunks[0].shape[-1]
    for t in range(1, max_frames + 1):
        token = PAD
        if position < len(queue):
            logits = np.asarray(session.logits[0][0], dtype=np.float64)
            candidate = queue[position]
            # The model cannot see the text ahead: its chance to move on is all it does not
            # give to pad, whatever character it guesses.
            advance = 1.0 - _probability(logits, PAD)
            if held >= MAX_HOLD_FRAMES or rng.random() < advance:
                token, position, held = candidate, position + 1, 0
                text_end = t if token == EOS else None
            else:
                held += 1
        frame = np.full((1, k_n), SAMPLE, dtype=np.int64)
        frame[0, 0] = token
        chunk = session.step(frame, text_less if session.guided else None)
        chunks.append(chunk)
        done += chunk.shape[-1]
        if on_frame is not None and chunk.shape[-1]:
            on_frame(max(done - 1, 0))
        # session.logits now predict the next column, which holds audio0 of frame t + 1 - lead.
        audio_frame = t + 1 - lead
        if text_end is not None and audio_frame >= text_end:
            audio0 = np.asarray(session.logits[1][0], dtype=np.float64)
            stop = _probability(audio0, codebook_size)
            if audio_frame - text_end >= max_tail_frames or rng.random() < stop:
                end = audio_frame
                break
    chunks.append(session.flush())
    grid = np.concatenate(chunks, axis=-1)[0]
    if end is None:
        return grid[:, : max_frames + 1]
    grid = grid[:, : end + 1].copy()
    grid[1:, end] = codebook_size
    return grid
