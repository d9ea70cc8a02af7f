"""The training loop shared by the token-grid LMs (``train_tts``, ``train_text_lm``).

A dataset is a list of int64 frame grids ``[K, T_i]`` (``-1`` = no input). Each step draws a
global batch of grids (epoch shuffles from one seeded NumPy generator), pads them with ``-1`` to
the longest, lays them out with the model's pattern (special = bos ids) and minimises the
cross-entropy of every non ``-1`` token of frames ``>= 1`` — the targets of ``SpeechLM.score`` —
each stream's tokens weighted by ``stream_weights``.

Runs alone or under ``torchrun`` (``WORLD_SIZE > 1``: gloo process group, DistributedDataParallel
on CPU). Every rank draws the same global batch and takes the slice ``rank::world``; the loss is
normalised by the *global* weighted token count, so the gradients equal those of one process
on the whole batch. Rank 0 writes ``log.jsonl`` and ``checkpoint.pt``; runs are deterministic
given the seed, across resumes included.
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint
from .lm import SpeechLM
from .lm_blocks import NO_INPUT
from .train_codec import truncate_log

Augment = Callable[[Tensor, int, int], tuple[Tensor, Tensor]]
"""``(grid, step, index) -> (inputs, targets)``: one training grid as fed and as scored."""

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
ROLES = ("audio", "text")


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """Optimisation settings shared by the LM trainers (command-line flags of the same names)."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 50
    cosine: bool = False
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 100
    print_every: int = 50
    threads: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps must be >= 0, batch_size and checkpoint_every >= 1")
        if self.eval_every < 1 or self.print_every < 1 or self.warmup < 0:
            raise ValueError("eval_every and print_every must be >= 1, warmup >= 0")
        if self.lr <= 0:
            raise ValueError("lr must be positive")


def add_option_flags(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """Add ``--flag`` for every field of dataclass ``cls`` not in ``skip`` (bools: store_true)."""
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action="store_true", help=f"default {field.default}")
        else:
            kind = type(field.default) if field.default is not None else str
            parser.add_argument(
                flag, type=kind, default=field.default, help=f"default {field.default}"
            )


def loop_options(namespace: argparse.Namespace) -> LoopOptions:
    """Pick the :class:`LoopOptions` fields out of parsed flags."""
    names = {f.name for f in dataclasses.fields(LoopOptions)}
    return LoopOptions(**{k: v for k, v in vars(namespace).items() if k in names})


# ----------------------------------------------------------------------------------------------
# Distributed


@dataclasses.dataclass(frozen=True)
class Dist:
    """A process's place in the run: rank and world size (1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that writes)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world > 1:
            torch_dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Sum ``values`` over the ranks (float64)."""
        if self.world == 1:
            return [float(v) for v in values]
        tensor = torch.tensor(list(values), dtype=torch.float64)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()


def init_distributed() -> Dist:
    """Join the ``torchrun`` process group (gloo) when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("gloo")
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size())


# ----------------------------------------------------------------------------------------------
# Batches and loss


class GridBatcher:
    """Indices of the next global batch: epochs of a seeded permutation, state checkpointed."""

    def __init__(self, num_items: int, batch_size: int, seed: int) -> None:
        if num_items < 1:
            raise ValueError("no training grids")
        self.num_items, self.batch_size = num_items, batch_size
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []
        self.position = 0

    def next_indices(self) -> list[int]:
        """Draw the next ``batch_size`` indices (a new shuffle whenever an epoch ends)."""
        out = []
        while len(out) < self.batch_size:
            if self.position >= len(self.order):
                self.order = self.rng.permutation(self.num_items).tolist()
                self.position = 0
            out.append(self.order[self.position])
            self.position += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        """Return the generator state, permutation and position."""
        return {"rng": self.rng.bit_generator.state, "order": self.order, "pos": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
        self.order, self.position = list(state["order"]), int(state["pos"])


def pad_grids(grids: Sequence[Tensor]) -> Tensor:
    """Stack grids ``[K, T_i]`` into ``[B, K, max T]``, padding the ends with ``-1``."""
    longest = max(g.shape[-1] for g in grids)
    out = torch.full((len(grids), grids[0].shape[0], longest), NO_INPUT, dtype=torch.int64)
    for i, grid in enumerate(grids):
        out[i, :, : grid.shape[-1]] = grid
    return out


def target_counts(grid: Tensor) -> Tensor:
    """Scored tokens per stream (non ``-1`` of frames ``>= 1``) of ``grid`` ``[B, K, T]``."""
    return (grid[:, :, 1:] != NO_INPUT).sum((0, 2))


def stream_losses(
    model: nn.Module, core: SpeechLM, grid: Tensor, targets: Tensor | None = None
) -> Tensor:
    """Return the summed cross-entropy ``[K]`` per stream of the scored tokens of ``grid``.

    ``model`` is what is called (``core`` or its DDP wrapper); ``core`` gives the layout.
    ``targets`` (default ``grid``) are the tokens scored: ``-1`` where ``grid`` is input only.
    """
    layout = core.layout(grid.shape[-1])
    steps = layout.apply(grid, core.special_ids)
    logits = model(steps if core.config["pattern"] == "depth" else steps[..., :-1])
    sums = []
    for k, stream_logits in enumerate(logits):
        rows = stream_logits[:, layout.first_step[k, 1:] - 1]
        target = (grid if targets is None else targets)[:, k, 1:]
        sums.append(
            F.cross_entropy(
                rows.reshape(-1, rows.shape[-1]),
                target.reshape(-1),
                ignore_index=NO_INPUT,
                reduction="sum",
            )
        )
    return torch.stack(sums)


def role_summary(
    prefix: str, roles: Sequence[str], sums: Sequence[float], counts: Sequence[float]
) -> dict[str, float]:
    """``{prefix + role + "_loss": mean CE per token}`` for each role present."""
    out = {}
    for role in ROLES:
        total = sum(s for s, r in zip(sums, roles, strict=True) if r == role)
        count = sum(c for c, r in zip(counts, roles, strict=True) if r == role)
        if count > 0:
            out[f"{prefix}{role}_loss"] = total / count
    return out


@torch.no_grad()
def evaluate(
    core: SpeechLM, grids: Sequence[Tensor], roles: Sequence[str], dist: Dist, batch_size: int
) -> dict[str, float]:
    """Mean heldout CE per scored token of each role, over every grid (split across ranks)."""
    was_training = core.training
    core.eval()
    k_n = len(roles)
    sums, counts = [0.0] * k_n, [0.0] * k_n
    mine = list(grids)[dist.rank :: dist.world]
    mine.sort(key=lambda g: g.shape[-1])
    for start in range(0, len(mine), batch_size):
        grid = pad_grids(mine[start : start + batch_size])
        losses = stream_losses(core, core, grid).tolist()
        tokens = target_counts(grid).tolist()
        sums = [a + b for a, b in zip(sums, losses, strict=True)]
        counts = [a + b for a, b in zip(counts, tokens, strict=True)]
    totals = dist.sum([*sums, *counts])
    core.train(was_training)
    return role_summary("heldout_", roles, totals[:k_n], totals[k_n:])


def learning_rate(options: LoopOptions, step: int) -> float:
    """Linear warm-up over ``warmup`` steps, then constant (or cosine to 10 % with ``cosine``)."""
    lr = options.lr * min(1.0, step / options.warmup) if options.warmup else options.lr
    if options.cosine and step > options.warmup:
        progress = (step - options.warmup) / max(1, options.steps - options.warmup)
        lr *= 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return lr


def make_optimizer(model: nn.Module, options: LoopOptions) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not norms)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": options.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=options.lr, betas=(0.9, 0.95))


# ----------------------------------------------------------------------------------------------
# The loop


def read_resume_state(out: Path, resume: bool) -> dict[str, Any] | None:
    """Return ``OUT/checkpoint.pt`` to resume from when ``resume`` and it exists."""
    path = out / CHECKPOINT_FILE
    if not resume:
        return None
    if not path.exists():
        print(f"no checkpoint at {path}; starting from scratch", file=sys.stderr)
        return None
    return read_checkpoint(path)


def train_grids(
    model: SpeechLM,
    train: Sequence[Tensor],
    heldout: Sequence[Tensor],
    stream_weights: Sequence[float],
    roles: Sequence[str],
    options: LoopOptions,
    out: Path,
    dist: Dist,
    checkpoint: dict[str, Any] | None,
    extra: dict[str, Any],
    on_step: Callable[[dict[str, Any]], None] | None = None,
    augment: Augment | None = None,
) -> SpeechLM:
    """Train ``model`` on ``train`` grids for ``options.steps`` steps; return it (eval mode).

    ``checkpoint`` (from :func:`read_resume_state`) resumes a run; ``extra`` is stored in the
    checkpoint (plain values). Heldout losses are logged every ``eval_every`` steps and at the end.
    ``augment(grid, step, index)`` turns a training grid into (inputs, targets) for one step.
    """
    if dist.world > 1 and options.batch_size < dist.world:
        raise ValueError(f"batch_size {options.batch_size} < {dist.world} processes")
    model.train()
    optimizer = make_optimizer(model, options)
    batcher = GridBatcher(len(train), options.batch_size, options.seed)
    log_path = out / LOG_FILE
    step = 0
    if checkpoint is not None:
        step = restore_checkpoint(checkpoint, model=model, optimizer=optimizer, batcher=batcher)
        if dist.main:
            truncate_log(log_path, step)
    elif dist.main:
        log_path.unlink(missing_ok=True)
    dist.barrier()
    wrapped: nn.Module = DistributedDataParallel(model) if dist.world > 1 else model
    weights = torch.tensor(list(stream_weights), dtype=torch.float32)
    log = log_path.open("a") if dist.main else None
    try:
        while step < options.steps:
            step += 1
            started = time.perf_counter()
            lr = learning_rate(options, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            indices = batcher.next_indices()[dist.rank :: dist.world]
            if augment is None:
                grid = targets = pad_grids([train[i] for i in indices])
            else:
                pairs = [augment(train[i], step, i) for i in indices]
                grid = pad_grids([inputs for inputs, _ in pairs])
                targets = pad_grids([scored for _, scored in pairs])
            counts = target_counts(targets).double()
            global_counts = dist.sum(counts.tolist())
            denominator = max(1e-9, float((weights.double() * torch.tensor(global_counts)).sum()))
            sums = stream_losses(wrapped, model, grid, targets)
            loss = (sums * weights).sum() / denominator * dist.world
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if options.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            optimizer.step()
            totals = dist.sum(sums.detach().tolist())
            audio = [c for c, r in zip(global_counts, roles, strict=True) if r == "audio"]
            record: dict[str, Any] = {
                "step": step,
                "loss": float((weights.double() * torch.tensor(totals)).sum()) / denominator,
                **role_summary("", roles, totals, global_counts),
                "lr": lr,
                "audio_tokens": int(sum(audio)),
            }
            record["step_s"] = time.perf_counter() - started
            if step % options.eval_every == 0 or step == options.steps:
                started = time.perf_counter()
                record.update(evaluate(model, heldout, roles, dist, options.batch_size))
                record["eval_s"] = time.perf_counter() - started
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
                if step % options.print_every == 0 or step == options.steps:
                    print(json.dumps(record), flush=True)
            if on_step is not None:
                on_step(record)
            if step % options.checkpoint_every == 0 or step == options.steps:
                if dist.main:
                    save_checkpoint(
                        out / CHECKPOINT_FILE,
                        step=step,
                        model=model,
                        optimizer=optimizer,
                        batcher=batcher,  # type: ignore[arg-type]
                        extra=extra,
                    )
                dist.barrier()
    finally:
        if log is not None:
            log.close()
    return model.eval()


def read_log(path: Path) -> list[dict[str, Any]]:
    """Return the records of a ``log.jsonl``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
