"""Bad inputs and bad checkpoints raise typed errors that name the problem; nothing aborts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
from conftest import SMALL_CODEC
from safetensors.numpy import load_file, save_file


@pytest.fixture
def model_dir(export_codec) -> Path:
    return export_codec(SMALL_CODEC)[1]


@pytest.fixture
def codec(model_dir: Path) -> si.Codec:
    return si.Codec.load(model_dir)


def test_error_hierarchy() -> None:
    assert issubclass(si.InputError, si.SpeechInferError)
    assert issubclass(si.InputError, ValueError)
    for cls in (si.ConfigError, si.CheckpointError, si.InternalError):
        assert issubclass(cls, si.SpeechInferError)
        assert not issubclass(cls, ValueError)


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (np.zeros(100, dtype=np.float64), "float32, got float64"),
        (np.zeros(100, dtype=np.int16), "float32, got int16"),
        (np.zeros((1, 1, 100), dtype=np.float32), "1-D .* or 2-D"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((0, 100), dtype=np.float32), "batch size 0"),
        ([0.0, 0.1], "numpy array, got list"),
        (np.array([0.0, np.nan], dtype=np.float32), "non-finite"),
    ],
)
def test_bad_wave(codec: si.Codec, wave, message: str) -> None:
    with pytest.raises(si.InputError, match=message):
        codec.encode(wave)


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.full((1, 4, 3), 64), "code 64 is out of range"),
        (np.full((1, 4, 3), -1), "code -1 is out of range"),
        (np.zeros((1, 5, 3), dtype=np.int64), "5 codebooks, but the codec has only 4"),
        (np.zeros((4, 3), dtype=np.int64), "3-D"),
        (np.zeros((1, 4, 3), dtype=np.float32), "integer array, got float32"),
        (np.zeros((1, 4, 3), dtype=bool), "integer array"),
        (np.zeros((1, 4, 0), dtype=np.int64), "must not be empty"),
        (np.zeros((1, 0, 3), dtype=np.int64), "must not be empty"),
        (np.full((1, 4, 3), 2**40), "out of range"),
        (np.full((1, 4, 3), 2**63 + 5, dtype=np.uint64), "beyond int64"),
    ],
)
def test_bad_codes(codec: si.Codec, codes, message: str) -> None:
    with pytest.raises(si.InputError, match=message):
        codec.decode(codes)
    with pytest.raises(si.InputError):
        codec.stream_decoder().step(codes)


def test_stream_encoder_rejects_bad_wave(codec: si.Codec) -> None:
    with pytest.raises(si.InputError, match="float32"):
        codec.stream_encoder().step(np.zeros(10))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(si.ConfigError, match="not a model directory"):
        si.Codec.load(tmp_path / "nope")


def test_missing_weights(model_dir: Path) -> None:
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(si.CheckpointError, match=r"model\.safetensors is missing"):
        si.Codec.load(model_dir)


def test_truncated_weights(model_dir: Path) -> None:
    path = model_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(si.CheckpointError, match="not a valid safetensors file"):
        si.Codec.load(model_dir)


def test_garbage_weights(model_dir: Path) -> None:
    (model_dir / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(si.CheckpointError, match="safetensors"):
        si.Codec.load(model_dir)


def edit_tensors(model_dir: Path, edit) -> None:
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_missing_tensor(model_dir: Path) -> None:
    edit_tensors(model_dir, lambda t: t.pop("decoder.conv_out.bias"))
    with pytest.raises(si.CheckpointError, match=r"'decoder\.conv_out\.bias' is missing"):
        si.Codec.load(model_dir)


def test_misshaped_tensor(model_dir: Path) -> None:
    def shrink(t: dict) -> None:
        t["quantizer.layers.2.codebook"] = t["quantizer.layers.2.codebook"][:10]

    edit_tensors(model_dir, shrink)
    with pytest.raises(si.CheckpointError, match=r"quantizer\.layers\.2\.codebook.*\[10, 16\]"):
        si.Codec.load(model_dir)


def test_nan_tensor(model_dir: Path) -> None:
    def poison(t: dict) -> None:
        t["encoder.conv_in.weight"][0, 0, 1] = np.nan

    edit_tensors(model_dir, poison)
    with pytest.raises(si.CheckpointError, match=r"encoder\.conv_in\.weight.*non-finite"):
        si.Codec.load(model_dir)


def test_integer_tensor(model_dir: Path) -> None:
    def to_int(t: dict) -> None:
        t["encoder.conv_in.bias"] = t["encoder.conv_in.bias"].astype(np.int32)

    edit_tensors(model_dir, to_int)
    with pytest.raises(si.CheckpointError, match=r"encoder\.conv_in\.bias.*unsupported dtype"):
        si.Codec.load(model_dir)


def write_config(model_dir: Path, edit) -> None:
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_config_missing_key(model_dir: Path) -> None:
    write_config(model_dir, lambda c: c.pop("ratios"))
    with pytest.raises(si.ConfigError, match=r"missing key.*ratios"):
        si.Codec.load(model_dir)


def test_config_unknown_key(model_dir: Path) -> None:
    write_config(model_dir, lambda c: c.update(ratioz=[2]))
    with pytest.raises(si.ConfigError, match="ratioz"):
        si.Codec.load(model_dir)


def test_config_bad_value(model_dir: Path) -> None:
    write_config(model_dir, lambda c: c.update(ratios=[4, 0]))
    with pytest.raises(si.ConfigError, match="ratios"):
        si.Codec.load(model_dir)
    write_config(model_dir, lambda c: c.update(ratios="4,2"))
    with pytest.raises(si.ConfigError, match="ratios"):
        si.Codec.load(model_dir)


def test_config_not_json(model_dir: Path) -> None:
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(si.ConfigError, match="invalid JSON"):
        si.Codec.load(model_dir)


def test_config_does_not_match_weights(model_dir: Path, export_codec) -> None:
    write_config(model_dir, lambda c: c.update(num_codebooks=2))
    with pytest.raises(si.CheckpointError, match="does not describe"):
        si.Codec.load(model_dir)
    write_config(model_dir, lambda c: c.update(num_codebooks=4, dimension=32))
    with pytest.raises(si.CheckpointError, match="shape"):
        si.Codec.load(model_dir)


def test_wrong_model_type(model_dir: Path) -> None:
    write_config(model_dir, lambda c: c.update(model_type="speechinfer-lm"))
    with pytest.raises(si.ConfigError, match="model_type"):
        si.Codec.load(model_dir)


def test_codec_still_works_after_errors(codec: si.Codec, model_dir: Path) -> None:
    for bad in (np.zeros(3), np.zeros((1, 1, 1, 1), np.float32)):
        with pytest.raises(si.InputError):
            codec.encode(bad)
    shutil.rmtree(model_dir)  # weights are in memory; the directory is no longer needed
    assert codec.decode(np.zeros((1, 4, 2), dtype=np.int64)).shape == (1, 16)
