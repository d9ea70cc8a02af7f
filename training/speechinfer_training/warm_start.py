"""TWIST-style warm start: a one-stream speech LM initialised from a Hugging Face Llama.

Hassid et al. 2023 ("Textually Pretrained Speech Language Models") initialise the speech LM with
a text LM's transformer and train new unit embeddings. Here the text vocabulary is kept and the
speech units are appended *past* it: ids ``[0, V_text)`` are the Llama's text tokens, ids
``[V_text, V_text + num_units)`` the units, so the same model can also read and write text (the
text-then-speech and interleaved layouts of docs/lm.md).
"""

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .lm import DEFAULT_CONFIG, SpeechLM

_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_LEAVES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def _engine_name(name: str) -> str | None:
    name = name.removeprefix("model.")
    direct = {
        "embed_tokens.weight": "embeddings.0.weight",
        "norm.weight": "norm.weight",
        "lm_head.weight": "heads.0.weight",
    }
    if name in direct:
        return direct[name]
    match = _LAYER.match(name)
    if not match:
        return None
    index, leaf = match.groups()
    if leaf in _LEAVES:
        return f"layers.{index}.{_LEAVES[leaf]}"
    for prefix, ours in (("self_attn.", "attn."), ("mlp.", "ffn.")):
        if leaf.startswith(prefix):
            return f"layers.{index}.{ours}{leaf.removeprefix(prefix)}"
    return None


def _read_llama(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise ValueError(f"{path}: model_type is {config.get('model_type')!r}, expected 'llama'")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(path / name))
    return config, tensors


def speech_lm_from_llama(
    llama_dir: str | os.PathLike[str], num_units: int, *, seed: int = 0
) -> SpeechLM:
    """Return a one-stream ``SpeechLM`` twin whose transformer is the Llama at ``llama_dir``.

    The stream's vocabulary is the Llama's text vocabulary followed by ``num_units`` unit ids
    (``text_offset`` 0); unit embeddings and head rows start at the mean text row plus small
    noise. Text-only inputs give exactly the Llama's logits on the text ids.
    """
    if num_units < 1:
        raise ValueError(f"num_units must be >= 1, got {num_units}")
    path = Path(llama_dir)
    hf, tensors = _read_llama(path)
    for key in ("rope_scaling", "attention_bias", "mlp_bias"):
        if hf.get(key):
            raise ValueError(f"{path}: Llama feature {key}={hf[key]!r} is not supported")
    text_vocab = int(hf["vocab_size"])
    eos = hf.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    config = {
        **DEFAULT_CONFIG,
        "d_model": hf["hidden_size"],
        "n_layers": hf["num_hidden_layers"],
        "n_heads": hf["num_attention_heads"],
        "n_kv_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
        "ffn_dim": hf["intermediate_size"],
        "rope_theta": float(hf.get("rope_theta", 10000.0)),
        "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "max_context": hf["max_position_embeddings"],
        "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "pattern": "parallel",
        "streams": [
            {
                "name": "text+units",
                "role": "text",
                "vocab_size": text_vocab + num_units,
                "pad_id": hf.get("pad_token_id"),
                "bos_id": hf["bos_token_id"],
                "eos_id": eos,
                "delay": 0,
                "text_offset": 0,
            }
        ],
    }
    model = SpeechLM(config)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in tensors.items():
        ours = _engine_name(name)
        if ours is None or (ours == "heads.0.weight" and config["tie_embeddings"]):
            continue
        if ours in ("embeddings.0.weight", "heads.0.weight"):
            mean = tensor.float().mean(0, keepdim=True)
            noise = torch.randn(num_units, tensor.shape[1], generator=generator)
            units = mean + noise * tensor.float().std() * 0.1
            tensor = torch.cat([tensor.float(), units], 0)
        state[ours] = tensor.float()
    model.load_export_state_dict(state)
    return model
