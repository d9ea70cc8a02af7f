"""Codebook patterns as gather indices: the Python copy of ``crates/core/src/pattern.rs``.

A pattern turns a token grid ``[K streams, T frames]`` into the ``[K, S]`` sequence of LM steps
(audiocraft's ``codebooks_patterns.py`` conventions, verified against ``reference/patterns.md``):
step 0 is all-special, logits at step ``s`` predict step ``s + 1``, and a position that holds no
frame holds the stream's special token. Both sides compute the same indices, so the engine and
training lay tokens out identically.
"""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

SPECIAL = -1
"""Index value of a position that holds no frame."""


@dataclass(frozen=True)
class Parallel:
    """All K tokens of frame ``t`` at step ``t + 1``."""


@dataclass(frozen=True)
class Delay:
    """Stream ``k`` shifted right by ``delays[k]``; the first ``flatten_first`` frames flattened."""

    delays: tuple[int, ...]
    flatten_first: int = 0


@dataclass(frozen=True)
class Unroll:
    """Frame ``t`` of stream ``k`` at step ``1 + t * n + flattening[k]``, ``n = max + 1``."""

    flattening: tuple[int, ...]


@dataclass(frozen=True)
class CoarseFirst:
    """All of stream 0 first, then streams ``1..K`` in parallel."""


PatternKind = Parallel | Delay | Unroll | CoarseFirst


def flatten(num_streams: int) -> Unroll:
    """Full per-frame flattening."""
    return Unroll(tuple(range(num_streams)))


class Layout:
    """A pattern instantiated for ``num_streams`` streams and ``num_frames`` frames.

    ``indices[k, s]`` is the frame of stream ``k`` at step ``s`` (``SPECIAL`` for none);
    ``first_step[k, t]`` the step holding frame ``t`` of stream ``k``.
    """

    def __init__(self, kind: PatternKind, num_streams: int, num_frames: int) -> None:
        if num_streams < 1:
            raise ValueError("pattern needs at least one stream")
        if num_frames < 1:
            raise ValueError("pattern needs at least one frame")
        self.kind = kind
        self.num_streams = k_n = num_streams
        self.num_frames = t_n = num_frames
        places = _placements(kind, k_n, t_n)
        self.num_steps = _num_steps(kind, k_n, t_n)
        indices = torch.full((k_n, self.num_steps), SPECIAL, dtype=torch.int64)
        first_step = torch.full((k_n, t_n), -1, dtype=torch.int64)
        for k, t, s in places:
            indices[k, s] = t
            first_step[k, t] = s
        self.indices = indices
        self.first_step = first_step

    def apply(self, grid: Tensor, special: Sequence[int]) -> Tensor:
        """Lay ``grid`` ``[..., K, T]`` out as steps ``[..., K, S]``.

        ``special`` holds one id per stream, used where no frame sits.
        """
        if tuple(grid.shape[-2:]) != (self.num_streams, self.num_frames):
            raise ValueError(
                f"grid must end in [{self.num_streams}, {self.num_frames}], got {tuple(grid.shape)}"
            )
        index = self.indices.clamp(min=0).expand(*grid.shape[:-1], self.num_steps)
        steps = torch.gather(grid, -1, index.to(grid.device))
        fill = torch.as_tensor(list(special), dtype=grid.dtype, device=grid.device)[:, None]
        return torch.where(self.indices.to(grid.device) >= 0, steps, fill.expand_as(steps))

    def revert(self, steps: Tensor) -> Tensor:
        """Read the grid ``[..., K, T]`` back from the full step sequence ``[..., K, S]``."""
        if tuple(steps.shape[-2:]) != (self.num_streams, self.num_steps):
            raise ValueError(
                f"steps must end in [{self.num_streams}, {self.num_steps}], "
                f"got {tuple(steps.shape)}"
            )
        index = self.first_step.expand(*steps.shape[:-1], self.num_frames)
        return torch.gather(steps, -1, index.to(steps.device))


def _num_steps(kind: PatternKind, k_n: int, t_n: int) -> int:
    """``S``, the number of steps (step 0 included), exactly as the engine computes it."""
    match kind:
        case Delay(delays, f):
            return 1 + k_n * min(t_n, f) + max(0, t_n + max(delays) - f)
        case Unroll(flattening):
            return 1 + t_n * (flattening[-1] + 1)
        case CoarseFirst() if k_n > 1:
            return 1 + 2 * t_n
    return 1 + t_n


def _placements(kind: PatternKind, k_n: int, t_n: int) -> list[tuple[int, int, int]]:
    """Every ``(stream, frame, step)`` of the layout."""
    match kind:
        case Parallel():
            return [(k, t, t + 1) for k in range(k_n) for t in range(t_n)]
        case Delay(delays, flatten_first):
            if len(delays) != k_n:
                raise ValueError(f"delays: expected length {k_n}, got {len(delays)}")
            flat = min(t_n, flatten_first)
            places = [(k, t, 1 + t * k_n + k) for t in range(flat) for k in range(k_n)]
            base = 1 + flat * k_n
            for s in range(base, base + max(0, t_n + max(delays) - flatten_first)):
                t = flatten_first + (s - base)
                for k, d in enumerate(delays):
                    if flatten_first <= t - d < t_n:
                        places.append((k, t - d, s))
            return places
        case Unroll(flattening):
            if len(flattening) != k_n:
                raise ValueError(f"flattening: expected length {k_n}, got {len(flattening)}")
            ok = flattening[0] == 0 and all(
                b - a in (0, 1) for a, b in itertools.pairwise(flattening)
            )
            if not ok:
                raise ValueError(f"flattening {flattening} must start at 0 and grow by 0 or 1")
            inner = flattening[-1] + 1
            return [(k, t, 1 + t * inner + f) for k, f in enumerate(flattening) for t in range(t_n)]
        case CoarseFirst():
            places = [(0, t, 1 + t) for t in range(t_n)]
            places += [(k, t, 1 + t_n + t) for k in range(1, k_n) for t in range(t_n)]
            return places
    raise ValueError(f"unknown pattern {kind!r}")
