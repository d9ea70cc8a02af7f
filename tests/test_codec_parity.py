"""The engine reproduces the PyTorch twin: identical codes, audio within 1e-4 relative."""

from __future__ import annotations

import numpy as np
import pytest
import speechinfer as si
import torch

CONFIGS = {
    "small": {
        "n_filters": 8,
        "ratios": [4, 2],
        "dimension": 16,
        "num_codebooks": 4,
        "codebook_size": 64,
    },
    "three-level-two-units": {
        "n_filters": 8,
        "ratios": [5, 4, 2],
        "n_residual_layers": 2,
        "dimension": 32,
        "num_codebooks": 8,
        "codebook_size": 128,
        "last_kernel_size": 3,
    },
    "stereo-odd-kernels": {
        "channels": 2,
        "n_filters": 4,
        "ratios": [3, 2],
        "kernel_size": 5,
        "residual_kernel_size": 5,
        "dimension": 8,
        "num_codebooks": 3,
        "codebook_size": 32,
        "compress": 4,
    },
    "default": {},
}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def twin_wave(wave: np.ndarray, channels: int) -> torch.Tensor:
    t = torch.from_numpy(wave)
    return t[:, None] if channels == 1 else t


@pytest.mark.parametrize("name", list(CONFIGS))
def test_codes_and_audio_match_twin(export_codec, name: str) -> None:
    twin, path = export_codec(CONFIGS[name], seed=len(name))
    codec = si.Codec.load(path)
    cfg = twin.config
    hop = int(np.prod(cfg["ratios"]))
    rng = np.random.default_rng(1)
    batch, samples = 3, 7 * hop + hop // 2 + 1  # not a multiple of the hop
    shape = (batch, samples) if cfg["channels"] == 1 else (batch, cfg["channels"], samples)
    wave = (rng.standard_normal(shape) * 0.3).astype(np.float32)

    codes = codec.encode(wave)
    with torch.no_grad():
        expected = twin.encode(twin_wave(wave, cfg["channels"])).numpy()
    assert codes.dtype == np.int64
    assert codes.shape == (batch, cfg["num_codebooks"], 8)
    np.testing.assert_array_equal(codes, expected)

    for q in sorted({1, cfg["num_codebooks"] // 2 or 1, cfg["num_codebooks"]}):
        audio = codec.decode(codes[:, :q])
        with torch.no_grad():
            ref = twin.decode(torch.from_numpy(codes[:, :q])).numpy()
        ref = ref[:, 0] if cfg["channels"] == 1 else ref
        assert audio.dtype == np.float32
        assert audio.shape == ref.shape
        assert rel_err(audio, ref) < 1e-4, f"q={q}"


def test_properties(export_codec) -> None:
    _, path = export_codec(CONFIGS["small"])
    codec = si.Codec.load(path)
    assert codec.sample_rate == 16000
    assert codec.hop_length == 8
    assert codec.frame_rate == pytest.approx(2000.0)
    assert codec.num_codebooks == 4
    assert codec.codebook_size == 64
    assert codec.channels == 1
    assert "Codec(" in repr(codec)


def test_one_dimensional_wave_is_batch_of_one(export_codec) -> None:
    _, path = export_codec(CONFIGS["small"])
    codec = si.Codec.load(path)
    wave = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    np.testing.assert_array_equal(codec.encode(wave), codec.encode(wave[None]))


def test_strided_input_is_read_correctly(export_codec) -> None:
    _, path = export_codec(CONFIGS["small"])
    codec = si.Codec.load(path)
    wave = np.random.default_rng(0).standard_normal((4, 200)).astype(np.float32)
    np.testing.assert_array_equal(codec.encode(wave[::2]), codec.encode(wave[::2].copy()))
    codes = codec.encode(wave)
    fortran = np.asfortranarray(codes)
    np.testing.assert_array_equal(codec.decode(fortran), codec.decode(codes))


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.int8])
def test_any_integer_code_dtype(export_codec, dtype) -> None:
    _, path = export_codec(CONFIGS["small"])
    codec = si.Codec.load(path)
    codes = np.random.default_rng(0).integers(0, 64, (2, 4, 5))
    np.testing.assert_array_equal(codec.decode(codes.astype(dtype)), codec.decode(codes))
