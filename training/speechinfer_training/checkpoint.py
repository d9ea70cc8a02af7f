"""Resumable training checkpoints: model (with EMA statistics), optimizer, step and RNG states."""

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import SegmentBatcher


def save_checkpoint(
    path: Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batcher: SegmentBatcher,
    extra: dict[str, Any],
) -> None:
    """Atomically write everything needed to continue training after ``step`` to ``path``.

    ``extra`` entries (plain Python values) are stored alongside and returned by
    :func:`read_checkpoint`.
    """
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "batcher": batcher.state_dict(),
        "torch_rng": torch.get_rng_state(),
        **extra,
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_checkpoint(
    state: dict[str, Any],
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batcher: SegmentBatcher,
) -> int:
    """Restore ``model``, ``optimizer``, ``batcher`` and the torch RNG; return the saved step."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    batcher.load_state_dict(state["batcher"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])
