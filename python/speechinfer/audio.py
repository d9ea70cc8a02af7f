"""Reading and writing audio files for the CLI: WAV (and whatever libsndfile reads)."""

from __future__ import annotations

import math
from os import PathLike

import numpy as np
import soundfile
from numpy.typing import NDArray

from speechinfer.errors import InputError


def resample(wave: NDArray[np.float32], source_rate: int, target_rate: int) -> NDArray[np.float32]:
    """Polyphase resampling along the last axis (anti-aliased), e.g. 44.1 kHz → 16 kHz."""
    if source_rate == target_rate:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(source_rate, target_rate)
    out = resample_poly(wave, target_rate // g, source_rate // g, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def read_audio(
    path: str | PathLike[str], sample_rate: int, channels: int = 1, allow_resample: bool = True
) -> NDArray[np.float32]:
    """Read a sound file as float32 ``[channels, T]`` at ``sample_rate``.

    A file at another rate is resampled (or refused when ``allow_resample`` is false); a stereo
    file read for a mono codec is averaged to mono.
    """
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise InputError(f"cannot read audio file {path}: {err}") from err
    wave = np.ascontiguousarray(data.T)
    if wave.shape[1] == 0:
        raise InputError(f"audio file {path} holds no samples")
    if wave.shape[0] != channels:
        if channels == 1:
            wave = wave.mean(axis=0, keepdims=True)
        else:
            raise InputError(f"{path} has {wave.shape[0]} channels, the codec expects {channels}")
    if rate != sample_rate:
        if not allow_resample:
            raise InputError(
                f"{path} is sampled at {rate} Hz but the codec expects {sample_rate} Hz "
                "(allow resampling or convert the file)"
            )
        wave = resample(wave, rate, sample_rate)
    return wave


def write_audio(path: str | PathLike[str], wave: NDArray[np.float32], sample_rate: int) -> None:
    """Write float32 ``[T]`` or ``[channels, T]`` audio as a 16-bit PCM WAV (clipped to ±1)."""
    wave = np.asarray(wave, dtype=np.float32)
    frames = wave if wave.ndim == 1 else wave.T
    try:
        soundfile.write(str(path), np.clip(frames, -1.0, 1.0), sample_rate, subtype="PCM_16")
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise InputError(f"cannot write audio file {path}: {err}") from err
