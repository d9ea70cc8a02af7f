"""Automatic intelligibility judge: PyPI ``pocketsphinx`` (5.x) speech recognition and WER.

The English acoustic model, dictionary and trigram LM ship inside the ``pocketsphinx`` wheel, so
nothing is downloaded. Two ways to decode:

* :func:`transcribe`: free decoding with the packaged LM, the honest intelligibility measure
  (~1 s per utterance on 2 cores). Pooled WER on 30 fortunes sentences: flite rms 12 %, slt
  23 %, awb 19 %, kal 40 %, festival slt-hts 19 % (names outside the dictionary included);
* :func:`transcribe_with_grammar`: decoding restricted to a JSGF grammar whose only phrases are
  the expected sentences; a cheap check (~0.05 s per utterance, ~0 % WER on those voices) that
  picks the sentence heard and returns ``""`` for noise.

Audio is any float array (mono ``[T]``, or ``[C, T]``/``[T, C]`` which is averaged to mono) at
any sample rate; it is resampled to 16 kHz and converted to 16-bit PCM. A pocketsphinx decoder
is not thread safe, so each thread of each process (a forked child too) gets its own decoders,
built from one cached configuration (the wheel's model; at most ``MAX_HMM_PER_FRAME`` active
HMMs per frame). Grammars are compiled once per thread and kept (the latest ``MAX_GRAMMARS``).

:func:`wer` and :func:`word_errors` align normalised words (:func:`normalize_text`: lower case,
hyphens to spaces, punctuation dropped except apostrophes inside words) with a Levenshtein
distance of unit costs.
"""

import functools
import hashlib
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

ASR_RATE = 16000
MAX_GRAMMARS = 16
MAX_HMM_PER_FRAME = 5000

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


# ----------------------------------------------------------------------------------------------
# Text and word error rate


def normalize_text(text: str) -> str:
    """Lower-case ``text``, turn hyphens into spaces and keep only words (``don't`` stays whole)."""
    return " ".join(_WORD.findall(text.lower().replace("-", " ")))


def normalize_words(text: str) -> list[str]:
    """Return the words of :func:`normalize_text`."""
    return normalize_text(text).split()


@dataclass(frozen=True)
class WordErrors:
    """Edit operations of a minimal word alignment of a hypothesis against a reference."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """``errors / reference_words``; for an empty reference 0.0 if nothing heard, else 1.0."""
        if self.reference_words == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.reference_words

    def __add__(self, other: "WordErrors") -> "WordErrors":
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_words + other.reference_words,
        )


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Count substitutions, deletions and insertions between normalised word sequences.

    A Levenshtein alignment with unit costs; among alignments of minimal cost the one with the
    most substitutions (then deletions) is counted, so the split is deterministic.
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    # cost[j] = (total, subs, dels, ins) for ref[:i] vs hyp[:j]; tuples compare cost first.
    previous = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i, ref_word in enumerate(ref, start=1):
        current = [(i, 0, i, 0)]
        for j, hyp_word in enumerate(hyp, start=1):
            t, s, d, n = previous[j - 1]
            match = (t, s, d, n) if ref_word == hyp_word else (t + 1, s + 1, d, n)
            t, s, d, n = previous[j]
            delete = (t + 1, s, d + 1, n)
            t, s, d, n = current[j - 1]
            insert = (t + 1, s, d, n + 1)
            current.append(min(match, delete, insert, key=lambda c: (c[0], -c[1], -c[2])))
        previous = current
    _, subs, dels, ins = previous[-1]
    return WordErrors(subs, dels, ins, len(ref))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (see :class:`WordErrors`)."""
    return word_errors(reference, hypothesis).wer


def corpus_wer(pairs: Sequence[tuple[str, str]]) -> float:
    """Pooled WER of ``(reference, hypothesis)`` pairs: all errors over all reference words."""
    total = sum((word_errors(r, h) for r, h in pairs), WordErrors(0, 0, 0, 0))
    return total.wer if pairs else math.nan


# ----------------------------------------------------------------------------------------------
# Audio


def to_pcm16(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16 kHz little-endian 16-bit PCM bytes of float ``audio`` at ``sample_rate``.

    Multi-channel input (the shorter axis is the channels) is averaged; a signal peaking above
    full scale is scaled down to it, anything quieter is left as it is.
    """
    wave = np.asarray(audio, dtype=np.float64)
    if wave.ndim == 2:
        wave = wave.mean(axis=0 if wave.shape[0] <= wave.shape[1] else 1)
    if wave.ndim != 1:
        raise ValueError(f"audio must be [T] or [C, T], got shape {np.shape(audio)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    wave = np.nan_to_num(wave)
    if sample_rate != ASR_RATE and wave.size:
        divisor = math.gcd(int(sample_rate), ASR_RATE)
        wave = resample_poly(wave, ASR_RATE // divisor, int(sample_rate) // divisor)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 1.0:
        wave = wave / peak
    return (np.clip(wave, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()


# ----------------------------------------------------------------------------------------------
# Decoders


@functools.lru_cache(maxsize=1)
def decoder_settings() -> dict[str, Any]:
    """Return the cached decoder configuration: the wheel's en-us model, 16 kHz, quiet logs."""
    import pocketsphinx

    model = Path(pocketsphinx.get_model_path()) / "en-us"
    return {
        "hmm": str(model / "en-us"),
        "lm": str(model / "en-us.lm.bin"),
        "dict": str(model / "cmudict-en-us.dict"),
        "samprate": ASR_RATE,
        # Caps the HMMs evaluated per frame (default 30000): free decoding of noise is ~3x
        # faster, and the WER of the flite/festival voices is unchanged on our sentences.
        "maxhmmpf": MAX_HMM_PER_FRAME,
        "loglevel": "FATAL",
    }


def _new_decoder() -> Any:
    from pocketsphinx import Config, Decoder

    return Decoder(Config(**decoder_settings()))


def _decode(decoder: Any, pcm: bytes) -> str:
    decoder.start_utt()
    if pcm:
        decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return "" if hyp is None else normalize_text(hyp.hypstr)


class _Judge:
    """The decoders of one thread: free decoding, and grammar-restricted decoding.

    The free decoder is never changed, so its results do not depend on earlier calls; the
    grammar decoder's dictionary grows with the grammars' unknown words.
    """

    def __init__(self) -> None:
        self._free: Any = None  # both built on first use (~0.3 s each)
        self._constrained: Any = None
        self.grammars: OrderedDict[str, None] = OrderedDict()

    @property
    def free(self) -> Any:
        if self._free is None:
            self._free = _new_decoder()
        return self._free

    def in_dictionary(self, word: str) -> bool:
        return self.free.lookup_word(word) is not None

    def transcribe(self, pcm: bytes) -> str:
        return _decode(self.free, pcm)

    def transcribe_with_grammar(self, pcm: bytes, sentences: Sequence[str]) -> str:
        if self._constrained is None:
            self._constrained = _new_decoder()
        decoder = self._constrained
        decoder.activate_search(self._grammar(decoder, sentences))
        return _decode(decoder, pcm)

    def _grammar(self, decoder: Any, sentences: Sequence[str]) -> str:
        """Name of the search for a grammar of ``sentences`` (compiled on first use)."""
        phrases = sorted({normalize_text(s) for s in sentences} - {""})
        if not phrases:
            raise ValueError("a grammar needs at least one sentence with a word")
        name = "g" + hashlib.sha256("\n".join(phrases).encode()).hexdigest()[:16]
        if name in self.grammars:
            self.grammars.move_to_end(name)
            return name
        words = {w for p in phrases for w in p.split()}
        missing = sorted(w for w in words if decoder.lookup_word(w) is None)
        for i, word in enumerate(missing, start=1):  # the search is rebuilt after the last
            decoder.add_word(word, spelled_phones(word), update=i == len(missing))
        body = " | ".join(phrases)
        decoder.add_jsgf_string(
            name, f"#JSGF V1.0;\ngrammar expected;\npublic <sentence> = {body};\n"
        )
        self.grammars[name] = None
        while len(self.grammars) > MAX_GRAMMARS:
            old, _ = self.grammars.popitem(last=False)
            decoder.remove_search(old)
        return name


_LETTER_PHONES = {
    "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH",
    "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R",
    "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z",
}  # fmt: skip


def spelled_phones(word: str) -> str:
    """Crude ARPAbet pronunciation of a word missing from the dictionary: one phone per letter.

    Doubled letters count once, ``'`` is dropped and ``'s`` reads ``Z``. Only good enough to let
    a grammar hold a sentence with a name in it; the sentence's other words pick it out.
    """
    letters = word.replace("'s", "z").replace("'", "")
    kept = [c for i, c in enumerate(letters) if c in _LETTER_PHONES and c != letters[i - 1 : i]]
    return " ".join(_LETTER_PHONES[c] for c in kept) or "AH"


_local = threading.local()


def _judge() -> _Judge:
    """Return the decoder of this thread, rebuilt after a fork (never the parent's)."""
    judge = getattr(_local, "judge", None)
    if judge is None or getattr(_local, "pid", None) != os.getpid():
        judge = _local.judge = _Judge()
        _local.pid = os.getpid()
    return judge


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """Free decoding of ``audio`` with the packaged English LM; normalised words, may be ``""``."""
    return _judge().transcribe(to_pcm16(audio, sample_rate))


def transcribe_with_grammar(audio: np.ndarray, sample_rate: int, sentences: Sequence[str]) -> str:
    """Decode ``audio`` restricted to one of ``sentences`` (a JSGF alternative of phrases).

    Returns the normalised sentence recognised, or ``""`` when the decoder finds none (noise,
    silence). A word outside the pocketsphinx dictionary (:func:`out_of_vocabulary`) is added to
    this thread's dictionary with a letter-by-letter pronunciation (:func:`spelled_phones`).
    Raises ``ValueError`` when no sentence has a word.
    """
    return _judge().transcribe_with_grammar(to_pcm16(audio, sample_rate), sentences)


def out_of_vocabulary(text: str) -> list[str]:
    """Return the normalised words of ``text`` that the pocketsphinx dictionary lacks."""
    judge = _judge()
    return [w for w in normalize_words(text) if not judge.in_dictionary(w)]
