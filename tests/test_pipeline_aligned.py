"""The ``aligned`` text layout of docs/tts.md through ``si.Pipeline``: the text stream runs
``lead`` frames ahead of the audio, each step's text token is pad or the next character (the
model's two logits decide, a seeded generator draws), the audio streams are the engine's. Tiny
random-weight twins as in test_pipeline.py, with the text head biased to test the rule."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from conftest import SMALL_CODEC, random_codec, random_lm
from speechinfer._aligned import MAX_HOLD_FRAMES, MAX_TAIL_FRAMES
from speechinfer_training.export import save_pretrained
from test_pipeline import HOP, TEXT_OFFSET, char_tokenizer, tts_lm_config, write_spec

C = SMALL_CODEC["codebook_size"]
LEAD = 3
PAD, EOS = 0, 2


def aligned_config(lead: int = LEAD, **sizes: int) -> dict:
    config = tts_lm_config(**sizes)
    for q, stream in enumerate(config["streams"][1:]):
        stream["delay"] = lead + q
    return config


def export_aligned_lm(
    path: Path, pad_bias: float | None, eos_bias: float = 0.15, tokenizer: object = None
) -> Path:
    """Every text-stream input puts 30 in residual dimension 0; audio0's EOS row reads it with
    ``eos_bias`` and, when ``pad_bias`` is given, the text head's pad row with ``pad_bias`` (the
    other text rows ignore it): > 0 holds the current character, < 0 advances at once. The
    tokenizer is the character one unless given."""
    tokenizer = char_tokenizer() if tokenizer is None else tokenizer
    model = random_lm(aligned_config(tokenizer_size=tokenizer.get_vocab_size()), seed=5)
    with torch.no_grad():
        model.embeddings[0].weight[:, 0] += 30.0
        audio0 = model.heads[1].weight
        audio0[:, 0] = 0.0
        audio0[C] = 0.0
        audio0[C, 0] = eos_bias
        if pad_bias is not None:
            text = model.heads[0].weight
            text[:, 0] = 0.0
            text[PAD, 0] = pad_bias
    return save_pretrained(model, path, tokenizer=tokenizer)


def pipeline(
    root: Path, pad_bias: float | None, eos_bias: float = 0.15, **spec: object
) -> si.Pipeline:
    save_pretrained(random_codec(SMALL_CODEC), root / "codec")
    export_aligned_lm(root / "lm", pad_bias, eos_bias)
    return si.Pipeline.load(write_spec(root, layout="aligned", **spec))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> si.Pipeline:
    """Characters on consecutive frames (pad avoided); the end drawn from audio0's EOS."""
    return pipeline(tmp_path_factory.mktemp("aligned"), -60.0, max_frames=60)


def text_ids(text: str) -> list[int]:
    return [i + TEXT_OFFSET for i in char_tokenizer().encode(text, add_special_tokens=False).ids]


def check_grid(grid: np.ndarray, text: str, voice: int, max_frames: int) -> int:
    """The grid's shape of docs/tts.md; returns its audio frames (before the EOS frame)."""
    assert grid.shape[0] == 3 and grid[0, 0] == 4 + voice and (grid[1:, 0] == -1).all()
    said = [t for t in grid[0, 1:] if t != PAD]
    assert said == [*text_ids(text), EOS][: len(said)]
    ended = bool((grid[1:, -1] == C).all())
    frames = grid.shape[1] - 1 - int(ended)
    assert frames <= max_frames and (ended or frames == max_frames)
    assert ((grid[1:, 1 : 1 + frames] >= 0) & (grid[1:, 1 : 1 + frames] < C)).all()
    return frames


def test_say_decodes_the_generated_grid(pipe: si.Pipeline) -> None:
    assert pipe.layout == "aligned" and pipe.audio_start("hello") == 1
    lengths = set()
    for seed in range(5):
        [grid] = pipe.generate_grids("  Hello\tTHERE. ", "slt", [seed])
        frames = check_grid(grid, "hello there.", 1, 60)
        audio = pipe.say("Hello there.", voice="slt", seed=seed)
        expected = pipe.codec.decode(grid[None, 1:, 1 : 1 + frames])[0] if frames else []
        np.testing.assert_array_equal(audio, np.asarray(expected, dtype=np.float32))
        lengths.add(audio.shape[0] // HOP)
    # Speech ends where the model says, never before the audio reaches the text's eos (frame 13,
    # after 12 audio frames).
    assert len(lengths) > 1 and 12 <= min(lengths) < 60


def test_the_model_times_the_text(tmp_path: Path) -> None:
    """Pad strongly preferred: each character waits MAX_HOLD_FRAMES frames, then is forced;
    pad strongly avoided: the characters come on consecutive frames, then the text eos."""
    hold = pipeline(tmp_path / "hold", 60.0, max_frames=2 * MAX_HOLD_FRAMES + 4)
    [grid] = hold.generate_grids("ab", None, [0])
    spoken = np.flatnonzero(grid[0, 1:] != PAD) + 1
    assert list(spoken) == [MAX_HOLD_FRAMES + 1, 2 * MAX_HOLD_FRAMES + 2][: len(spoken)]
    rush = pipeline(tmp_path / "rush", -60.0)
    [grid] = rush.generate_grids("abc de", None, [0])
    n = len("abc de") + 1
    assert list(grid[0, 1 : 1 + n]) == [*text_ids("abc de"), EOS][: grid.shape[1] - 1]
    assert (grid[0, 1 + n :] == PAD).all()
    # A model that never ends is ended MAX_TAIL_FRAMES after the text's eos (frame 3 for "ab").
    endless = pipeline(tmp_path / "endless", -60.0, eos_bias=-60.0, max_frames=120)
    [grid] = endless.generate_grids("ab", None, [0])
    assert grid.shape[1] == 1 + 3 + MAX_TAIL_FRAMES and (grid[1:, -1] == C).all()
    # ... or max_tail_frames after it when pipeline.json sets that.
    short = pipeline(tmp_path / "short", -60.0, eos_bias=-60.0, max_frames=120, max_tail_frames=7)
    [grid] = short.generate_grids("ab", None, [0])
    assert grid.shape[1] == 1 + 3 + 7 and (grid[1:, -1] == C).all()


def test_seeds_progress_and_threads(pipe: si.Pipeline) -> None:
    text = "one two. three four."
    runs = [pipe.say(text, seed=s) for s in range(3)]
    assert len({r.tobytes() for r in runs}) == 3
    np.testing.assert_array_equal(pipe.say(text, seed=1), runs[1])
    np.testing.assert_array_equal(pipe.say(text), runs[0])
    calls: list[tuple[int, int]] = []
    audio = pipe.say(text, seed=2, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(audio, runs[2])
    done, total = zip(*calls, strict=True)
    assert list(done) == sorted(done) and done[-1] == total[-1]
    results: list[np.ndarray | None] = [None] * 4

    def run(i: int) -> None:
        results[i] = pipe.say(text, seed=i % 3)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got, runs[i % 3])


def test_layout_errors(pipe: si.Pipeline, tmp_path: Path) -> None:
    links = {"codec": str(pipe.path / "codec"), "lm": str(pipe.path / "lm")}
    with pytest.raises(si.ConfigError, match="max_tail_frames must be an int >= 1, got 0"):
        si.Pipeline.load(write_spec(tmp_path / "tail", max_tail_frames=0, **links))
    with pytest.raises(si.ConfigError, match="layout must be one of"):
        si.Pipeline.load(write_spec(tmp_path / "bad", layout="interleaved", **links))
    flat = tts_lm_config()
    for stream in flat["streams"]:
        stream["delay"] = 0
    lm = save_pretrained(random_lm(flat | {"pattern": "parallel"}), tmp_path / "lm0",
                         tokenizer=char_tokenizer())  # fmt: skip
    spec = {"codec": links["codec"], "lm": str(lm), "layout": "aligned"}
    with pytest.raises(si.ConfigError, match="layout 'aligned' needs an LM with pattern 'delay'"):
        si.Pipeline.load(write_spec(tmp_path / "parallel", **spec))
    with pytest.raises(si.InputError, match="unknown voice"):
        pipe.say("hello", voice="kal")
