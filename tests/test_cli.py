"""`speechinfer codec encode/decode` on real WAV files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import SMALL_CODEC


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "speechinfer.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def speech_wav(path: Path) -> Path:
    """Real synthetic speech from flite when installed, else a harmonic tone at 16 kHz."""
    if shutil.which("flite"):
        subprocess.run(
            ["flite", "-voice", "slt", "-t", "Hello there.", "-o", str(path)], check=True
        )
    else:
        t = np.arange(8000) / 16000
        wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)
        soundfile.write(path, wave.astype(np.float32), 16000)
    return path


@pytest.fixture
def model_dir(export_codec) -> Path:
    return export_codec(SMALL_CODEC)[1]


def test_encode_then_decode(tmp_path: Path, model_dir: Path) -> None:
    wav = speech_wav(tmp_path / "in.wav")
    codes_path, out_path = tmp_path / "codes.npy", tmp_path / "out.wav"
    enc = run_cli(
        "codec", "encode", str(wav), "-o", str(codes_path), "--checkpoint", str(model_dir)
    )
    assert enc.returncode == 0, enc.stderr
    codes = np.load(codes_path)
    frames = -(-soundfile.info(wav).frames // 8)
    assert codes.shape == (1, 4, frames) and codes.dtype == np.int64

    dec = run_cli(
        "codec", "decode", str(codes_path), "-o", str(out_path), "--checkpoint", str(model_dir)
    )
    assert dec.returncode == 0, dec.stderr
    audio, rate = soundfile.read(out_path)
    assert rate == 16000 and audio.shape == (frames * 8,)


def test_wrong_rate_is_resampled_or_refused(tmp_path: Path, model_dir: Path) -> None:
    wav = tmp_path / "44k.wav"
    t = np.arange(44100) / 44100
    soundfile.write(wav, (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 44100)
    out = tmp_path / "codes.npy"
    ok = run_cli("codec", "encode", str(wav), "-o", str(out), "--checkpoint", str(model_dir))
    assert ok.returncode == 0, ok.stderr
    assert np.load(out).shape[-1] == 16000 // 8  # one second at the codec's rate

    refused = run_cli(
        "codec", "encode", str(wav), "-o", str(out), "--checkpoint", str(model_dir), "--no-resample"
    )
    assert refused.returncode == 2
    assert "44100 Hz but the codec expects 16000 Hz" in refused.stderr


def test_bad_codes_file_is_a_clear_error(tmp_path: Path, model_dir: Path) -> None:
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((1, 4, 3), 999))
    res = run_cli(
        "codec", "decode", str(bad), "-o", str(tmp_path / "x.wav"), "--checkpoint", str(model_dir)
    )
    assert res.returncode == 2
    assert "code 999 is out of range" in res.stderr
    assert "Traceback" not in res.stderr


def test_unreadable_audio(tmp_path: Path, model_dir: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio")
    res = run_cli(
        "codec", "encode", str(junk), "-o", str(tmp_path / "c.npy"), "--checkpoint", str(model_dir)
    )
    assert res.returncode == 2
    assert "cannot read audio file" in res.stderr
