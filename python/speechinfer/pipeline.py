"""Text to speech: a codec and a token LM behind one call (the contract is docs/tts.md).

A *pipeline directory* holds ``pipeline.json``, a codec model directory and an LM model directory
with its ``tokenizer.json`` (characters; or phones, with the pipeline's ``lexicon.txt.gz``:
``speechinfer.phonemes``). The LM reads a grid of one text stream and Q audio
streams (one per codec codebook); ``Pipeline.say`` writes the text into the prompt, lets the LM
generate the audio streams until their EOS and decodes them with the codec.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from speechinfer._aligned import MAX_TAIL_FRAMES, generate_aligned
from speechinfer._native import NO_INPUT, Codec, Sampling, SpeechLM
from speechinfer.errors import CheckpointError, ConfigError, InputError
from speechinfer.models import default_pipeline_path
from speechinfer.phonemes import LEXICON_FILE, PHRASE_END, WORD_CHARACTERS, Phonemizer
from speechinfer.textnorm import spoken_form

MODEL_TYPE = "speechinfer-tts"
PIPELINE_FILE = "pipeline.json"
SILENCE_SECONDS = 0.15
"""Silence between the pieces of a text split for being longer than ``max_text_tokens``."""

# Text stream vocabulary (docs/tts.md): specials, then one token per voice, then the tokenizer.
PAD, BOS, EOS, SEP = 0, 1, 2, 3
VOICE_OFFSET = 4

_KEYS = ("model_type", "codec", "lm", "voices", "max_text_tokens", "max_frames", "sampling", "seed")
_OPTIONAL_KEYS = ("layout", "text_units", "max_tail_frames")
LAYOUTS = ("prefix", "aligned")
TEXT_UNITS = ("characters", "phones")
_PHONE_TEXT = WORD_CHARACTERS | set(PHRASE_END) | {" "}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Typographic variants of characters the tokenizer knows.

Progress = Callable[[int, int], None]
"""``progress(frames_done, frames_total)``: see :meth:`Pipeline.say`."""


class Pipeline:
    """A text-to-speech pipeline: codec + token LM + voices, loaded from a pipeline directory.

    Immutable once loaded: one pipeline may serve ``say`` from several threads at once.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Load and check the pipeline directory ``path`` (prefer :meth:`Pipeline.load`)."""
        directory = Path(path)
        spec = _read_spec(directory)
        self._path = directory
        self._voices: tuple[str, ...] = tuple(spec["voices"])
        self._max_text_tokens: int = spec["max_text_tokens"]
        self._max_frames: int = spec["max_frames"]
        self._seed: int = spec["seed"]
        self._layout: str = spec.get("layout", "prefix")
        self._max_tail_frames: int = spec.get("max_tail_frames", MAX_TAIL_FRAMES)
        self._phonemizer = (
            Phonemizer.load(directory / LEXICON_FILE)
            if spec.get("text_units") == "phones"
            else None
        )
        self._codec = Codec.load(directory / spec["codec"])
        self._lm = SpeechLM.load(directory / spec["lm"])
        where = f"pipeline {directory}"
        self._unknown_ids = _check_models(
            self._codec, self._lm, directory / spec["lm"], len(self._voices), where
        )
        self._text_offset = VOICE_OFFSET + len(self._voices)
        self._check_layout(where)
        self._check_context(where)
        if "cfg_scale" in spec["sampling"] and self._layout != "aligned":
            raise ConfigError(
                f"{where}: sampling cfg_scale needs layout 'aligned' (its unconditional twin is "
                "the text-less grid of docs/tts.md)"
            )
        self._sampling = _audio_sampling(spec["sampling"], self._codec, self._lm.num_streams - 1)
        # The aligned layout draws the end of speech itself (see _aligned): no EOS sampled.
        self._aligned_sampling = _audio_sampling(
            spec["sampling"], self._codec, self._lm.num_streams - 1, eos=False
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Pipeline:
        """Load the pipeline directory ``path``, or the default one embedded in the package.

        Raises ``ConfigError`` when ``pipeline.json`` is missing or invalid, or the codec and the
        LM do not fit together (the message names the field), ``CheckpointError`` when
        ``path`` is None and this build embeds no default pipeline.
        """
        if path is None:
            path = default_pipeline_path()
            if path is None:
                raise CheckpointError(
                    "this build of speechinfer embeds no default TTS pipeline "
                    "(speechinfer/models/default/pipeline.json); pass a pipeline directory"
                )
        return cls(path)

    @property
    def path(self) -> Path:
        """The pipeline directory."""
        return self._path

    @property
    def codec(self) -> Codec:
        """The codec that turns the generated codes into audio."""
        return self._codec

    @property
    def lm(self) -> SpeechLM:
        """The token LM (stream 0 text, streams 1..Q the codec's codebooks)."""
        return self._lm

    @property
    def voices(self) -> list[str]:
        """Voice names, in ``pipeline.json`` order; the first is the default."""
        return list(self._voices)

    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz of the audio ``say`` returns."""
        return self._codec.sample_rate

    @property
    def layout(self) -> str:
        """Where the text sits in the LM grid: ``"prefix"`` (before the speech) or
        ``"aligned"`` (each character beside its audio, a few frames ahead; docs/tts.md)."""
        return self._layout

    @property
    def text_units(self) -> str:
        """What the text stream reads: ``"characters"`` or ``"phones"`` (docs/tts.md)."""
        return "characters" if self._phonemizer is None else "phones"

    @property
    def max_text_tokens(self) -> int:
        """Most text tokens of one prompt; longer text is split into pieces."""
        return self._max_text_tokens

    @property
    def max_frames(self) -> int:
        """Most codec frames generated for one piece of text."""
        return self._max_frames

    def say(
        self,
        text: str,
        voice: str | None = None,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> NDArray[np.float32]:
        """Speak ``text`` in ``voice``; float32 audio ``[T]`` at :attr:`sample_rate`.

        The text is lower-cased (whitespace collapsed, typographic quotes and dashes made
        plain); text longer than :attr:`max_text_tokens` is split into sentences, then at
        spaces, and the pieces' audio is joined with 0.15 s of silence. ``voice=None`` is the
        first voice; ``seed=None`` is ``pipeline.json``'s seed, and every piece is generated
        with it, so the same call gives the same audio. ``progress(frames_done, frames_total)``
        is called as frames are generated: ``frames_total`` is the most frames still possible
        (``max_frames`` per piece, lowered when a piece ends early) and the last call has
        ``frames_done == frames_total``.

        Raises ``InputError`` for empty text, text without letters, a character the tokenizer
        does not know (named in the message) or an unknown voice (the message lists them).
        """
        seed = self._seed if seed is None else seed
        prompts = self.prompts(text, voice)
        total = self._max_frames * len(prompts)
        done = 0
        audio: list[NDArray[np.float32]] = []
        for prompt in prompts:
            prompt = prompt[None]
            if self._layout == "aligned":
                report = None
                if progress is not None:

                    def report(n: int, start: int = done, limit: int = total) -> None:
                        progress(start + n, limit)

                grid = self._generate_aligned(prompt[0], seed, report)
                codes = self._codes(grid[None, :, 1:])
            elif progress is None:
                codes = self._generate(prompt, seed)
            else:
                codes = self._stream(prompt, seed, progress, done, total)
            if progress is not None:
                total -= self._max_frames - codes.shape[-1]
                progress(done + codes.shape[-1], total)
            done += codes.shape[-1]
            audio.append(self._decode(codes))
        silence = np.zeros(round(SILENCE_SECONDS * self.sample_rate), dtype=np.float32)
        joined = [audio[0]]
        for piece in audio[1:]:
            joined += [silence, piece]
        return np.ascontiguousarray(np.concatenate(joined), dtype=np.float32)

    def generate_grids(
        self, text: str, voice: str | None = None, seeds: list[int] | None = None
    ) -> list[NDArray[np.int64]]:
        """The LM grids ``[K, n]`` that :meth:`say` generates for the first piece of ``text``,
        one per seed (default: ``[pipeline seed]``): the prompt frames (:meth:`prompts`; under
        the ``aligned`` layout the voice frame only, the text then sits beside the audio), then
        the generated frames up to and with the EOS frame (all of them when none came)."""
        seeds = [self._seed] if seeds is None else list(seeds)
        prompt = self.prompts(text, voice)[0]
        if self._layout == "aligned":
            return [self._generate_aligned(prompt, seed, None) for seed in seeds]
        grids = self._lm.generate(
            [prompt] * len(seeds), self._max_frames, self._sampling, seed=seeds, stop_on_eos=True
        )
        out = []
        for grid in grids:
            frames = self._codes(grid[None, :, prompt.shape[1] :]).shape[-1]
            out.append(grid[:, : min(prompt.shape[1] + frames + 1, grid.shape[1])])
        return out

    def audio_start(self, text: str, voice: str | None = None) -> int:
        """Index of the first audio frame in :meth:`generate_grids`' grids for ``text``."""
        return 1 if self._layout == "aligned" else self.prompts(text, voice)[0].shape[1]

    def prompts(self, text: str, voice: str | None = None) -> list[NDArray[np.int64]]:
        """The LM prompt grids ``[K, L + 2]`` (voice, text ids, sep; audio cells ``NO_INPUT``)
        that :meth:`say` generates from, one per piece of ``text``."""
        voice_token = VOICE_OFFSET + self._voice_index(voice)
        out = []
        for ids in self._pieces(self._normalize(text)):
            prompt = np.full((self._lm.num_streams, len(ids) + 2), NO_INPUT, dtype=np.int64)
            prompt[0] = [voice_token, *ids, SEP]
            out.append(prompt)
        return out

    @property
    def sampling(self) -> list[Sampling]:
        """The per-stream sampling :meth:`say` uses (text: pad only; audio: codes and EOS)."""
        return list(self._sampling)

    def audio_codes(self, generated: NDArray[np.int64]) -> NDArray[np.int64]:
        """Codec codes ``[1, Q, F]`` of generated frames ``[1, K, n]``: the audio streams up to
        (without) the EOS frame."""
        return self._codes(generated)

    def __repr__(self) -> str:
        return f"Pipeline({str(self._path)!r}, voices={list(self._voices)!r})"

    # -- text ---------------------------------------------------------------------------------

    def _voice_index(self, voice: str | None) -> int:
        if voice is None:
            return 0
        if voice not in self._voices:
            raise InputError(
                f"unknown voice {voice!r}; available voices: {', '.join(self._voices)}"
            )
        return self._voices.index(voice)

    def _normalize(self, text: str) -> str:
        """Lower-case, single-spaced text whose every character the tokenizer knows."""
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        text = spoken_form(text)
        if not text:
            raise InputError("the text is empty")
        if not any(ch.isalpha() for ch in text):
            raise InputError(f"the text has no letters: {text!r}")
        for ch in dict.fromkeys(text):
            if self._phonemizer is not None:
                known, ids = ch in _PHONE_TEXT, []
            else:
                try:
                    ids = [i - self._text_offset for i in self._lm.tokenize(ch, stream=0)]
                except InputError:  # a tokenizer without an unknown token fails on it
                    ids = None
                known = ids is not None and (bool(ids) or ch == " ")
            if not known or any(i in self._unknown_ids for i in ids or ()):
                raise InputError(
                    f"unsupported character {ch!r} (U+{ord(ch):04X}) in the text; the voice "
                    "model reads letters, space and punctuation (spell digits and symbols out)"
                )
        return text

    def _ids(self, text: str) -> list[int]:
        """Text-stream ids of normalized ``text``: its characters, or its phones."""
        if self._phonemizer is not None:
            text = " ".join(self._phonemizer.phones(text))
        return self._lm.tokenize(text, stream=0)

    def _count(self, text: str) -> int:
        return len(self._ids(text))

    def _pieces(self, text: str) -> list[list[int]]:
        """Text ids of each piece: the whole text if it fits ``max_text_tokens``, else its
        sentences, a sentence too long cut at spaces (a word too long, between characters);
        pieces without letters are left out."""
        if self._count(text) <= self._max_text_tokens:
            parts = [text]
        else:
            parts = []
            for sentence in _SENTENCE_END.split(text):
                if self._count(sentence) <= self._max_text_tokens:
                    parts.append(sentence)
                else:
                    parts += self._pack(sentence.split(" "), " ")
        return [self._ids(part) for part in parts if any(c.isalpha() for c in part)]

    def _pack(self, units: list[str], sep: str) -> list[str]:
        """Join ``units`` with ``sep`` greedily into pieces that fit ``max_text_tokens``."""
        pieces: list[str] = []
        current = ""
        for unit in units:
            candidate = f"{current}{sep}{unit}" if current else unit
            if self._count(candidate) <= self._max_text_tokens:
                current = candidate
                continue
            if current:
                pieces.append(current)
            current = unit
            if self._count(unit) > self._max_text_tokens:
                if len(unit) == 1:
                    raise InputError(
                        f"character {unit!r} alone takes more than max_text_tokens "
                        f"({self._max_text_tokens}) tokens"
                    )
                *whole, current = self._pack(list(unit), "")
                pieces += whole
        if current:
            pieces.append(current)
        return pieces

    # -- generation ---------------------------------------------------------------------------

    def _generate(self, prompt: NDArray[np.int64], seed: int) -> NDArray[np.int64]:
        grid = self._lm.generate(
            prompt, self._max_frames, sampling=self._sampling, seed=seed, stop_on_eos=True
        )
        return self._codes(grid[:, :, prompt.shape[-1] :])

    def _generate_aligned(
        self, prompt: NDArray[np.int64], seed: int, on_frame: Callable[[int], None] | None
    ) -> NDArray[np.int64]:
        """The ``aligned`` layout's grid for ``prompt`` (voice, text ids, sep; see prompts)."""
        return generate_aligned(
            self._lm,
            self._aligned_sampling,
            int(prompt[0, 0]),
            [int(i) for i in prompt[0, 1:-1]],
            self._max_frames,
            self._codec.codebook_size,
            seed,
            on_frame,
            self._max_tail_frames,
        )

    def _stream(
        self, prompt: NDArray[np.int64], seed: int, progress: Progress, done: int, total: int
    ) -> NDArray[np.int64]:
        """Like ``_generate``, reporting ``progress(done + frames so far, total)`` as frames
        come (the end of speech is reported by the caller)."""
        chunks: list[NDArray[np.int64]] = []
        frames = 0
        stream = self._lm.stream(
            prompt, self._max_frames, sampling=self._sampling, seed=seed, stop_on_eos=True
        )
        for chunk in stream:
            chunks.append(chunk)
            codes = self._codes(chunk)
            frames += codes.shape[-1]
            if codes.shape[-1] < chunk.shape[-1]:
                break  # the end of speech: the rest is EOS and padding
            progress(done + frames, total)
        if not chunks:
            return np.zeros((1, self._lm.num_streams - 1, 0), dtype=np.int64)
        return self._codes(np.concatenate(chunks, axis=-1))

    def _codes(self, generated: NDArray[np.int64]) -> NDArray[np.int64]:
        """The audio streams ``[1, Q, F]`` of generated frames ``[1, K, n]``, up to (without) the
        first frame holding a non-code: the EOS frame, after which the engine pads."""
        audio = generated[:, 1:]
        valid = ((audio >= 0) & (audio < self._codec.codebook_size)).all(axis=(0, 1))
        end = int(np.argmin(valid)) if not valid.all() else valid.shape[0]
        return np.ascontiguousarray(audio[:, :, :end])

    def _decode(self, codes: NDArray[np.int64]) -> NDArray[np.float32]:
        if codes.shape[-1] == 0:
            return np.zeros(0, dtype=np.float32)
        return self._codec.decode(codes)[0]

    def _check_layout(self, where: str) -> None:
        """The ``aligned`` layout needs the ``delay`` pattern with the audio behind the text."""
        if self._layout != "aligned":
            return
        if self._lm.pattern != "delay" or min(self._lm.delays[1:]) < 1 or self._lm.delays[0]:
            raise ConfigError(
                f"{where}: layout 'aligned' needs an LM with pattern 'delay', text delay 0 and "
                f"audio delays >= 1; it has pattern {self._lm.pattern!r}, delays "
                f"{list(self._lm.delays)}"
            )

    def _check_context(self, where: str) -> None:
        """The longest prompt plus ``max_frames`` must fit the LM's context."""
        prompt = 2 if self._layout == "aligned" else self._max_text_tokens + 2  # (+ EOS frame)
        frames = prompt + self._max_frames
        pattern, k_n = self._lm.pattern, self._lm.num_streams
        if pattern == "flatten":
            steps = 1 + frames * k_n
        elif pattern in ("delay", "depth"):
            steps = frames + max(self._lm.delays) + 1
        else:
            steps = frames + 1
        if steps - 1 > self._lm.max_context:
            raise ConfigError(
                f"{where}: max_text_tokens ({self._max_text_tokens}) + max_frames "
                f"({self._max_frames}) need {steps - 1} LM steps but the LM's max_context is "
                f"{self._lm.max_context}"
            )


def _read_spec(directory: Path) -> dict[str, Any]:
    """``pipeline.json``, checked: every key present, of the right type, none unknown."""
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a pipeline directory")
    file = directory / PIPELINE_FILE
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read {file}: {err.strerror or err}") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(spec, dict):
        raise ConfigError(f"{file} must hold a JSON object")
    unknown = sorted(set(spec) - set(_KEYS) - set(_OPTIONAL_KEYS))
    missing = [key for key in _KEYS if key not in spec]
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {', '.join(unknown)}")
    if missing:
        raise ConfigError(f"{file}: missing key(s) {', '.join(missing)}")
    if spec["model_type"] != MODEL_TYPE:
        raise ConfigError(f"{file}: model_type must be {MODEL_TYPE!r}, got {spec['model_type']!r}")
    for key in ("codec", "lm"):
        if not isinstance(spec[key], str) or not spec[key]:
            raise ConfigError(
                f"{file}: {key} must be a path relative to the pipeline directory, "
                f"got {spec[key]!r}"
            )
    voices = spec["voices"]
    if (
        not isinstance(voices, list)
        or not voices
        or not all(isinstance(v, str) and v for v in voices)
    ):
        raise ConfigError(f"{file}: voices must be a non-empty list of names, got {voices!r}")
    if len(set(voices)) != len(voices):
        raise ConfigError(f"{file}: voices holds a name twice: {voices!r}")
    limits = (("max_text_tokens", 1), ("max_frames", 1), ("seed", 0), ("max_tail_frames", 1))
    for key, least in limits:
        value = spec.get(key, least)  # only the optional max_tail_frames may be missing here
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{file}: {key} must be an int >= {least}, got {value!r}")
    if spec.get("layout", "prefix") not in LAYOUTS:
        raise ConfigError(f"{file}: layout must be one of {LAYOUTS}, got {spec['layout']!r}")
    if spec.get("text_units", "characters") not in TEXT_UNITS:
        raise ConfigError(
            f"{file}: text_units must be one of {TEXT_UNITS}, got {spec['text_units']!r}"
        )
    if spec.get("text_units") == "phones" and not (directory / LEXICON_FILE).is_file():
        raise ConfigError(f"{file}: text_units 'phones' needs {directory / LEXICON_FILE}")
    if not isinstance(spec["sampling"], dict):
        raise ConfigError(f"{file}: sampling must be an object of Sampling arguments")
    return spec


def _tokenizer_info(path: Path) -> tuple[int, frozenset[int]]:
    """(number of ids, the unknown-token ids) of a ``tokenizer.json``; the engine has parsed it
    already, so only its id layout is read here."""
    try:
        tokenizer = json.loads(path.read_text(encoding="utf-8"))
        model = tokenizer.get("model") or {}
        vocab = model.get("vocab") or {}
        ids = list(range(len(vocab))) if isinstance(vocab, list) else list(vocab.values())
        ids += [t["id"] for t in tokenizer.get("added_tokens") or []]
        unknown = set()
        if isinstance(model.get("unk_id"), int):  # Unigram
            unknown.add(model["unk_id"])
        if isinstance(vocab, dict) and model.get("unk_token") in vocab:
            unknown.add(vocab[model["unk_token"]])
        return max(ids, default=-1) + 1, frozenset(unknown)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"cannot read the token ids of {path}: {err}") from err


def _check_models(
    codec: Codec, lm: SpeechLM, lm_dir: Path, n_voices: int, where: str
) -> frozenset[int]:
    """Check that the LM's streams are the docs/tts.md layout for this codec and these voices;
    returns the tokenizer's unknown-token ids."""
    if codec.channels != 1:
        raise ConfigError(f"{where}: the codec must be mono, it has {codec.channels} channels")
    streams = json.loads(lm.config_json)["streams"]
    q = len(streams) - 1
    if not 1 <= q <= codec.num_codebooks:
        raise ConfigError(
            f"{where}: the LM has {q} audio streams but the codec {codec.num_codebooks} "
            "codebooks (the LM needs one text stream and 1..num_codebooks audio streams)"
        )
    if lm.end_stream != 1:
        raise ConfigError(f"{where}: the LM's end_stream must be 1 (audio0), got {lm.end_stream}")
    if not lm.has_tokenizer:
        raise ConfigError(f"{where}: the LM directory {lm_dir} holds no tokenizer.json")
    num_ids, unknown = _tokenizer_info(lm_dir / "tokenizer.json")
    text_offset = VOICE_OFFSET + n_voices
    c = codec.codebook_size
    expected = [
        {
            "role": "text",
            "vocab_size": text_offset + num_ids,
            "pad_id": PAD,
            "bos_id": BOS,
            "eos_id": EOS,
            "text_offset": text_offset,
        }
    ] + [{"role": "audio", "vocab_size": c + 3, "eos_id": c, "pad_id": c + 1, "bos_id": c + 2}] * q
    why = {
        "text": f"4 specials + {n_voices} voices + {num_ids} tokenizer ids",
        "audio": f"codebook_size {c} + eos, pad, bos",
    }
    for k, (stream, want) in enumerate(zip(streams, expected, strict=True)):
        for key, value in want.items():
            got = stream.get(key, 0 if key == "text_offset" else None)
            if got != value:
                raise ConfigError(
                    f"{where}: LM stream {k} ({stream.get('name')!r}) {key} is {got!r}, the "
                    f"pipeline needs {value!r} ({why[want['role']]})"
                )
    return unknown


def _audio_sampling(
    kwargs: dict[str, Any], codec: Codec, q: int, eos: bool = True
) -> list[Sampling]:
    """Per-stream sampling: the text stream only pads; the audio streams use ``pipeline.json``'s
    ``sampling``, restricted to codes (and, with ``eos``, EOS for the end stream, audio0) unless
    it names its own ``allowed_tokens``."""
    c = codec.codebook_size
    allowed = [list(range(c + int(eos)))] + [list(range(c))] * (q - 1)
    try:
        audio = [Sampling(**({"allowed_tokens": ids} | kwargs)) for ids in allowed]
    except (TypeError, InputError) as err:
        raise ConfigError(f"pipeline.json sampling: {err}") from err
    return [Sampling(allowed_tokens=[PAD], temperature=0.0), *audio]
