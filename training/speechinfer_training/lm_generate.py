"""Greedy generation of the LM twin with the EOS rules of ``docs/lm.md``.

The twin is slow and simple: every step column is resolved from a full recompute of the model on
the steps before it. A position is *forced* (a prompt token, a special, ``-1``, or an EOS-forced
token) or *to generate* (``argmax`` of the logits, first index on ties); a column's positions are
resolved in stream order (for ``"depth"`` each generated token is fed to the next depth position).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .patterns import Layout, Parallel

if TYPE_CHECKING:
    from .lm import SpeechLM


class EosRule:
    """Per-sequence EOS state: the frame ``t_e`` at which ``end_stream`` generated its ``eos_id``.

    Once ``t_e`` is known, frame ``t_e`` of every other stream is forced to its ``eos_id`` (else
    ``pad_id``; a stream with neither keeps generating) and every frame ``> t_e`` to the stream's
    fill token ``pad_id`` (else ``eos_id``, else ``bos_id``).
    """

    def __init__(self, config: Mapping[str, Any], batch: int, enabled: bool) -> None:
        streams: Sequence[Mapping[str, Any]] = config["streams"]
        self.end_stream: int = config["end_stream"]
        self.end_eos: int | None = streams[self.end_stream]["eos_id"] if enabled else None
        self.at_end = [s["eos_id"] if s["eos_id"] is not None else s["pad_id"] for s in streams]
        self.fill = [
            next(i for i in (s["pad_id"], s["eos_id"], s["bos_id"]) if i is not None)
            for s in streams
        ]
        self.t_e: list[int | None] = [None] * batch

    def forced(self, b: int, k: int, t: int) -> int | None:
        """Return the token EOS forces at frame ``t`` of stream ``k`` in sequence ``b``, if any."""
        t_e = self.t_e[b]
        if t_e is None or t < t_e:
            return None
        if t > t_e:
            return self.fill[k]
        return None if k == self.end_stream else self.at_end[k]

    def observe(self, b: int, k: int, t: int, token: int) -> None:
        """Note a *generated* token; the end stream's first ``eos_id`` fixes ``t_e``."""
        if self.end_eos is None or k != self.end_stream or self.t_e[b] is not None:
            return
        if token == self.end_eos:
            self.t_e[b] = t

    def finish(self, grid: Tensor, b: int | None = None) -> Tensor:
        """Give every frame after ``t_e`` of ``grid`` ``[B, K, T]`` the fill token; return it.

        This is the result rule "its remaining frames hold that fill token": it also covers
        positions resolved before the EOS was seen (a stream with a smaller delay than the end
        stream). Positions of frame ``t_e`` keep what they were resolved to (forced when resolved
        after the EOS). ``b`` limits this to one sequence; the grid is changed in place.
        """
        for item in range(grid.shape[0]) if b is None else [b]:
            t_e = self.t_e[item]
            if t_e is not None:
                for k in range(grid.shape[1]):
                    grid[item, k, t_e + 1 :] = self.fill[k]
        return grid


def _pad_frames(prompt: Tensor, max_frames: int) -> Tensor:
    b, k_n, _ = prompt.shape
    return torch.cat([prompt.long(), prompt.new_zeros(b, k_n, max_frames).long()], -1)


def generate_stepwise(
    model: SpeechLM, prompt: Tensor, max_frames: int, stop_on_eos: bool
) -> Tensor:
    """Greedy generation for the patterns read by one causal LM over K streams.

    ``"parallel"``, ``"delay"``, ``"flatten"`` and ``"depth"``; ``prompt`` ``[B, K, T]`` →
    ``[B, K, T + max_frames]``.
    """
    b_n, k_n, t_n = prompt.shape
    layout = model.layout(t_n + max_frames)
    model.check_context(layout.num_steps - 1)
    steps = layout.apply(_pad_frames(prompt, max_frames), model.special_ids)
    frames = layout.indices.tolist()  # frame of stream k at step s (-1: special)
    eos = EosRule(model.config, b_n, stop_on_eos)
    depth = model.config["pattern"] == "depth"
    for s in range(1, layout.num_steps):
        if all(frames[k][s] < t_n for k in range(k_n)):
            continue  # nothing to generate in this column
        if depth:
            hidden = model.main_hidden(steps[..., :s])[:, -1]
        else:
            logits = model(steps[..., :s])
        for k in range(k_n):
            t = frames[k][s]
            if t < t_n:
                continue  # prompt token or special: forced by the layout
            if depth:
                assert model.depth is not None
                picks = model.depth.column_logits(hidden, steps[:, :, s], k).argmax(-1)
            else:
                picks = logits[k][:, -1].argmax(-1)
            for b in range(b_n):
                forced = eos.forced(b, k, t)
                if forced is not None:
                    steps[b, k, s] = forced
                else:
                    steps[b, k, s] = picks[b]
                    eos.observe(b, k, t, int(picks[b]))
    return eos.finish(layout.revert(steps))


def generate_coarse_first(
    model: SpeechLM, prompt: Tensor, max_frames: int, stop_on_eos: bool
) -> Tensor:
    """Greedy generation for ``"coarse_first"``: the AR fills stream 0, then NAR stages 1..K-1.

    Every stage fills frames ``>= T`` of its stream with ``P = T``, all from the same forward.
    """
    b_n, k_n, t_n = prompt.shape
    total = t_n + max_frames
    model.check_context(total)
    grid = _pad_frames(prompt, max_frames)
    eos = EosRule(model.config, b_n, stop_on_eos)
    layout = Layout(Parallel(), 1, total)
    steps = layout.apply(grid[:, :1], model.special_ids[:1])
    for s in range(t_n + 1, layout.num_steps):
        t = s - 1
        picks = model(steps[..., :s])[0][:, -1].argmax(-1)
        for b in range(b_n):
            forced = eos.forced(b, 0, t)
            if forced is not None:
                steps[b, 0, s] = forced
            else:
                steps[b, 0, s] = picks[b]
                eos.observe(b, 0, t, int(picks[b]))
    grid[:, :1] = layout.revert(steps)
    for j in range(1, k_n):
        picks = model.nar_logits(grid, j, t_n).argmax(-1)  # [B, T + N]
        for b in range(b_n):
            ended = eos.t_e[b] is not None
            for t in range(t_n, total):
                forced = eos.forced(b, j, t)
                if forced is not None:
                    grid[b, j, t] = forced
                else:
                    grid[b, j, t] = picks[b, t]
                    eos.observe(b, j, t, int(picks[b, t]))
            if not ended and eos.t_e[b] is not None:
                eos.finish(grid, b)  # the later stages read the ended grid
    return eos.finish(grid)
