"""Export of model twins to the engine's checkpoint layout, and loading them back.

A checkpoint directory holds ``config.json`` (the model's full resolved config, including
``model_type``) and ``model.safetensors`` (exactly the contract tensors). The class to build is
looked up by ``model_type`` in :mod:`speechinfer_training.registry`.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .registry import ExportableModel, model_class

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

StorageDtype = Literal["float32", "float16", "bfloat16"]

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def save_pretrained(
    model: ExportableModel,
    path: str | os.PathLike[str],
    dtype: StorageDtype = "float32",
    tokenizer: Any = None,
) -> Path:
    """Write ``model`` to directory ``path`` (created if needed) and return it.

    ``config.json`` gets ``model.config``; ``model.safetensors`` gets ``model.export_state_dict()``
    as contiguous CPU tensors stored in ``dtype``. ``tokenizer`` (a ``tokenizers.Tokenizer`` or
    the path of a ``tokenizer.json``) is written as ``tokenizer.json``, the engine's text
    tokenizer (a stream's ``text_offset`` places its ids in that stream's vocabulary).
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: tensor.detach().to(device="cpu", dtype=STORAGE_DTYPES[dtype]).contiguous()
        for name, tensor in model.export_state_dict().items()
    }
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(model.config, indent=2) + "\n")
    if isinstance(tokenizer, str | os.PathLike):
        if Path(tokenizer).resolve() != (directory / TOKENIZER_FILE).resolve():
            shutil.copyfile(tokenizer, directory / TOKENIZER_FILE)
    elif tokenizer is not None:
        tokenizer.save(str(directory / TOKENIZER_FILE))
    return directory


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``config.json`` from checkpoint directory ``path``."""
    config = json.loads((Path(path) / CONFIG_FILE).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{Path(path) / CONFIG_FILE} does not hold a JSON object")
    return config


def load_pretrained(path: str | os.PathLike[str], model_type: str | None = None) -> nn.Module:
    """Build the model saved in directory ``path`` and load its tensors strictly; eval mode.

    The class comes from the config's ``model_type``; ``model_type`` here is only a fallback for
    configs that omit it.
    """
    config = load_config(path)
    resolved_type = config.get("model_type", model_type)
    if resolved_type is None:
        raise ValueError(f"{Path(path) / CONFIG_FILE} has no model_type and none was given")
    model = model_class(resolved_type).from_config(config)
    model.load_export_state_dict(load_file(str(Path(path) / WEIGHTS_FILE)))
    if not isinstance(model, nn.Module):
        raise TypeError(f"{type(model).__name__} is not a torch.nn.Module")
    return model.eval()
