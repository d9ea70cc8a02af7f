"""Training audio: random fixed-length segments from wav files or a JSONL manifest, in batches."""

import json
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from torch import Tensor

AUDIO_SUFFIXES = (".wav", ".flac")
RESAMPLE_MARGIN = 256


class AudioSource(Protocol):
    """Anything that yields random float32 segments ``[channels, num_samples]``."""

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """Draw one segment using ``rng`` only."""
        ...


def list_audio_files(source: str | Path) -> list[Path]:
    """Return the audio files of a directory (recursive, sorted) or of a ``.jsonl`` manifest.

    Manifest lines are JSON objects with a ``path`` field, relative paths being relative to the
    manifest's directory.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    elif source.suffix == ".jsonl":
        files = []
        for number, line in enumerate(source.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            entry: dict[str, Any] = json.loads(line)
            if "path" not in entry:
                raise ValueError(f"{source}:{number}: manifest entry has no 'path' field")
            path = Path(entry["path"])
            files.append(path if path.is_absolute() else source.parent / path)
    else:
        raise ValueError(f"{source} is neither a directory nor a .jsonl manifest")
    if not files:
        raise ValueError(f"no audio files found in {source}")
    return files


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Convert ``audio`` ``[frames, file_channels]`` to ``[channels, frames]``.

    Mono targets get the channel mean; mono files are copied to every target channel.
    """
    if channels == 1:
        return audio.mean(axis=1, keepdims=True).T
    if audio.shape[1] == channels:
        return audio.T
    if audio.shape[1] == 1:
        return np.repeat(audio.T, channels, axis=0)
    raise ValueError(f"cannot map {audio.shape[1]} file channels to {channels}")


class AudioFileSource:
    """Random segments from audio files, files drawn in proportion to their duration.

    Segments are read straight from disk, resampled with ``scipy.signal.resample_poly`` when the
    file rate differs, and zero-padded at the end when the file is shorter than a segment.
    """

    def __init__(self, files: list[Path], sample_rate: int, channels: int = 1) -> None:
        self.files = files
        self.sample_rate = sample_rate
        self.channels = channels
        infos = [sf.info(str(path)) for path in files]
        self.frames = np.array([info.frames for info in infos], dtype=np.int64)
        self.rates = [int(info.samplerate) for info in infos]
        durations = self.frames / np.array(self.rates, dtype=np.float64)
        if durations.sum() <= 0:
            raise ValueError("all audio files are empty")
        self.weights = durations / durations.sum()

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """Return a float32 segment ``[channels, num_samples]`` from a random file and offset."""
        index = int(rng.choice(len(self.files), p=self.weights))
        rate, frames = self.rates[index], int(self.frames[index])
        needed = math.ceil(num_samples * rate / self.sample_rate)
        start = int(rng.integers(0, max(frames - needed, 0) + 1))
        if rate == self.sample_rate:
            segment = self._read(index, start, start + needed)
        else:
            segment = self._read_resampled(index, start, needed, rate)
        segment = segment[:, :num_samples]
        if segment.shape[1] < num_samples:
            segment = np.pad(segment, ((0, 0), (0, num_samples - segment.shape[1])))
        return segment.astype(np.float32)

    def _read(self, index: int, start: int, stop: int) -> np.ndarray:
        audio, _ = sf.read(
            str(self.files[index]), start=start, stop=stop, dtype="float32", always_2d=True
        )
        return match_channels(audio, self.channels)

    def _read_resampled(self, index: int, start: int, needed: int, rate: int) -> np.ndarray:
        read_start = max(start - RESAMPLE_MARGIN, 0)
        audio = self._read(index, read_start, start + needed + RESAMPLE_MARGIN)
        divisor = math.gcd(self.sample_rate, rate)
        resampled = resample_poly(audio, self.sample_rate // divisor, rate // divisor, axis=1)
        offset = round((start - read_start) * self.sample_rate / rate)
        return resampled[:, offset:]


class SegmentBatcher:
    """Deterministic batches ``[batch_size, channels, segment_samples]`` from an audio source.

    All randomness comes from one seeded NumPy generator whose state is checkpointed.
    """

    def __init__(
        self, source: AudioSource, batch_size: int, segment_samples: int, seed: int
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        self.segment_samples = segment_samples
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> Tensor:
        """Draw the next batch."""
        segments = [
            self.source.sample(self.rng, self.segment_samples) for _ in range(self.batch_size)
        ]
        return torch.from_numpy(np.stack(segments))

    def state_dict(self) -> dict[str, Any]:
        """Return the generator state."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
