"""TTS data on the training side of ``docs/tts.md``: text, LM config, grids and token shards.

* :func:`make_char_tokenizer` writes the character-level ``tokenizer.json`` the pipeline's LM
  carries; :func:`normalize_text` turns text into what it accepts.
* :func:`tts_lm_config` is the LM config of the TTS grid (a ``text`` stream, then one ``audio``
  stream per codebook); :func:`utterance_grid` is the frame grid of one utterance, exactly the
  table of ``docs/tts.md``.
* :func:`tokenize_corpus` encodes a corpus (``speechinfer_training.corpus``) with the Rust engine
  into token shards: ``OUT/{train,heldout}.safetensors``, ``OUT/tokenizer.json`` and
  ``OUT/meta.json``. Command line: ``python -m speechinfer_training.tts_data --manifest
  CORPUS/manifest.jsonl --codec CODEC_DIR --out SHARDS [--num-codebooks Q] [--batch-size 16]``.

Shard tensors (per split, utterances in manifest order): ``codes`` ``[Q, ΣF]`` (int16 when the
codebook fits, else int32), ``code_offsets`` ``[n + 1]``, ``text`` ``[ΣL]`` (tokenizer ids, *not*
offset into the text stream), ``text_offsets`` ``[n + 1]``, ``voice`` ``[n]`` (index into
``meta.json`` ``voices``); the metadata key ``ids`` holds the utterance ids as a JSON list.
"""

import argparse
import hashlib
import json
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from speechinfer.phonemes import PHONE_IDS
from speechinfer.textnorm import spoken_form
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from torch import Tensor

from .corpus import SPLITS, read_manifest, resample, write_atomic
from .lm import resolve_lm_config
from .lm_blocks import NO_INPUT
from .patterns import Delay, Layout, Parallel, flatten

CHARACTERS = "abcdefghijklmnopqrstuvwxyz '-,.!?;:"
"""The tokenizer's characters; tokenizer id ``i`` is ``CHARACTERS[i]``."""

TEXT_PAD, TEXT_BOS, TEXT_EOS, TEXT_SEP = 0, 1, 2, 3
NUM_TEXT_SPECIALS = 4
"""Text stream ids ``0..3``; voice ``v`` is ``NUM_TEXT_SPECIALS + v``."""

TTS_PATTERNS = ("delay", "parallel", "flatten", "depth")
TEXT_LAYOUTS = ("prefix", "aligned")
"""``prefix``: the text before the speech; ``aligned``: each word's characters at its audio."""
TEXT_UNITS = ("characters", "phones")
"""What the text stream reads: characters of the text, or the phones spoken (``aligned`` only)."""
DEFAULT_LEAD = 12
"""Frames the text stream runs ahead of the audio in the ``aligned`` layout."""
MAX_TEXT_TOKENS = 64
MAX_FRAMES = 400
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
PARTS_DIR = "parts"
PART_SIZE = 256
SHARD_FORMAT = 1

# ----------------------------------------------------------------------------------------------
# Text


def make_char_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """Return the character tokenizer (lower-casing, one token per character of CHARACTERS).

    Written to ``path`` (a ``tokenizer.json``) when given. It has no unknown token: a character
    outside :data:`CHARACTERS` fails to encode (callers check with :func:`normalize_text`).
    """
    vocab = {c: i for i, c in enumerate(CHARACTERS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(path))
    return tokenizer


def make_phone_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """Return the phone tokenizer: id ``i`` is ``PHONES[i]``; written to ``path`` if given.

    Its input is phones separated by spaces (``speechinfer.phonemes.Phonemizer.phones`` joined).
    """
    tokenizer = Tokenizer(models.WordLevel(vocab=PHONE_IDS))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(path))
    return tokenizer


def place_phones(phones: Sequence[Sequence[Any]], frame_rate: float) -> tuple[list[int], list[int]]:
    """Return the tokenizer ids and frames of the ``aligned`` layout's phones.

    ``phones`` are ``[phone, start seconds]`` (``alignment.py``); each phone takes the frame where
    it starts, or the one after the previous phone's when that is later. Raises ``ValueError``
    naming a phone outside :data:`PHONES`.
    """
    ids, frames = [], []
    cursor = -1
    for phone, start in phones:
        if phone not in PHONE_IDS:
            raise ValueError(f"unknown phone {phone!r}")
        cursor = max(int(float(start) * frame_rate), cursor + 1)
        ids.append(PHONE_IDS[phone])
        frames.append(cursor)
    return ids, frames


def normalize_text(text: str) -> str:
    """Return ``text`` as the tokenizer takes it: lower case, numbers in words, one space.

    Curly quotes become straight ones, double quotes are dropped (not spoken), digits are spelled
    out (``3.5`` → ``three point five``), whitespace is collapsed. Raises ``ValueError`` naming
    the first remaining character outside :data:`CHARACTERS`, or when no letter is left.
    """
    text = spoken_form(text)
    for char in text:
        if char not in CHARACTERS:
            raise ValueError(f"unsupported character {char!r} in {text!r}")
    if not any(c.isalpha() for c in text):
        raise ValueError(f"text has no letters: {text!r}")
    return text


def char_ids(text: str) -> list[int]:
    """Tokenizer ids (not offset) of ``normalize_text(text)``, one per character."""
    return [CHARACTERS.index(c) for c in normalize_text(text)]


# ----------------------------------------------------------------------------------------------
# LM config and grids


def audio_delays(pattern: str, num_codebooks: int, lead: int = 0) -> list[int]:
    """Audio stream delays: ``lead + [0 .. Q-1]`` under ``"delay"``, else ``lead`` (text: 0)."""
    base = list(range(num_codebooks)) if pattern == "delay" else [0] * num_codebooks
    return [lead + d for d in base]


def tts_lm_config(
    voices: Sequence[str],
    codebook_size: int,
    num_codebooks: int,
    pattern: str = "delay",
    *,
    tokenizer_size: int = len(CHARACTERS),
    max_text_tokens: int = MAX_TEXT_TOKENS,
    max_frames: int = MAX_FRAMES,
    layout: str = "prefix",
    lead: int = DEFAULT_LEAD,
    **sizes: Any,
) -> dict[str, Any]:
    """Return the resolved LM config of the TTS grid (``docs/tts.md``).

    Stream 0 ``text``: vocabulary ``4 + n_voices + tokenizer_size`` (pad 0, bos 1, eos 2, sep 3,
    voices, then tokenizer ids at ``text_offset = 4 + n_voices``), delay 0. Streams ``audio{q}``:
    vocabulary ``C + 3`` (eos ``C``, pad ``C+1``, bos ``C+2``), delays per :func:`audio_delays`
    (``lead`` added under the ``aligned`` layout, which needs ``"delay"`` and ``lead >= 1``).
    ``end_stream`` 1. ``sizes`` are further LM config keys (``d_model``, ``n_layers``, ...); a
    missing ``max_context`` is the steps of the longest grid the pipeline may run: a
    ``max_text_tokens``-token prompt continued by ``max_frames`` frames (``prefix``), or the
    voice frame, ``max_frames`` frames and the EOS frame (``aligned``).
    """
    if pattern not in TTS_PATTERNS:
        raise ValueError(f"pattern must be one of {TTS_PATTERNS}, got {pattern!r}")
    if layout not in TEXT_LAYOUTS:
        raise ValueError(f"layout must be one of {TEXT_LAYOUTS}, got {layout!r}")
    if layout == "aligned" and (pattern != "delay" or lead < 1):
        raise ValueError("the aligned layout needs pattern 'delay' and lead >= 1")
    n_voices = len(voices)
    if n_voices < 1 or len(set(voices)) != n_voices:
        raise ValueError(f"voices must be a non-empty list of distinct names, got {voices!r}")
    if codebook_size < 1 or num_codebooks < 1 or tokenizer_size < 1:
        raise ValueError("codebook_size, num_codebooks and tokenizer_size must be positive")
    offset = NUM_TEXT_SPECIALS + n_voices
    text = {
        "name": "text",
        "role": "text",
        "vocab_size": offset + tokenizer_size,
        "pad_id": TEXT_PAD,
        "bos_id": TEXT_BOS,
        "eos_id": TEXT_EOS,
        "delay": 0,
        "text_offset": offset,
    }
    c = codebook_size
    audio = [
        {
            "name": f"audio{q}",
            "role": "audio",
            "vocab_size": c + 3,
            "pad_id": c + 1,
            "bos_id": c + 2,
            "eos_id": c,
            "delay": delay,
            "text_offset": 0,
        }
        for q, delay in enumerate(
            audio_delays(pattern, num_codebooks, lead if layout == "aligned" else 0)
        )
    ]
    streams = [text, *audio]
    if sizes.get("max_context") is None:
        frames = max_frames + 2 if layout == "aligned" else max_text_tokens + 2 + max_frames
        sizes["max_context"] = grid_steps(pattern, [s["delay"] for s in streams], frames) - 1
    return resolve_lm_config({**sizes, "streams": streams, "pattern": pattern, "end_stream": 1})


def grid_steps(pattern: str, delays: Sequence[int], num_frames: int) -> int:
    """Return the steps ``S`` (step 0 included) of a ``num_frames``-frame grid under ``pattern``."""
    if pattern == "flatten":
        kind: Any = flatten(len(delays))
    elif pattern in ("delay", "depth"):
        kind = Delay(tuple(delays))
    else:
        kind = Parallel()
    return Layout(kind, len(delays), num_frames).num_steps


def utterance_grid(
    voice_index: int,
    text_ids: Sequence[int] | Tensor | np.ndarray,
    codes: Tensor | np.ndarray,
    codebook_size: int,
) -> Tensor:
    """Return the frame grid int64 ``[1 + Q, L + 3 + F]`` of one utterance (``docs/tts.md``).

    ``text_ids`` are text-stream ids (tokenizer ids plus ``text_offset``, as
    ``si.SpeechLM.tokenize`` returns them); ``codes`` ``[Q, F]``. Frame 0: voice token, audio
    ``-1``; frames ``1..L``: text, audio ``-1``; ``L+1``: sep, audio ``-1``; ``L+2..L+1+F``: pad,
    codes; ``L+2+F``: pad, audio eos ``= codebook_size``.
    """
    text = torch.as_tensor(np.asarray(text_ids, dtype=np.int64)).reshape(-1)
    codes = torch.as_tensor(np.asarray(codes)).long()
    if codes.dim() != 2:
        raise ValueError(f"codes must be [Q, F], got {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size})")
    if voice_index < 0:
        raise ValueError(f"voice_index must be >= 0, got {voice_index}")
    if text.numel() and text.min() <= NUM_TEXT_SPECIALS + voice_index:
        raise ValueError("text ids must be text-stream ids (tokenizer ids + text_offset)")
    q_n, f_n = codes.shape
    l_n = text.numel()
    grid = torch.full((1 + q_n, l_n + 3 + f_n), NO_INPUT, dtype=torch.int64)
    grid[0, 0] = NUM_TEXT_SPECIALS + voice_index
    grid[0, 1 : l_n + 1] = text
    grid[0, l_n + 1] = TEXT_SEP
    grid[0, l_n + 2 :] = TEXT_PAD
    grid[1:, l_n + 2 : l_n + 2 + f_n] = codes
    grid[1:, l_n + 2 + f_n] = codebook_size
    return grid


def place_characters(words: Sequence[str], start_frames: Sequence[int]) -> list[int]:
    """Frame of every character of ``" ".join(words)`` in the ``aligned`` layout.

    Word ``i`` and the space after it take one frame per character from ``start_frames[i]`` on,
    or right after the previous character when that one is later (a fast word pushes the next).
    """
    if len(words) != len(start_frames):
        raise ValueError("one start frame per word")
    frames: list[int] = []
    cursor = -1
    for i, (word, start) in enumerate(zip(words, start_frames, strict=True)):
        for j in range(len(word) + (i < len(words) - 1)):
            cursor = max(int(start) + j, cursor + 1)
            frames.append(cursor)
    return frames


def aligned_grid(
    voice_index: int,
    text_ids: Sequence[int] | Tensor | np.ndarray,
    char_frames: Sequence[int],
    codes: Tensor | np.ndarray,
    codebook_size: int,
) -> Tensor:
    """Return the ``aligned``-layout grid int64 ``[1 + Q, F + 2]`` of one utterance (docs/tts.md).

    Frame 0: voice token, audio ``-1``. Frames ``1..F``: codes; text ``pad`` except character
    ``i`` (text-stream id ``text_ids[i]``) at frame ``1 + char_frames[i]`` and the text ``eos``
    one frame after the last character. Frame ``F + 1``: text ``pad``, audio ``eos``. Raises
    ``ValueError`` when the characters do not end before the last audio frame.
    """
    text = np.asarray(text_ids, dtype=np.int64).reshape(-1)
    frames = np.asarray(char_frames, dtype=np.int64).reshape(-1)
    codes_t = torch.as_tensor(np.asarray(codes)).long()
    if codes_t.dim() != 2:
        raise ValueError(f"codes must be [Q, F], got {tuple(codes_t.shape)}")
    f_n = codes_t.shape[1]
    if len(text) != len(frames) or not len(text):
        raise ValueError("one frame per character, at least one character")
    if np.any(np.diff(frames) <= 0) or frames[0] < 0 or frames[-1] > f_n - 2:
        raise ValueError(f"characters must take increasing frames in [0, {f_n - 2}]")
    grid = utterance_grid(voice_index, [], codes_t, codebook_size)
    grid = torch.cat([grid[:, :1], grid[:, 2:]], dim=1)  # drop the prefix layout's sep frame
    grid[0, 1 + torch.from_numpy(frames)] = torch.from_numpy(text)
    grid[0, 2 + frames[-1]] = TEXT_EOS
    return grid


def text_less(grid: Tensor) -> Tensor:
    """Return the ``aligned``-layout grid with its text taken away.

    Voice, then ``pad`` beside the audio: the unconditional input of classifier-free guidance and
    of text-less scoring.
    """
    out = grid.clone()
    out[0, 1:] = TEXT_PAD
    return out


@dataclass(frozen=True)
class TextDropout:
    """Training-grid augmentation: with probability ``rate`` a grid is fed text-less.

    Its text stream is then not scored: the model learns speech alone, for guidance and scoring.

    The draw depends only on ``(seed, step, index)``: runs resume and split across processes
    without changing it.
    """

    rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"text dropout must be in [0, 1), got {self.rate}")

    def dropped(self, step: int, index: int) -> bool:
        """Whether grid ``index`` goes text-less at ``step``."""
        return bool(np.random.default_rng([self.seed, step, index]).random() < self.rate)

    def __call__(self, grid: Tensor, step: int, index: int) -> tuple[Tensor, Tensor]:
        """Return (inputs, targets) of one grid."""
        if not self.dropped(step, index):
            return grid, grid
        targets = grid.clone()
        targets[0, 1:] = NO_INPUT
        return text_less(grid), targets


def prompt_grid(voice_index: int, text_ids: Sequence[int], num_codebooks: int) -> Tensor:
    """Return the synthesis prompt: frames ``0 .. L + 1`` of :func:`utterance_grid`."""
    codes = torch.zeros(num_codebooks, 0, dtype=torch.int64)
    return utterance_grid(voice_index, text_ids, codes, 1)[:, : len(text_ids) + 2]


# ----------------------------------------------------------------------------------------------
# Token shards


@dataclass
class Utterance:
    """One tokenized utterance of a shard."""

    id: str
    voice: int
    text: np.ndarray  # tokenizer ids [L], int64
    codes: np.ndarray  # [Q, F], int64


def read_meta(shards: str | Path) -> dict[str, Any]:
    """Return ``meta.json`` of a finished shard directory."""
    meta = json.loads((Path(shards) / META_FILE).read_text())
    if not meta.get("complete"):
        raise ValueError(f"{shards} holds unfinished shards; rerun tokenize_corpus")
    return meta


def load_split(shards: str | Path, split: str) -> list[Utterance]:
    """Read the utterances of one split (``train`` or ``heldout``) of a shard directory."""
    return read_shard(Path(shards) / f"{split}.safetensors")


def read_shard(path: Path) -> list[Utterance]:
    """Read the utterances of one shard file."""
    tensors = load_file(str(path))
    with safe_open(str(path), "np") as handle:
        ids = json.loads(handle.metadata()["ids"])
    co, to = tensors["code_offsets"], tensors["text_offsets"]
    return [
        Utterance(
            ids[i],
            int(tensors["voice"][i]),
            tensors["text"][to[i] : to[i + 1]].astype(np.int64),
            tensors["codes"][:, co[i] : co[i + 1]].astype(np.int64),
        )
        for i in range(len(ids))
    ]


def _write_shard(path: Path, items: list[Utterance], num_codebooks: int, dtype: Any) -> None:
    codes = [u.codes for u in items] or [np.zeros((num_codebooks, 0), np.int64)]
    texts = [u.text for u in items] or [np.zeros(0, np.int64)]
    tensors = {
        "codes": np.ascontiguousarray(np.concatenate(codes, 1).astype(dtype)),
        "code_offsets": np.cumsum([0] + [u.codes.shape[1] for u in items]).astype(np.int64),
        "text": np.concatenate(texts).astype(np.int32),
        "text_offsets": np.cumsum([0] + [len(u.text) for u in items]).astype(np.int64),
        "voice": np.array([u.voice for u in items], dtype=np.int64),
    }
    part = path.with_name(path.name + ".part")
    save_file(tensors, str(part), metadata={"ids": json.dumps([u.id for u in items])})
    part.replace(path)


def _read_wave(path: Path, sample_rate: int) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = resample(mono.astype(np.float64), int(rate), sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def encode_waves(codec: Any, waves: list[np.ndarray], num_codebooks: int) -> list[np.ndarray]:
    """Encode ``waves`` with the engine's ``si.Codec`` in one zero-padded batch.

    The codec is causal, so frame ``f`` of a wave does not see the padding: each result
    ``[num_codebooks, ceil(T / hop)]`` equals the wave encoded alone.
    """
    longest = max(len(w) for w in waves)
    batch = np.zeros((len(waves), max(longest, 1)), dtype=np.float32)
    for i, wave in enumerate(waves):
        batch[i, : len(wave)] = wave
    codes = np.asarray(codec.encode(batch))
    hop = codec.hop_length
    return [codes[i, :num_codebooks, : math.ceil(len(w) / hop)] for i, w in enumerate(waves)]


def _fingerprint(manifest: Path, codec_dir: Path, num_codebooks: int) -> str:
    digest = hashlib.sha256(f"{SHARD_FORMAT}:{num_codebooks}:{CHARACTERS}".encode())
    for path in (manifest, codec_dir / "config.json", codec_dir / "model.safetensors"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def tokenize_corpus(
    manifest: str | Path,
    codec_dir: str | Path,
    out_dir: str | Path,
    num_codebooks: int | None = None,
    batch_size: int = 16,
    verbose: bool = False,
) -> Path:
    """Encode a corpus into token shards in ``out_dir`` with the engine's codec; return it.

    Text is normalised (:func:`normalize_text`) and stored as tokenizer ids; audio is read,
    resampled to the codec rate if needed and encoded in batches of ``batch_size`` utterances of
    similar length, keeping the first ``num_codebooks`` codebooks (default: all). Work is written
    in parts of :data:`PART_SIZE` utterances, so an interrupted run resumes where it stopped; a
    finished directory is returned as is. A directory made from another manifest, codec or
    ``num_codebooks`` is an error.
    """
    import speechinfer as si  # the engine; only needed to tokenize

    manifest = Path(manifest)
    manifest = manifest / "manifest.jsonl" if manifest.is_dir() else manifest
    codec_dir, out = Path(codec_dir).resolve(), Path(out_dir)
    codec = si.Codec.load(codec_dir)
    q_n = codec.num_codebooks if num_codebooks is None else num_codebooks
    if not 1 <= q_n <= codec.num_codebooks:
        raise ValueError(f"num_codebooks must be in [1, {codec.num_codebooks}], got {q_n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if codec.channels != 1:
        raise ValueError("tokenize_corpus needs a mono codec")
    fingerprint = _fingerprint(manifest, codec_dir, q_n)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META_FILE
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("fingerprint") != fingerprint:
            raise ValueError(f"{out} holds shards of another corpus, codec or num_codebooks")
        if old.get("complete"):
            return out
    entries = read_manifest(manifest)
    if not entries:
        raise ValueError(f"{manifest} lists no utterance")
    voices = list(dict.fromkeys(e["voice"] for e in entries))
    dtype = np.int16 if codec.codebook_size <= 2**15 else np.int32
    meta: dict[str, Any] = {
        "format": SHARD_FORMAT,
        "fingerprint": fingerprint,
        "complete": False,
        "manifest": str(manifest.resolve()),
        "codec_dir": str(codec_dir),
        "voices": voices,
        "codebook_size": codec.codebook_size,
        "num_codebooks": q_n,
        "sample_rate": codec.sample_rate,
        "frame_rate": codec.frame_rate,
        "tokenizer": TOKENIZER_FILE,
        "tokenizer_size": len(CHARACTERS),
        "splits": {},
    }
    write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    make_char_tokenizer(out / TOKENIZER_FILE)
    parts = out / PARTS_DIR
    parts.mkdir(exist_ok=True)
    for split in SPLITS:
        chosen = [e for e in entries if e.get("split", "train") == split]
        paths = []
        for start in range(0, len(chosen), PART_SIZE):
            path = parts / f"{split}-{start // PART_SIZE:05d}.safetensors"
            paths.append(path)
            if path.exists():
                continue
            chunk = chosen[start : start + PART_SIZE]
            items = _tokenize_chunk(chunk, manifest.parent, codec, q_n, voices, batch_size)
            _write_shard(path, items, q_n, dtype)
            if verbose:
                print(f"{split}: {start + len(chunk)}/{len(chosen)} utterances", file=sys.stderr)
        items = [u for path in paths for u in read_shard(path)]
        _write_shard(out / f"{split}.safetensors", items, q_n, dtype)
        frames = sum(u.codes.shape[1] for u in items)
        meta["splits"][split] = {"utterances": len(items), "frames": frames}
    meta["complete"] = True
    write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(parts)
    return out


def _tokenize_chunk(
    chunk: list[dict[str, Any]],
    root: Path,
    codec: Any,
    num_codebooks: int,
    voices: list[str],
    batch_size: int,
) -> list[Utterance]:
    items: list[Utterance | None] = [None] * len(chunk)
    order = sorted(range(len(chunk)), key=lambda i: (chunk[i].get("duration", 0.0), i))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        waves = []
        for i in batch:
            path = Path(chunk[i]["path"])
            waves.append(_read_wave(path if path.is_absolute() else root / path, codec.sample_rate))
        for i, codes in zip(batch, encode_waves(codec, waves, num_codebooks), strict=True):
            entry = chunk[i]
            try:
                ids = np.array(char_ids(entry["text"]), dtype=np.int64)
            except ValueError as error:
                raise ValueError(f"utterance {entry.get('id')}: {error}") from None
            uid = f"{entry.get('id', i)}:{entry['voice']}"
            items[i] = Utterance(uid, voices.index(entry["voice"]), ids, codes.astype(np.int64))
    return [u for u in items if u is not None]


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point of :func:`tokenize_corpus`."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.tts_data", description=tokenize_corpus.__doc__
    )
    parser.add_argument("--manifest", type=Path, required=True, help="corpus manifest.jsonl")
    parser.add_argument("--codec", type=Path, required=True, help="codec model directory")
    parser.add_argument("--out", type=Path, required=True, help="shard directory")
    parser.add_argument("--num-codebooks", type=int, default=None, help="default: all")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    out = tokenize_corpus(
        args.manifest, args.codec, args.out, args.num_codebooks, args.batch_size, verbose=True
    )
    print(json.dumps(read_meta(out)["splits"]))


if __name__ == "__main__":
    main()
