"""Evaluate a TTS pipeline: codec resynthesis, intelligibility of ``say``, minimal-pair scoring.

``python -m speechinfer_training.eval --corpus MANIFEST --pipeline DIR [--codec DIR] [--lm DIR]
[--max-utterances N] [--out results.json] [--voices rms,slt] [--seed 0] [--split heldout]
[--pair-voice V] [--num-words 40] [--num-sentence-pairs 30] [--resynth-codebooks N]
[--skip codec,tts,pairs]``

The engine (``import speechinfer as si``) runs every model; the judge is pocketsphinx
(:mod:`.asr`). ``--voices`` defaults to the pipeline's voices; ``--max-utterances`` caps the number
of corpus sentences of ``--split`` (default ``heldout``) that are used, each with every voice.

1. **Codec resynthesis** (``codec``): each utterance is resampled to the codec rate, encoded and
   decoded with the first Q codebooks (Q = the LM's audio streams, else all;
   ``--resynth-codebooks`` picks another Q); log-mel distance,
   SI-SDR and STOI (:mod:`.metrics`) against the source, and the pooled WER of the resynthesised
   audio next to that of the source audio (free decoding, and grammar-restricted decoding over
   the evaluated sentences).
2. **TTS** (``tts``): ``si.Pipeline.load(DIR).say(text, voice, seed)`` for every sentence and voice
   (text lower-cased, double quotes dropped); pooled WER per voice next to the WER of that corpus
   voice's recording of the same sentences, and their ratio (``null`` if the source WER is 0).
3. **Minimal pairs** (``pairs``), judged by ``si.SpeechLM.score`` without text: both members of a
   pair are spoken by flite (or festival) in ``--pair-voice`` (default: the first voice), encoded
   with the codec, and laid out as the TTS grid of ``docs/tts.md`` with an empty text (frame 0
   ``<voice:v>``, frame 1 ``sep``, then ``pad`` beside the audio frames, then ``pad`` beside
   ``eos``; ``-1`` in the audio streams of frames 0 and 1). Accuracy = share of pairs whose good
   member gets the higher total log-probability (ties count 1/2); ``accuracy_per_frame``
   compares log-probabilities divided by the number of audio frames instead.

   * sWUGGY-style: ``--num-words`` words of Debian ``wamerican`` (``/usr/share/dict/words``,
     installed with apt-get when missing and root): lower-case alphabetic entries of 4 to 8
     letters, ordered by ``sha256(f"{seed}:{word}")``. The non-word (:func:`make_nonword`)
     replaces one single-letter vowel nucleus (a vowel letter between non-vowels, not the ``u``
     of ``qu``), the one nearest the word's middle first (ties: the earlier), by the next vowel of
     the cycle ``a→e→i→o→u→a`` (trying the following ones if the result is a dictionary word);
     the first string not in the dictionary (in any case) wins. Swapping one vowel keeps the
     consonant clusters and the syllable count, so the non-word stays pronounceable; words with
     no such candidate are skipped.
   * sWUGGY-style on the training vocabulary (``swuggy_corpus``): the same, the words drawn from
     the corpus's ``train`` sentences instead (as ZeroSpeech 2021's sWUGGY draws its words from
     LibriSpeech, the vocabulary its baselines hear); the non-word is in neither word list.
   * ``audio_accuracy``: the same comparison of the audio streams' log-probability alone (the
     text stream of a text-less grid holds only ``pad``: it says nothing of the spoken word).
   * sBLIMP-style: the first ``--num-sentence-pairs`` of :data:`SENTENCE_PAIRS`, 30 subject-verb
     agreement pairs (grammatical, ungrammatical).

A markdown table is printed; the full results (and per-item details) go to ``--out`` as JSON.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from . import asr, corpus, metrics

TEXT_PAD, TEXT_BOS, TEXT_EOS, TEXT_SEP, VOICE_OFFSET = 0, 1, 2, 3, 4
NO_INPUT = -1
WORDS_FILE = Path("/usr/share/dict/words")
SECTIONS = ("codec", "tts", "pairs")
VOWELS = "aeiou"
NEXT_VOWEL = {"a": "e", "e": "i", "i": "o", "o": "u", "u": "a"}

SENTENCE_PAIRS: tuple[tuple[str, str], ...] = (
    ("the dogs bark", "the dogs barks"),
    ("the cat sleeps", "the cat sleep"),
    ("she walks to school", "she walk to school"),
    ("they are happy", "they is happy"),
    ("he was late", "he were late"),
    ("the children play outside", "the children plays outside"),
    ("my brother likes apples", "my brother like apples"),
    ("the birds sing in the morning", "the birds sings in the morning"),
    ("this book is interesting", "this book are interesting"),
    ("these cars are fast", "these cars is fast"),
    ("the man runs every day", "the man run every day"),
    ("we have finished", "we has finished"),
    ("the teacher knows the answer", "the teacher know the answer"),
    ("the girls were singing", "the girls was singing"),
    ("it does not matter", "it do not matter"),
    ("the keys are on the table", "the keys is on the table"),
    ("a dog was barking", "a dog were barking"),
    ("the students read books", "the students reads books"),
    ("my friends live here", "my friends lives here"),
    ("the sun rises in the east", "the sun rise in the east"),
    ("he has two sisters", "he have two sisters"),
    ("the women talk quietly", "the women talks quietly"),
    ("the baby cries at night", "the baby cry at night"),
    ("those houses are old", "those houses is old"),
    ("the river flows to the sea", "the river flow to the sea"),
    ("i am tired", "i is tired"),
    ("the boys want to play", "the boys wants to play"),
    ("she does not like rain", "she do not like rain"),
    ("the wind blows hard", "the wind blow hard"),
    ("the doctors work late", "the doctors works late"),
)


# ----------------------------------------------------------------------------------------------
# Models and audio


class Models:
    """The engine models of a pipeline directory (codec and LM may come from elsewhere)."""

    def __init__(
        self, pipeline_dir: str | Path, codec_dir: str | Path | None, lm_dir: str | Path | None
    ) -> None:
        import speechinfer as si

        self.pipeline_dir = Path(pipeline_dir)
        self.config = json.loads((self.pipeline_dir / "pipeline.json").read_text())
        self.voices: list[str] = list(self.config["voices"])
        self.codec_dir = Path(codec_dir or self.pipeline_dir / self.config.get("codec", "codec"))
        self.lm_dir = Path(lm_dir or self.pipeline_dir / self.config.get("lm", "lm"))
        self.codec = si.Codec.load(self.codec_dir)
        self.lm = si.SpeechLM.load(self.lm_dir)
        self.lm_config = json.loads((self.lm_dir / "config.json").read_text())
        streams = self.lm_config["streams"]
        if len(streams) < 2 or streams[0]["role"] != "text" or streams[0]["pad_id"] != TEXT_PAD:
            raise ValueError(f"{self.lm_dir} does not have the TTS stream layout of docs/tts.md")
        self.audio_eos = [int(s["eos_id"]) for s in streams[1:]]
        self.layout: str = self.config.get("layout", "prefix")
        self.num_codebooks = min(len(self.audio_eos), self.codec.num_codebooks)
        self._pipeline: Any = None

    @property
    def pipeline(self) -> Any:
        """``si.Pipeline.load(pipeline_dir)``, loaded on first use."""
        if self._pipeline is None:
            import speechinfer as si

            self._pipeline = si.Pipeline.load(str(self.pipeline_dir))
        return self._pipeline

    def voice_token(self, voice: str) -> int:
        """Text-stream id of ``<voice:NAME>``."""
        if voice not in self.voices:
            raise ValueError(f"voice {voice!r} is not in the pipeline's voices {self.voices}")
        return VOICE_OFFSET + self.voices.index(voice)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """Codes ``[Q, F]`` (the LM's codebooks) of mono ``audio`` at the codec rate."""
        return self.codec.encode(np.ascontiguousarray(audio, dtype=np.float32))[0][
            : self.num_codebooks
        ]

    def resynthesize(self, audio: np.ndarray, num_codebooks: int) -> np.ndarray:
        """Encode and decode ``audio`` with the first ``num_codebooks`` codebooks."""
        codes = self.codec.encode(np.ascontiguousarray(audio, dtype=np.float32))
        return self.codec.decode(codes[:, :num_codebooks])[0]

    def audio_logprob(self, grid: np.ndarray) -> float:
        """Return the summed log-probability of the audio tokens of ``grid`` ``[1, K, T]``.

        Streams ``1..`` at frames ``>= 1``: what ``lm.score`` sums, less the text stream.
        """
        import torch

        from .patterns import Delay, Layout

        if self.lm.pattern != "delay":
            raise ValueError("audio-only scoring reads the delay pattern's steps")
        k_n, t_n = grid.shape[1], grid.shape[2]
        layout = Layout(Delay(tuple(self.lm.delays)), k_n, t_n)
        steps = layout.apply(torch.from_numpy(grid), self.lm.special_ids).numpy()
        logits = self.lm.logits(steps)
        first = layout.first_step.numpy()
        total = 0.0
        for k in range(1, k_n):
            tokens = grid[0, k, 1:]
            scored = tokens != NO_INPUT
            rows = logits[k][0][first[k, 1:][scored] - 1].astype(np.float64)
            top = rows.max(axis=1, keepdims=True)
            log_z = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
            total += float((rows[np.arange(len(rows)), tokens[scored]] - log_z).sum())
        return total

    def fits(self, num_frames: int) -> bool:
        """Whether a grid of ``num_frames`` frames fits the LM's ``max_context``."""
        pattern, k = self.lm.pattern, self.lm.num_streams
        if pattern == "flatten":
            steps = 1 + num_frames * k
        elif pattern in ("delay", "depth"):
            steps = num_frames + max(self.lm.delays) + 1
        else:
            steps = num_frames + 1
        return steps - 1 <= self.lm.max_context


def read_audio(path: str | Path, rate: int) -> np.ndarray:
    """Mono float32 audio of a sound file, resampled to ``rate``."""
    audio, source_rate = sf.read(str(path), dtype="float64", always_2d=True)
    return corpus.resample(audio.mean(axis=1), int(source_rate), rate).astype(np.float32)


def synthesize_audio(voice: str, text: str, rate: int) -> np.ndarray:
    """``text`` spoken by a corpus voice (flite or festival), mono float32 at ``rate``."""
    with tempfile.TemporaryDirectory(prefix="speechinfer-eval-") as tmp:
        path = Path(tmp) / "say.wav"
        corpus.synthesize(voice, text, path)
        return read_audio(path, rate)


def tts_text(text: str) -> str:
    """Corpus sentence as ``say`` input: lower case, no double quotes, single spaces."""
    return " ".join(text.lower().replace('"', " ").split())


# ----------------------------------------------------------------------------------------------
# The TTS grid and minimal pairs


def tts_grid(
    voice_token: int,
    codes: np.ndarray,
    audio_eos: Sequence[int],
    text_ids: Sequence[int] = (),
    layout: str = "prefix",
) -> np.ndarray:
    """Build the grid of docs/tts.md for text ids and codes ``[Q, F]``.

    ``[1, 1 + Q, L + F + 3]`` in the ``prefix`` layout; text-less ``[1, 1 + Q, F + 2]`` (voice,
    codes beside pads, EOS) in the ``aligned`` one.
    """
    codes = np.asarray(codes, dtype=np.int64)
    q, f = codes.shape
    if q != len(audio_eos):
        raise ValueError(f"codes have {q} codebooks, the LM {len(audio_eos)} audio streams")
    if layout == "aligned":
        if len(text_ids):
            raise ValueError("tts_grid builds text-less grids only in the aligned layout")
        grid = np.full((1, 1 + q, f + 2), NO_INPUT, dtype=np.int64)
        grid[0, 0, 0] = voice_token
        grid[0, 0, 1:] = TEXT_PAD
        grid[0, 1:, 1 : 1 + f] = codes
        grid[0, 1:, 1 + f] = np.asarray(audio_eos, dtype=np.int64)
        return grid
    n = len(text_ids)
    grid = np.full((1, 1 + q, n + f + 3), NO_INPUT, dtype=np.int64)
    grid[0, 0, 0] = voice_token
    grid[0, 0, 1 : n + 1] = np.asarray(text_ids, dtype=np.int64)
    grid[0, 0, n + 1] = TEXT_SEP
    grid[0, 0, n + 2 :] = TEXT_PAD
    grid[0, 1:, n + 2 : n + 2 + f] = codes
    grid[0, 1:, n + 2 + f] = np.asarray(audio_eos, dtype=np.int64)
    return grid


def load_lexicon(install: bool = True) -> set[str]:
    """Read the entries of ``/usr/share/dict/words`` as written (apt-get ``wamerican``)."""
    if not WORDS_FILE.is_file():
        command = "apt-get install -y --no-install-recommends wamerican"
        if not install or os.geteuid() != 0:
            raise corpus.MissingPackageError(f"{WORDS_FILE} is missing; run as root: {command}")
        install_args = ("install", "-y", "-q", "--no-install-recommends", "wamerican")
        if not corpus._apt_get(*install_args):
            corpus._apt_get("update", "-q")
            corpus._apt_get(*install_args)
        if not WORDS_FILE.is_file():
            raise corpus.MissingPackageError(f"could not install wamerican ({command})")
    return {w.strip() for w in WORDS_FILE.read_text(errors="replace").splitlines()} - {""}


def select_words(lexicon: set[str], count: int, seed: int = 0) -> list[str]:
    """``count`` lower-case alphabetic words of 4-8 letters, in ``sha256(f"{seed}:{w}")`` order."""
    pool = [w for w in lexicon if w.isascii() and w.isalpha() and w.islower() and 4 <= len(w) <= 8]
    pool.sort(key=lambda w: (hashlib.sha256(f"{seed}:{w}".encode()).digest(), w))
    return pool[:count]


def make_nonword(word: str, lexicon: set[str]) -> str | None:
    """Make a non-word from ``word`` by one vowel substitution (rule: module docstring).

    ``lexicon`` holds lower-cased words: the non-word is none of them.
    """
    middle = (len(word) - 1) / 2
    positions = [
        i
        for i, c in enumerate(word)
        if c in VOWELS
        and (i == 0 or word[i - 1] not in VOWELS)
        and (i + 1 == len(word) or word[i + 1] not in VOWELS)
        and not (c == "u" and i > 0 and word[i - 1] == "q")
    ]
    for i in sorted(positions, key=lambda i: (abs(i - middle), i)):
        vowel = word[i]
        for _ in range(len(VOWELS) - 1):
            vowel = NEXT_VOWEL[vowel]
            candidate = word[:i] + vowel + word[i + 1 :]
            if candidate not in lexicon:
                return candidate
    return None


def word_pairs(
    lexicon: set[str], count: int, seed: int = 0, pool: set[str] | None = None
) -> list[tuple[str, str]]:
    """Up to ``count`` (word, non-word) pairs (words without a non-word are passed over).

    The words come from ``pool`` (default: ``lexicon``); no non-word is in either.
    """
    pairs, lowered = [], {w.lower() for w in lexicon | (pool or set())}
    for word in select_words(lexicon if pool is None else pool, 4 * count + 10, seed):
        nonword = make_nonword(word, lowered)
        if nonword is not None:
            pairs.append((word, nonword))
        if len(pairs) == count:
            break
    return pairs


def corpus_words(entries: Sequence[dict[str, Any]]) -> set[str]:
    """Return the lower-case alphabetic words of the entries' texts (the training vocabulary)."""
    words = (w.strip(".,!?;:'\"()-") for e in entries for w in e["text"].lower().split())
    return {w for w in words if w.isascii() and w.isalpha()}


def score_pairs(models: Models, pairs: Sequence[tuple[str, str]], voice: str) -> dict[str, Any]:
    """Minimal-pair accuracy of ``lm.score`` on text-less TTS grids of the spoken pairs."""
    token = models.voice_token(voice)
    details, wins, wins_per_frame, audio_wins, skipped = [], 0.0, 0.0, 0.0, 0
    for good, bad in pairs:
        scored = []
        for text in (good, bad):
            codes = models.encode(synthesize_audio(voice, text, models.codec.sample_rate))
            grid = tts_grid(token, codes, models.audio_eos, layout=models.layout)
            if not models.fits(grid.shape[-1]):
                break
            audio = models.audio_logprob(grid) if models.lm.pattern == "delay" else math.nan
            scored.append((float(models.lm.score(grid)[0]), codes.shape[1], audio))
        if len(scored) < 2:
            skipped += 1
            continue
        (lp_good, f_good, audio_good), (lp_bad, f_bad, audio_bad) = scored
        wins += 1.0 if lp_good > lp_bad else 0.5 if lp_good == lp_bad else 0.0
        audio_wins += 1.0 if audio_good > audio_bad else 0.5 if audio_good == audio_bad else 0.0
        pg, pb = lp_good / f_good, lp_bad / f_bad
        wins_per_frame += 1.0 if pg > pb else 0.5 if pg == pb else 0.0
        details.append(
            {
                "good": good,
                "bad": bad,
                "logprob": [lp_good, lp_bad],
                "audio_logprob": [audio_good, audio_bad],
                "frames": [f_good, f_bad],
            }
        )
    n = len(details)
    return {
        "voice": voice,
        "pairs": n,
        "skipped_too_long": skipped,
        "accuracy": wins / n if n else math.nan,
        "accuracy_per_frame": wins_per_frame / n if n else math.nan,
        "audio_accuracy": audio_wins / n if n else math.nan,
        "details": details,
    }


# ----------------------------------------------------------------------------------------------
# Codec resynthesis and TTS intelligibility


class Judge:
    """Free and grammar-restricted transcripts, cached by key; the grammar holds ``sentences``."""

    def __init__(self, sentences: Sequence[str], root: Path) -> None:
        self.sentences = list(sentences)
        self.root = root
        self.cache: dict[str, tuple[str, str]] = {}

    def hear(self, key: str, audio: Callable[[], np.ndarray], rate: int) -> tuple[str, str]:
        """(free, grammar) transcripts of ``audio()`` at ``rate``, computed once per ``key``."""
        if key not in self.cache:
            wave = audio()
            self.cache[key] = (
                asr.transcribe(wave, rate),
                asr.transcribe_with_grammar(wave, rate, self.sentences),
            )
        return self.cache[key]

    def hear_file(self, path: str) -> tuple[str, str]:
        """Transcripts of a corpus wav (``path`` relative to the corpus directory)."""
        return self.hear(path, lambda: read_audio(self.root / path, asr.ASR_RATE), asr.ASR_RATE)


def _wers(rows: Sequence[dict[str, Any]], field: str) -> tuple[float, float]:
    """Pooled (free, grammar) WERs of ``rows[i][field]`` against ``rows[i]["text"]``."""
    free = asr.corpus_wer([(r["text"], r[field][0]) for r in rows])
    return free, asr.corpus_wer([(r["text"], r[field][1]) for r in rows])


def codec_resynthesis(
    models: Models,
    entries: Sequence[dict[str, Any]],
    judge: Judge,
    num_codebooks: int | None = None,
) -> dict[str, Any]:
    """Section 1 on manifest ``entries`` (``num_codebooks``: default the LM's)."""
    rate, q = models.codec.sample_rate, num_codebooks or models.num_codebooks
    if not 1 <= q <= models.codec.num_codebooks:
        raise ValueError(f"the codec has {models.codec.num_codebooks} codebooks, not {q}")
    rows = []
    for e in entries:
        source = read_audio(judge.root / e["path"], rate)
        resynth = models.resynthesize(source, q)
        rows.append(
            {
                "text": e["text"],
                "voice": e["voice"],
                "mel_distance": metrics.mel_distance(source, resynth, rate),
                "si_sdr": metrics.si_sdr(source, resynth),
                "stoi": metrics.stoi(source, resynth, rate),
                "source": judge.hear_file(e["path"]),
                "resynth": judge.hear(f"resynth:{e['path']}", lambda r=resynth: r, rate),
            }
        )
    source_wer, source_grammar_wer = _wers(rows, "source")
    resynth_wer, resynth_grammar_wer = _wers(rows, "resynth")
    keys = ("mel_distance", "si_sdr", "stoi")
    return {
        "utterances": len(rows),
        "num_codebooks": q,
        **{k: float(np.mean([r[k] for r in rows])) if rows else math.nan for k in keys},
        "source_wer": source_wer,
        "resynth_wer": resynth_wer,
        "source_grammar_wer": source_grammar_wer,
        "resynth_grammar_wer": resynth_grammar_wer,
        "details": rows,
    }


def tts_intelligibility(
    models: Models,
    sentences: Sequence[str],
    voices: Sequence[str],
    entries: Sequence[dict[str, Any]],
    judge: Judge,
    seed: int,
) -> dict[str, Any]:
    """Section 2: WER of ``say`` per voice beside the corpus voice's recordings.

    ``wer_ratio`` = the TTS WER over the sentences that have a recording of the voice divided by
    the recordings' WER (``null`` when there are none or their WER is 0).
    """
    pipe = models.pipeline
    recordings = {(e["text"], e["voice"]): e["path"] for e in entries}
    per_voice = {}
    for voice in voices:
        rows = []
        for text in sentences:
            audio = np.asarray(pipe.say(tts_text(text), voice=voice, seed=seed), dtype=np.float32)
            path = recordings.get((text, voice))
            rows.append(
                {
                    "text": text,
                    "seconds": audio.size / pipe.sample_rate,
                    "tts": judge.hear(f"tts:{voice}:{text}", lambda a=audio: a, pipe.sample_rate),
                    "source": None if path is None else judge.hear_file(path),
                }
            )
        wer, grammar_wer = _wers(rows, "tts")
        matched = [r for r in rows if r["source"] is not None]
        source_wer, source_grammar_wer = _wers(matched, "source") if matched else (None, None)
        matched_wer = _wers(matched, "tts")[0] if matched else math.nan
        per_voice[voice] = {
            "sentences": len(rows),
            "wer": wer,
            "grammar_wer": grammar_wer,
            "source_sentences": len(matched),
            "source_wer": source_wer,
            "source_grammar_wer": source_grammar_wer,
            "wer_ratio": matched_wer / source_wer if source_wer else None,
            "details": rows,
        }
    return {"seed": seed, "per_voice": per_voice}


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in nested dicts and lists) replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_table(results: dict[str, Any]) -> str:
    """Format the headline numbers of ``results`` as a markdown table."""
    lines = ["| section | metric | value |", "|---|---|---|"]
    codec = results.get("codec")
    if codec:
        n = f"{codec['utterances']} utt, {codec['num_codebooks']} cb"
        for key in ("mel_distance", "si_sdr", "stoi"):
            lines.append(f"| codec ({n}) | {key} | {_fmt(codec[key])} |")
        for key in ("source_wer", "resynth_wer", "source_grammar_wer", "resynth_grammar_wer"):
            lines.append(f"| codec ({n}) | {key} | {_fmt(codec[key])} |")
    tts = results.get("tts")
    if tts:
        for voice, row in tts["per_voice"].items():
            where = f"tts {voice} ({row['sentences']} sent)"
            for key in ("wer", "source_wer", "wer_ratio", "grammar_wer", "source_grammar_wer"):
                lines.append(f"| {where} | {key} | {_fmt(row[key])} |")
    for name in ("swuggy", "swuggy_corpus", "sblimp"):
        pairs = (results.get("pairs") or {}).get(name)
        if pairs:
            where = f"{name} ({pairs['pairs']} pairs, {pairs['voice']})"
            for key in ("accuracy", "accuracy_per_frame", "audio_accuracy"):
                lines.append(f"| {where} | {key} | {_fmt(pairs[key])} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Entry points


def run_eval(
    corpus_path: str | Path,
    pipeline_dir: str | Path,
    codec_dir: str | Path | None = None,
    lm_dir: str | Path | None = None,
    max_utterances: int | None = None,
    voices: Sequence[str] | None = None,
    seed: int = 0,
    split: str = "heldout",
    pair_voice: str | None = None,
    num_words: int = 40,
    num_sentence_pairs: int = len(SENTENCE_PAIRS),
    resynth_codebooks: int | None = None,
    sections: Sequence[str] = SECTIONS,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the selected sections and return the results (see the module docstring)."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    started = time.monotonic()
    models = Models(pipeline_dir, codec_dir, lm_dir)
    voices = list(voices or models.voices)
    corpus_path = Path(corpus_path)
    root = corpus_path if corpus_path.is_dir() else corpus_path.parent
    entries = [e for e in corpus.read_manifest(corpus_path, split) if e["voice"] in voices]
    sentences = list(dict.fromkeys(e["text"] for e in entries))[:max_utterances]
    entries = [e for e in entries if e["text"] in set(sentences)]
    results: dict[str, Any] = {
        "corpus": str(corpus_path),
        "split": split,
        "pipeline": str(models.pipeline_dir),
        "codec_dir": str(models.codec_dir),
        "lm_dir": str(models.lm_dir),
        "voices": voices,
        "sentences": len(sentences),
    }
    needs_text = {"codec", "tts"} & set(sections)
    if needs_text and not sentences:
        raise ValueError(f"no {split} sentences of voices {voices} in {corpus_path}")
    judge = Judge(sentences, root)
    if "codec" in sections:
        log(f"codec resynthesis of {len(entries)} utterances")
        results["codec"] = codec_resynthesis(models, entries, judge, resynth_codebooks)
    if "tts" in sections:
        log(f"say: {len(sentences)} sentences x {len(voices)} voices")
        results["tts"] = tts_intelligibility(models, sentences, voices, entries, judge, seed)
    if "pairs" in sections:
        voice = pair_voice or voices[0]
        log(f"minimal pairs in voice {voice}")
        lexicon = load_lexicon()
        seen = corpus_words(corpus.read_manifest(corpus_path, "train"))
        results["pairs"] = {
            "swuggy": score_pairs(models, word_pairs(lexicon, num_words, seed), voice),
            "swuggy_corpus": score_pairs(models, word_pairs(lexicon, num_words, seed, seen), voice),
            "sblimp": score_pairs(models, SENTENCE_PAIRS[:num_sentence_pairs], voice),
        }
    results["seconds"] = round(time.monotonic() - started, 3)
    return finite(results)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command-line flags."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.eval",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--corpus", type=Path, required=True, help="manifest.jsonl or its dir")
    parser.add_argument("--pipeline", type=Path, required=True, help="pipeline directory")
    parser.add_argument("--codec", type=Path, default=None, help="codec dir (default: pipeline's)")
    parser.add_argument("--lm", type=Path, default=None, help="LM dir (default: pipeline's)")
    parser.add_argument("--max-utterances", type=int, default=None, help="at most N sentences")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    parser.add_argument(
        "--voices", nargs="+", default=None, help="voices (space or comma separated)"
    )
    parser.add_argument("--seed", type=int, default=0, help="say seed and word order")
    parser.add_argument("--split", default="heldout", choices=corpus.SPLITS)
    parser.add_argument("--pair-voice", default=None, help="voice of the minimal pairs")
    parser.add_argument("--num-words", type=int, default=40, help="sWUGGY pairs")
    parser.add_argument(
        "--num-sentence-pairs", type=int, default=len(SENTENCE_PAIRS), help="sBLIMP pairs"
    )
    parser.add_argument(
        "--resynth-codebooks", type=int, default=None, help="codebooks of section 1 (default Q)"
    )
    parser.add_argument(
        "--skip", default="", help=f"comma-separated sections to skip ({','.join(SECTIONS)})"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    voices = [v for item in args.voices or [] for v in item.split(",") if v] or None
    skip = {s for s in args.skip.split(",") if s}
    try:
        results = run_eval(
            args.corpus,
            args.pipeline,
            codec_dir=args.codec,
            lm_dir=args.lm,
            max_utterances=args.max_utterances,
            voices=voices,
            seed=args.seed,
            split=args.split,
            pair_voice=args.pair_voice,
            num_words=args.num_words,
            num_sentence_pairs=args.num_sentence_pairs,
            resynth_codebooks=args.resynth_codebooks,
            sections=[s for s in SECTIONS if s not in skip],
            log=lambda message: print(message, file=sys.stderr),
        )
    except (ValueError, OSError, corpus.MissingPackageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(results_table(results))
    if args.out is not None:
        corpus.write_atomic(args.out, json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
