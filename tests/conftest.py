"""Shared fixtures: random-weight PyTorch twins exported to model directories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from speechinfer_training.codec import Codec as TwinCodec
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import SpeechLM as TwinLM

SMALL_CODEC = {
    "n_filters": 8,
    "ratios": [4, 2],
    "dimension": 16,
    "num_codebooks": 4,
    "codebook_size": 64,
}


def random_codec(config: dict, seed: int = 0) -> TwinCodec:
    """A twin with random weights and random (not EMA-initialised) codebooks."""
    torch.manual_seed(seed)
    model = TwinCodec(config).eval()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(".codebook"):
                buf.copy_(torch.randn_like(buf) * 0.5)
    return model


def random_lm(config: dict, seed: int = 0) -> TwinLM:
    """A twin with random weights large enough to make attention and norms non-trivial."""
    torch.manual_seed(seed)
    model = TwinLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif "embeddings" in name:
                param.normal_(0.0, 1.0)
            else:
                param.normal_(0.0, 1.5 / param.shape[1] ** 0.5)
    return model


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """The twins run on one thread: faster on 2 cores beside the engine's own threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _exporter(tmp_path: Path, build: Callable, prefix: str) -> Callable:
    counter = iter(range(1000))

    def make(config: dict, seed: int = 0):
        model = build(config, seed)
        path = tmp_path / f"{prefix}{next(counter)}"
        save_pretrained(model, path)
        return model, path

    return make


@pytest.fixture
def export_codec(tmp_path: Path) -> Callable[..., tuple[TwinCodec, Path]]:
    """Build a random codec twin from a config, export it, return (twin, model directory)."""
    return _exporter(tmp_path, random_codec, "codec")


@pytest.fixture
def export_lm(tmp_path: Path) -> Callable[..., tuple[TwinLM, Path]]:
    """Build a random LM twin from a config, export it, return (twin, model directory)."""
    return _exporter(tmp_path, random_lm, "lm")


def chirp_signal(seconds: float, batch: int, seed: int, rate: int) -> np.ndarray:
    """Deterministic test audio: AM-modulated chirps (one per batch item) plus a little noise."""
    n = int(seconds * rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    rows = []
    for b in range(batch):
        chirp = np.sin(2 * np.pi * (110 * (b + 1) * t + 400 * t**2))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (2 + b) * t)
        rows.append(0.4 * chirp * envelope + 0.05 * rng.standard_normal(n))
    return np.stack(rows).astype(np.float32)
