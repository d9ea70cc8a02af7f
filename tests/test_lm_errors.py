"""Bad inputs and bad checkpoints for SpeechLM give typed errors that name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from safetensors.torch import load_file, save_file
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import SpeechLM as TwinLM
from speechinfer_training.lm import small_config


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_pretrained(TwinLM(small_config(max_context=40)), tmp_path / "lm")


@pytest.fixture
def lm(model_dir: Path) -> si.SpeechLM:
    return si.SpeechLM.load(model_dir)


def grid(batch: int = 1, streams: int = 2, frames: int = 4, dtype=np.int64) -> np.ndarray:
    return np.ones((batch, streams, frames), dtype=dtype)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (grid(dtype=np.float32), "must be an integer array"),
        (grid().tolist(), "must be a numpy array"),
        (grid()[0], "must be 3-D"),
        (grid(streams=3), "has 3 streams"),
        (grid(frames=0), "is empty"),
        (grid(batch=0), "is empty"),
        (grid() * 40, "outside stream 0"),
        (grid() * -3, "= -3 is outside"),
    ],
)
def test_bad_grids(lm: si.SpeechLM, value: object, message: str) -> None:
    for call in (lm.score, lm.logits, lambda g: lm.generate(g, 2)):
        with pytest.raises(si.InputError, match=message):
            call(value)


def test_token_error_names_stream_and_vocab(lm: si.SpeechLM) -> None:
    g = grid()
    g[0, 1, 2] = 24  # stream 1 has vocab 24
    with pytest.raises(si.InputError, match=r"grid\[0, 1, 2\] = 24 .*audio1.*\[0, 24\)"):
        lm.score(g)
    with pytest.raises(ValueError):  # InputError is a ValueError
        lm.score(g)


def test_context_limits(lm: si.SpeechLM) -> None:
    # delays [0, 1]: T + N frames need T + N + 1 positions; max_context is 40.
    assert lm.generate(grid(frames=4), 35).shape == (1, 2, 39)
    with pytest.raises(si.InputError, match="max_context"):
        lm.generate(grid(frames=4), 36)
    with pytest.raises(si.InputError, match="max_context"):
        lm.generate(grid(frames=4), 10**12)
    with pytest.raises(si.InputError, match="max_context is 40"):
        lm.logits(grid(frames=41))
    with pytest.raises(si.InputError, match="max_context"):
        lm.score(grid(frames=40))
    with pytest.raises(si.InputError, match="max_frames must be >= 0"):
        lm.generate(grid(), -1)


def test_sampling_must_be_a_sampling(lm: si.SpeechLM) -> None:
    with pytest.raises(si.InputError, match="sampling must be None, a Sampling"):
        lm.generate(grid(), 2, sampling={"temperature": 1.0})


def test_bad_checkpoints(model_dir: Path, tmp_path: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))

    def write(cfg: dict, ts: dict, name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps(cfg))
        save_file(ts, str(path / "model.safetensors"))
        return path

    missing = {k: v for k, v in tensors.items() if k != "heads.1.weight"}
    with pytest.raises(si.CheckpointError, match=r"heads\.1\.weight.*missing"):
        si.SpeechLM.load(write(config, missing, "missing"))
    with pytest.raises(si.CheckpointError, match="config does not describe"):
        si.SpeechLM.load(write({**config, "tie_embeddings": True}, tensors, "extra"))
    wrong = {**tensors, "norm.weight": torch.ones(33)}
    with pytest.raises(si.CheckpointError, match=r"norm\.weight.*\[33\].*\[32\]"):
        si.SpeechLM.load(write(config, wrong, "shape"))
    nan = {**tensors, "norm.weight": torch.full((32,), float("nan"))}
    with pytest.raises(si.CheckpointError, match="non-finite"):
        si.SpeechLM.load(write(config, nan, "nan"))
    no_key = {k: v for k, v in config.items() if k != "n_kv_heads"}
    with pytest.raises(si.ConfigError, match="n_kv_heads"):
        si.SpeechLM.load(write(no_key, tensors, "nokey"))
    with pytest.raises(si.ConfigError, match="pattern 'unroll'"):
        si.SpeechLM.load(write({**config, "pattern": "unroll"}, tensors, "pattern"))
    streams = [dict(s) for s in config["streams"]]
    streams[0]["bos_id"] = None
    with pytest.raises(si.ConfigError, match="bos_id must be set"):
        si.SpeechLM.load(write({**config, "streams": streams}, tensors, "bos"))
    with pytest.raises(si.ConfigError, match="model_type"):
        si.SpeechLM.load(write({**config, "model_type": "speechinfer-codec"}, tensors, "type"))
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text(json.dumps(config))
    data = (model_dir / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(si.CheckpointError, match="truncated"):
        si.SpeechLM.load(truncated)
