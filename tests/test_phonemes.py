"""Text to phones (``speechinfer.phonemes``) and the lexicon that training writes for it."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import speechinfer as si
from speechinfer.phonemes import PAUSE, PHONES, Phonemizer, letter_phones

LEXICON = {
    "the": ("dh", "ax"),
    "cat": ("k", "ae", "t"),
    "sat": ("s", "ae", "t"),
    "don't": ("d", "ow", "n", "t"),
    "well": ("w", "eh", "l"),
    "known": ("n", "ow", "n"),
}


def test_phones_pause_at_the_ends_and_after_phrases() -> None:
    phonemizer = Phonemizer(LEXICON)
    assert phonemizer.phones("the cat, sat.") == [
        PAUSE, "dh", "ax", "k", "ae", "t", PAUSE, "s", "ae", "t", PAUSE
    ]  # fmt: skip
    assert phonemizer.phones("the cat") == [PAUSE, "dh", "ax", "k", "ae", "t", PAUSE]
    assert phonemizer.phones("don't!") == [PAUSE, "d", "ow", "n", "t", PAUSE]
    # "the" before a vowel, as flite says it.
    assert phonemizer.phones("the end")[:3] == [PAUSE, "dh", "iy"]


def test_words_missing_from_the_lexicon() -> None:
    phonemizer = Phonemizer(LEXICON)
    assert phonemizer.word("well-known") == ("w", "eh", "l", "n", "ow", "n")
    assert phonemizer.word("'cat'") == ("k", "ae", "t")
    assert phonemizer.word("blick") == letter_phones("blick") == ("b", "l", "ih", "k")
    assert letter_phones("shape") == ("sh", "ae", "p")  # final e silent
    assert letter_phones("happy") == ("hh", "ae", "p", "iy")  # doubled p, final y
    assert letter_phones("night") == ("n", "ay", "t")
    for word in ("xylophone", "quiz", "zzz", "aeiou"):
        assert letter_phones(word) and set(letter_phones(word)) <= set(PHONES)
    with pytest.raises(ValueError, match="'3'"):
        phonemizer.phones("cat3")


def test_lexicon_file_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.txt.gz"
    good.write_bytes(gzip.compress(b"cat k ae t\nthe dh ax\n"))
    assert Phonemizer.load(good).word("cat") == ("k", "ae", "t")
    assert len(Phonemizer.load(good)) == 2
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"cat k ae t\ndog d QQ g\n"))
    with pytest.raises(si.ConfigError, match=r"bad.txt.gz:2"):
        Phonemizer.load(bad)
    plain = tmp_path / "plain.txt.gz"
    plain.write_text("cat k ae t\n")
    with pytest.raises(si.ConfigError, match="cannot read the lexicon"):
        Phonemizer.load(plain)


@pytest.mark.skipif(shutil.which("t2p") is None, reason="flite's t2p is not installed")
def test_batched_t2p_equals_one_word_at_a_time(tmp_path: Path) -> None:
    from speechinfer_training import lexicon

    words = ["hello", "world", "don't", "a", "i", "antidisestablishment", "mr", "xyzzy"]
    batched = lexicon.t2p_batch(words)
    assert batched == {w: p for word in words for w, p in lexicon.t2p_batch([word]).items()}
    assert batched["hello"] == ("hh", "ax", "l", "ow")
    path = lexicon.write_lexicon(tmp_path / "lexicon.txt.gz", lexicon.build_lexicon(words, 2))
    phonemizer = Phonemizer.load(path)
    assert phonemizer.word("world") == ("w", "er", "l", "d")
    assert phonemizer.phones("hello, world.") == [
        PAUSE, "hh", "ax", "l", "ow", PAUSE, "w", "er", "l", "d", PAUSE
    ]  # fmt: skip
