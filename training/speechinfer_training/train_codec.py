"""Train the codec on CPU and export it for the engine.

``python -m speechinfer_training.train_codec --data DIR_OR_MANIFEST --out OUTDIR --steps N``
(or ``--synthetic`` instead of ``--data``). Writes ``OUTDIR/log.jsonl`` (one line per step),
``OUTDIR/checkpoint.pt`` (every ``--checkpoint-every`` steps and at the end; ``--resume``
continues from it) and, at the end, the engine checkpoint ``OUTDIR/model``. Runs are
deterministic given ``--seed``, across resumes included.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .checkpoint import read_checkpoint, restore_checkpoint, save_checkpoint
from .codec import Codec, resolve_codec_config
from .data import AudioFileSource, AudioSource, SegmentBatcher, list_audio_files
from .export import STORAGE_DTYPES, StorageDtype, save_pretrained
from .losses import ReconstructionLoss
from .rvq import EmaSettings
from .synthetic import SyntheticSource

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
MODEL_DIR = "model"


@dataclass(frozen=True)
class TrainOptions:
    """Everything a training run depends on; mirrors the command-line flags."""

    out: Path
    steps: int
    data: Path | None = None
    synthetic: bool = False
    config: Path | None = None
    batch_size: int = 8
    segment_seconds: float = 1.0
    lr: float = 3e-4
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 500
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0
    commitment_weight: float = 1.0
    l1_weight: float = 1.0
    mel_weight: float = 1.0
    quantizer_dropout: float = 0.0
    grad_clip: float = 1.0
    export_dtype: StorageDtype = "float32"
    print_every: int = 50
    threads: int = 0
    freeze_encoder: bool = False

    def __post_init__(self) -> None:
        if (self.data is None) == (not self.synthetic):
            raise ValueError("give exactly one of data and synthetic")
        if self.steps < 0 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps must be >= 0, batch_size and checkpoint_every >= 1")
        if self.segment_seconds <= 0 or self.lr <= 0:
            raise ValueError("segment_seconds and lr must be positive")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ValueError("quantizer_dropout must be in [0, 1]")


def parse_args(argv: Sequence[str] | None = None) -> TrainOptions:
    """Parse command-line flags into :class:`TrainOptions`."""
    defaults = TrainOptions(out=Path(), steps=0, synthetic=True)
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.train_codec", description=__doc__
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data",
        type=Path,
        help="directory of .wav/.flac files or .jsonl manifest with a 'path' field",
    )
    source.add_argument(
        "--synthetic", action="store_true", help="train on generated tones, chirps and noise"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--steps", type=int, required=True, help="total optimizer steps")
    parser.add_argument(
        "--config", type=Path, help="JSON file with codec config keys (docs/codec.md)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt if present"
    )
    parser.add_argument(
        "--export-dtype", choices=sorted(STORAGE_DTYPES), default=defaults.export_dtype
    )
    parser.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the decoder only: encoder and codebooks stay as they are, so codes made "
        "with this codec (token shards, a TTS LM trained on them) stay valid",
    )
    fixed = {"out", "steps", "data", "synthetic", "config", "resume", "export_dtype"}
    for field in fields(TrainOptions):
        if field.name in fixed | {"freeze_encoder"}:
            continue
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(
            flag, type=type(field.default), default=field.default, help=f"default {field.default}"
        )
    namespace = parser.parse_args(argv)
    try:
        return TrainOptions(**vars(namespace))
    except ValueError as error:
        parser.error(str(error))


def build_source(options: TrainOptions, sample_rate: int, channels: int) -> AudioSource:
    """Return the synthetic or file-backed audio source the options ask for."""
    if options.synthetic:
        return SyntheticSource(sample_rate, channels)
    assert options.data is not None
    return AudioFileSource(list_audio_files(options.data), sample_rate, channels)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (by a run that stopped before checkpointing)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in kept))


def codec_config(options: TrainOptions, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    """Return the codec config: from ``--config``, else the checkpoint's, else the defaults."""
    requested = json.loads(options.config.read_text()) if options.config else None
    if checkpoint is None:
        return resolve_codec_config(requested)
    saved = checkpoint["codec_config"]
    if requested is not None and resolve_codec_config(requested) != saved:
        raise ValueError("--config differs from the config of the checkpoint being resumed")
    return saved


def train(options: TrainOptions) -> Path:
    """Run (or resume) training as ``options`` say; return the exported model directory."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path, log_path = out / CHECKPOINT_FILE, out / LOG_FILE
    checkpoint = (
        read_checkpoint(checkpoint_path) if options.resume and checkpoint_path.exists() else None
    )
    if options.resume and checkpoint is None:
        print(f"no checkpoint at {checkpoint_path}; starting from scratch", file=sys.stderr)

    if options.threads > 0:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    ema = EmaSettings(decay=options.ema_decay, dead_code_threshold=options.dead_code_threshold)
    model = Codec(codec_config(options, checkpoint), ema=ema).train()
    criterion = ReconstructionLoss(model.sample_rate, options.l1_weight, options.mel_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, betas=(0.5, 0.9))
    segment_samples = max(1, round(options.segment_seconds * model.frame_rate)) * model.hop_length
    source = build_source(options, model.sample_rate, model.channels)
    batcher = SegmentBatcher(source, options.batch_size, segment_samples, options.seed)

    step = 0
    if checkpoint is not None:
        step = restore_checkpoint(checkpoint, model=model, optimizer=optimizer, batcher=batcher)
        truncate_log(log_path, step)
    else:
        log_path.unlink(missing_ok=True)
    if options.freeze_encoder:
        model.encoder.requires_grad_(False)
        model.quantizer.eval()  # no EMA codebook updates
    extra = {
        "codec_config": model.config,
        "options": {k: str(v) for k, v in asdict(options).items()},
    }

    with log_path.open("a") as log:
        while step < options.steps:
            step += 1
            record = train_step(model, criterion, optimizer, batcher.next_batch(), options)
            record = {"step": step, **record}
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % options.print_every == 0 or step == options.steps:
                print(json.dumps(record), flush=True)
            if step % options.checkpoint_every == 0 or step == options.steps:
                save_checkpoint(
                    checkpoint_path,
                    step=step,
                    model=model,
                    optimizer=optimizer,
                    batcher=batcher,
                    extra=extra,
                )
    return save_pretrained(model.eval(), out / MODEL_DIR, dtype=options.export_dtype)


def train_step(
    model: Codec,
    criterion: ReconstructionLoss,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    options: TrainOptions,
) -> dict[str, float]:
    """Run one optimizer step on ``batch``; return the logged values."""
    num_codebooks = model.num_codebooks
    if options.quantizer_dropout > 0 and torch.rand(()) < options.quantizer_dropout:
        num_codebooks = int(torch.randint(1, model.num_codebooks + 1, ()))
    recon, _, losses = model(batch, num_codebooks)
    reconstruction = criterion(recon, batch)
    loss = reconstruction + options.commitment_weight * losses["commitment"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if options.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
    optimizer.step()
    return {
        "loss": loss.item(),
        "reconstruction": reconstruction.item(),
        "commitment": losses["commitment"].item(),
        "num_codebooks": num_codebooks,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    print(f"exported {train(parse_args(argv))}")


if __name__ == "__main__":
    main()
