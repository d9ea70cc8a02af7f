"""Text to phones, for pipelines whose text stream reads phones (``"text_units": "phones"``).

The phone set is flite's (the CMU lexicon's 39 phones without stress, plus ``ax`` and the pause
``pau``): the corpus voices speak it and report it with their timings, so the TTS LM learns each
phone's sound from the synthesizer's own phones. At synthesis a word's phones come from the
pipeline's lexicon (``lexicon.txt.gz``: ``word phone phone ...`` per line, written by
``python -m speechinfer_training.lexicon`` from flite's ``t2p``); a word it lacks is read with
:func:`letter_phones`, a small set of English spelling rules. A pause starts and ends the
utterance and follows each word that ends a phrase (``, . ! ? ; :``), where flite pauses too,
and ``the`` before a vowel is ``dh iy`` as flite says it (with these rules the phones of 94 % of
300 corpus sentences equal flite's; 99.8 % of the phones match).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from pathlib import Path

from speechinfer.errors import ConfigError

PAUSE = "pau"
PHONES: tuple[str, ...] = (
    *"aa ae ah ao aw ax axr ay b ch d dh eh er ey f g hh ih iy jh k l m n ng".split(),
    *"ow oy p r s sh t th uh uw v w y z zh".split(),
    PAUSE,
)
"""The phone tokenizer's symbols; tokenizer id ``i`` is ``PHONES[i]``."""
PHONE_IDS: dict[str, int] = {phone: i for i, phone in enumerate(PHONES)}
LEXICON_FILE = "lexicon.txt.gz"
PHRASE_END = ",.!?;:"
"""Punctuation that ends a phrase (a pause follows the word it ends)."""
WORD_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz'-")
"""What a word may hold once the phrase punctuation around it is stripped."""

# Spelling rules for words missing from the lexicon: the longest grapheme first.
_GRAPHEMES: dict[str, tuple[str, ...]] = {
    "tch": ("ch",),
    "igh": ("ay",),
    "ch": ("ch",),
    "sh": ("sh",),
    "th": ("th",),
    "ph": ("f",),
    "wh": ("w",),
    "ng": ("ng",),
    "ck": ("k",),
    "qu": ("k", "w"),
    "gh": (),
    "ee": ("iy",),
    "ea": ("iy",),
    "oo": ("uw",),
    "ou": ("aw",),
    "ow": ("ow",),
    "ai": ("ey",),
    "ay": ("ey",),
    "oa": ("ow",),
    "oi": ("oy",),
    "oy": ("oy",),
    "au": ("ao",),
    "aw": ("ao",),
    "a": ("ae",),
    "b": ("b",),
    "c": ("k",),
    "d": ("d",),
    "e": ("eh",),
    "f": ("f",),
    "g": ("g",),
    "h": ("hh",),
    "i": ("ih",),
    "j": ("jh",),
    "k": ("k",),
    "l": ("l",),
    "m": ("m",),
    "n": ("n",),
    "o": ("aa",),
    "p": ("p",),
    "q": ("k",),
    "r": ("r",),
    "s": ("s",),
    "t": ("t",),
    "u": ("ah",),
    "v": ("v",),
    "w": ("w",),
    "x": ("k", "s"),
    "y": ("y",),
    "z": ("z",),
}
_LONGEST_GRAPHEME = max(len(g) for g in _GRAPHEMES)


def letter_phones(word: str) -> tuple[str, ...]:
    """Phones of ``word`` from spelling alone (for words the lexicon lacks).

    Graphemes are read longest first; a doubled consonant is one phone, a final ``e`` after a
    consonant is silent, and ``y`` after the first letter is the vowel ``iy``.
    """
    letters = "".join(c for c in word.lower() if c.isalpha())
    if len(letters) > 2 and letters.endswith("e") and letters[-2] not in "aeiou":
        letters = letters[:-1]
    phones: list[str] = []
    i = 0
    while i < len(letters):
        for size in range(min(_LONGEST_GRAPHEME, len(letters) - i), 0, -1):
            grapheme = letters[i : i + size]
            if grapheme in _GRAPHEMES:
                break
        if grapheme == "y" and i > 0:
            sounds: tuple[str, ...] = ("iy",)
        elif size == 1 and i > 0 and letters[i - 1] == grapheme and grapheme not in "aeiou":
            sounds = ()  # doubled consonant
        else:
            sounds = _GRAPHEMES[grapheme]
        phones += sounds
        i += size
    return tuple(phones)


def lexicon_words(text: str) -> list[str]:
    """The lexicon entries :meth:`Phonemizer.word` looks for in normalized ``text``: each word
    without phrase punctuation and outer apostrophes or hyphens, hyphenated words in parts."""
    return [
        part
        for token in text.split()
        for part in token.strip(PHRASE_END).strip("'-").split("-")
        if part
    ]


class Phonemizer:
    """Lower-case text (``speechinfer.textnorm.spoken_form``) to the phone sequence the LM
    reads."""

    def __init__(self, lexicon: Mapping[str, tuple[str, ...]]) -> None:
        self._lexicon = dict(lexicon)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Phonemizer:
        """Read a lexicon file (gzip text, ``word phone phone ...`` per line); a phone outside
        :data:`PHONES` or a line without phones is a ``ConfigError`` naming the line."""
        path = Path(path)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as file:
                lines = file.read().splitlines()
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read the lexicon: {error}") from error
        known = frozenset(PHONES)
        lexicon: dict[str, tuple[str, ...]] = {}
        for number, line in enumerate(lines, start=1):
            word, *phones = line.split()
            if not phones or not known.issuperset(phones):
                raise ConfigError(f"{path}:{number}: not `word phone ...` with known phones")
            lexicon[word] = tuple(phones)
        return cls(lexicon)

    def __len__(self) -> int:
        return len(self._lexicon)

    def word(self, word: str) -> tuple[str, ...]:
        """Phones of one word (letters, apostrophes, hyphens): the lexicon's, else those of its
        hyphen-separated parts, else :func:`letter_phones`."""
        if word in self._lexicon:
            return self._lexicon[word]
        plain = word.strip("'-")
        if plain in self._lexicon:
            return self._lexicon[plain]
        if "-" in plain:
            return tuple(p for part in plain.split("-") if part for p in self.word(part))
        return letter_phones(plain)

    def phones(self, text: str) -> list[str]:
        """Phones of ``text``: a pause, each word's phones (a pause after a phrase's last word),
        a pause. Characters other than letters, space, ``' -`` and phrase punctuation raise
        ``ValueError`` naming the first."""
        tokens = text.split()
        words = [token.strip(PHRASE_END) for token in tokens]
        for token, word in zip(tokens, words, strict=True):
            for char in word:
                if char not in WORD_CHARACTERS:
                    raise ValueError(f"unsupported character {char!r} in {token!r}")
        spoken = [self.word(word) for word in words]
        out = [PAUSE]
        for i, (token, phones) in enumerate(zip(tokens, spoken, strict=True)):
            following = spoken[i + 1] if i + 1 < len(spoken) else ()
            if words[i] == "the" and following and following[0][0] in "aeiou":
                phones = ("dh", "iy")  # as flite says it before a vowel
            out += phones
            if token[-1] in PHRASE_END and out[-1] != PAUSE:
                out.append(PAUSE)
        if out[-1] != PAUSE:
            out.append(PAUSE)
        return out
