"""A Hugging Face ``LlamaForCausalLM`` directory loads as the engine's one-stream text LM with the
logits and greedy tokens of ``transformers`` (random weights, tiny configs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

BASE = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 112,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}


def save_llama(path: Path, seed: int, max_shard_size: str | None = None, **overrides) -> object:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**{**BASE, **overrides})
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # the default init (std 0.02) makes near-uniform logits
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return model


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(
    ("overrides", "shard"),
    [
        ({}, None),
        ({"tie_word_embeddings": True, "num_key_value_heads": 4}, None),
        ({"num_key_value_heads": 1, "rope_theta": 500000.0}, "40KB"),
    ],
    ids=["gqa", "tied-mha", "mqa-sharded"],
)
def test_logits_and_greedy_match_transformers(tmp_path: Path, overrides: dict, shard) -> None:
    ref = save_llama(tmp_path, seed=3, max_shard_size=shard, **overrides)
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    lm = si.SpeechLM.load(tmp_path)
    assert lm.num_streams == 1 and lm.vocab_sizes == [96] and lm.pattern == "parallel"
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 96, size=(2, 20))
    ids = np.concatenate([np.full((2, 1), 1), tokens], axis=1)  # HF sees bos + tokens
    with torch.no_grad():
        want = ref(torch.from_numpy(ids)).logits.numpy()
    got = lm.logits(ids[:, None, :])[0]
    assert rel_err(got, want) < 1e-4

    prompt = tokens[:, None, :6]
    out = lm.generate(prompt, max_frames=32, stop_on_eos=False)
    with torch.no_grad():
        hf = ref.generate(
            torch.from_numpy(ids[:, :7]),
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        ).numpy()
    np.testing.assert_array_equal(out[:, 0, 6:], hf[:, 7:])


def test_unsupported_llama_features_are_named(tmp_path: Path) -> None:
    save_llama(tmp_path, seed=1)
    config = json.loads((tmp_path / "config.json").read_text())
    cases = [
        ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "yarn"),
        ("attention_bias", True, "attention_bias"),
        ("hidden_act", "gelu", "gelu"),
        ("bos_token_id", None, "bos_token_id"),
    ]
    for key, value, needle in cases:
        (tmp_path / "config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(si.ConfigError, match=needle):
            si.SpeechLM.load(tmp_path)


def test_missing_llama_tensor_is_named(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    save_llama(tmp_path, seed=2)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(si.CheckpointError, match=r"layers\.1\.ffn\.up_proj\.weight"):
        si.SpeechLM.load(tmp_path)


def test_twist_warm_start_keeps_the_text_model(tmp_path: Path) -> None:
    from speechinfer_training.export import save_pretrained
    from speechinfer_training.warm_start import speech_lm_from_llama

    ref = save_llama(tmp_path / "llama", seed=4)
    twin = speech_lm_from_llama(tmp_path / "llama", num_units=50)
    save_pretrained(twin, tmp_path / "speech")
    lm = si.SpeechLM.load(tmp_path / "speech")
    assert lm.vocab_sizes == [96 + 50]
    ids = np.concatenate([[1], np.random.default_rng(1).integers(3, 96, size=12)])[None]
    with torch.no_grad():
        want = ref(torch.from_numpy(ids)).logits.numpy()
    got = lm.logits(ids[:, None, :])[0]
    assert rel_err(got[..., :96], want) < 1e-4
    # Units live past the text vocabulary and are ordinary tokens of the stream.
    units = 96 + np.random.default_rng(2).integers(0, 50, size=(1, 1, 8))
    out = lm.generate(units, max_frames=4, stop_on_eos=False)
    assert out.shape == (1, 1, 12) and np.isfinite(lm.score(out)).all()
