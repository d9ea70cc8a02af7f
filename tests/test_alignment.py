"""Word timings from the synthesizers (``speechinfer_training.alignment``) and the ``aligned``
TTS grid built from them (``tts_data.place_characters`` / ``aligned_grid``, docs/tts.md)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from speechinfer.phonemes import PAUSE, PHONES
from speechinfer_training import alignment, corpus
from speechinfer_training.tts_data import (
    TEXT_EOS,
    TEXT_PAD,
    aligned_grid,
    place_characters,
    place_phones,
    tts_lm_config,
)

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
needs_festival = pytest.mark.skipif(
    shutil.which("festival") is None
    or not (corpus.FESTIVAL_VOICE_DIRS["festival_slt"] / "festvox").is_dir(),
    reason="festival with festvox-us-slt-hts is not installed",
)
TEXT = "The cat sat on the mat, then slept for 3 hours."
WORDS = "the cat sat on the mat, then slept for three hours.".split(" ")


def test_match_starts_maps_clitics_numbers_and_gaps() -> None:
    timed = [("armor", 0.2), ("'s", None), ("axiom", 0.6), ("nineteen", 1.0), ("eighty", 1.4)]
    timed += [("four", 1.7), ("x", None)]
    words = ["armor's", "axiom:", "nineteen", "eighty-four", "okay"]
    starts = alignment.match_starts(words, timed, duration=2.5)
    assert starts[:4] == [0.2, 0.6, 1.0, 1.4]
    assert starts[4] == pytest.approx(1.4 + alignment.SECONDS_PER_WORD)
    # Nothing timed: spread over the duration; always non-decreasing and within it.
    assert alignment.match_starts(["a", "b"], [("x", None)], 2.0) == [0.0, 1.0]
    assert alignment.match_starts(["a", "b"], [("b", 0.1), ("a", 3.0)], 2.0) == [2.0, 2.0]


def wav_seconds(path: Path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def check_against_the_wave(voice: str, tmp_path: Path) -> list[float]:
    """Start times of TEXT's words for ``voice``: increasing, inside the corpus wav, the first
    one after the leading silence and the last one in the final second."""
    wav = tmp_path / f"{voice}.wav"
    corpus.render(voice, TEXT, wav, 16000)
    duration = wav_seconds(wav)
    row = alignment.align_entry({"id": "x", "voice": voice, "text": TEXT, "duration": duration})
    assert row["words"] == WORDS
    starts = row["starts"]
    assert all(b > a for a, b in itertools.pairwise(starts)), starts
    assert 0.05 < starts[0] < 0.5 and duration - 1.2 < starts[-1] < duration - 0.2
    audio, rate = sf.read(str(wav))
    onset = np.flatnonzero(np.abs(audio) > 0.02)[0] / rate
    assert abs(starts[0] - onset) < 0.08, (starts[0], onset)
    # The phones: flite's set, pauses at both ends, non-decreasing times inside the wav, and the
    # first spoken phone starts with the first word.
    phones = row["phones"]
    assert {p for p, _ in phones} <= set(PHONES)
    assert phones[0][0] == phones[-1][0] == PAUSE
    times = [t for _, t in phones]
    assert times == sorted(times) and 0 <= times[0] and times[-1] < duration
    spoken = [t for p, t in phones if p != PAUSE]
    assert spoken[0] == pytest.approx(starts[0], abs=0.03)
    assert [p for p, _ in phones[1:3]] == ["dh", "ax"] or voice.startswith("festival")
    return starts


@needs_flite
@pytest.mark.parametrize("voice", ["rms", "slt", "awb"])
def test_flite_word_starts(voice: str, tmp_path: Path) -> None:
    check_against_the_wave(voice, tmp_path)


@needs_festival
def test_festival_word_starts_follow_text2wave(tmp_path: Path) -> None:
    """Two sentences are two festival utterances; the second one's times include the first's
    wave, as text2wave concatenates them."""
    starts = check_against_the_wave("festival_slt", tmp_path)
    assert starts[WORDS.index("then")] > starts[WORDS.index("mat,")] + 0.2


@needs_flite
def test_align_corpus_writes_and_resumes(tmp_path: Path) -> None:
    text = tmp_path / "s.txt"
    text.write_text("We like warm bread.\nA small boat went out to sea.\n")
    manifest = corpus.build_corpus(
        tmp_path / "c", voices=["slt"], text_files=[text], use_fortunes=False, install=False
    )
    path = alignment.align_corpus(manifest, jobs=1)
    rows = alignment.read_alignments(path)
    assert len(rows) == 2 and all(key.endswith(":slt") for key in rows)
    first = path.read_text()
    lines = first.splitlines()
    path.write_text(lines[0] + "\n")  # as if stopped after one utterance
    alignment.align_corpus(manifest, jobs=1)
    assert sorted(path.read_text().splitlines()) == sorted(lines)
    assert json.loads(lines[0])["words"][0] in ("we", "a")


def test_place_characters() -> None:
    # One frame per character and the space after each word but the last, from the word's start
    # frame; a word that starts before the previous one is done waits for it.
    assert place_characters(["ab", "c", "de"], [0, 1, 10]) == [0, 1, 2, 3, 4, 10, 11]
    assert place_characters(["hi"], [5]) == [5, 6]
    with pytest.raises(ValueError, match="one start frame per word"):
        place_characters(["a", "b"], [0])


def test_place_phones() -> None:
    # Each phone at the frame where it starts (50 Hz), pushed one frame on behind the previous.
    phones = [[PAUSE, 0.0], ["k", 0.1], ["ae", 0.101], ["t", 0.2]]
    ids, frames = place_phones(phones, 50)
    assert ids == [PHONES.index(p) for p, _ in phones]
    assert frames == [0, 5, 6, 10]
    with pytest.raises(ValueError, match="unknown phone 'QQ'"):
        place_phones([["QQ", 0.0]], 50)


def test_aligned_grid_is_the_table() -> None:
    codes = np.arange(2 * 8).reshape(2, 8) % 7
    ids = [20, 21, 22]  # "ab c" minus the space, as text-stream ids
    grid = aligned_grid(1, ids, [0, 3, 5], codes, codebook_size=7).numpy()
    assert grid.shape == (3, 10)
    assert grid[0, 0] == 4 + 1 and (grid[1:, 0] == -1).all()
    assert list(grid[0, 1:]) == [20, 0, 0, 21, 0, 22, TEXT_EOS, 0, TEXT_PAD]
    np.testing.assert_array_equal(grid[1:, 1:9], codes)
    assert (grid[1:, 9] == 7).all()
    with pytest.raises(ValueError, match="increasing frames"):
        aligned_grid(1, ids, [0, 3, 7], codes, codebook_size=7)  # no room for the text eos
    with pytest.raises(ValueError, match="increasing frames"):
        aligned_grid(1, ids, [0, 3, 3], codes, codebook_size=7)


def test_aligned_lm_config() -> None:
    config = tts_lm_config(["a", "b"], 16, 3, layout="aligned", lead=5, max_frames=50)
    assert [s["delay"] for s in config["streams"]] == [0, 5, 6, 7]
    assert config["max_context"] == (1 + 50 + 1) + 7  # frames (voice, speech, EOS) + delay
    with pytest.raises(ValueError, match="needs pattern 'delay'"):
        tts_lm_config(["a"], 16, 2, pattern="parallel", layout="aligned")
    with pytest.raises(ValueError, match="layout must be one of"):
        tts_lm_config(["a"], 16, 2, layout="middle")
