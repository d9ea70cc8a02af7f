"""Shared fixtures: random-weight PyTorch twins exported to model directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from speechinfer_training.codec import Codec as TwinCodec
from speechinfer_training.export import save_pretrained

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


@pytest.fixture
def export_codec(tmp_path: Path) -> Callable[..., tuple[TwinCodec, Path]]:
    """Build a random twin from a config, export it, return (twin, model directory)."""
    counter = iter(range(1000))

    def make(config: dict, seed: int = 0) -> tuple[TwinCodec, Path]:
        model = random_codec(config, seed)
        path = tmp_path / f"codec{next(counter)}"
        save_pretrained(model, path)
        return model, path

    return make
