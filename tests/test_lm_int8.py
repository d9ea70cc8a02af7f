"""``si.SpeechLM.load(path, weights="int8")``: the transformer's projections and the main heads
stored as int8 with one f32 scale per output row. The int8 model is exact against the PyTorch
twin carrying the same dequantized weights (1e-4, identical greedy tokens, on the prefill GEMM
and on the decoding-step kernel alike), and close to the float32 model it came from."""

from __future__ import annotations

import re

import numpy as np
import pytest
import speechinfer as si
import torch
from speechinfer_training.lm import small_config
from test_lm_parity import random_tokens, rel_err

QUANTIZED = re.compile(
    r"(layers\.\d+\.(attn\.[qkvo]_proj|ffn\.(gate|up|down)_proj)|heads\.\d+)\.weight"
)
CONFIG = small_config(d_model=64, n_heads=4, n_kv_heads=2, ffn_dim=96, n_layers=2)


def dequantized(weight: torch.Tensor) -> torch.Tensor:
    """What the engine computes with: per-row scale max|w| / 127 (f32), round half away from
    zero, clamp to ±127, times the scale."""
    w = weight.detach().to(torch.float32)
    peak = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    ratio = w / scale
    q = (torch.sign(ratio) * torch.floor(ratio.abs() + 0.5)).clamp(-127, 127)
    return q * scale


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    from conftest import random_lm
    from speechinfer_training.export import save_pretrained

    twin = random_lm(CONFIG, seed=11)
    path = save_pretrained(twin, tmp_path_factory.mktemp("int8") / "lm")
    with torch.no_grad():
        names = [n for n, _ in twin.named_parameters() if QUANTIZED.fullmatch(n)]
        assert len(names) == 2 * 7 + 2
        for name, param in twin.named_parameters():
            if name in names:
                param.copy_(dequantized(param))
    return twin, si.SpeechLM.load(path), si.SpeechLM.load(path, weights="int8")


def test_int8_logits_match_the_dequantized_twin(models) -> None:
    twin, f32, int8 = models
    for batch, length in [(1, 1), (3, 13)]:
        steps = random_tokens(twin, batch, length, seed=batch)
        with torch.no_grad():
            want = [x.numpy() for x in twin(torch.from_numpy(steps))]
        for k, (got, w, full) in enumerate(
            zip(int8.logits(steps), want, f32.logits(steps), strict=True)
        ):
            assert rel_err(got, w) < 1e-4, f"stream {k}"
            assert 1e-4 < rel_err(got, full) < 5e-2, f"stream {k}: int8 vs float32"


def test_int8_decoding_steps_match_the_dequantized_twin(models) -> None:
    """Generation prefills the prompt (GEMM) then feeds one step at a time (the int8 kernel):
    greedy tokens equal the twin's, batched or alone."""
    twin, _, int8 = models
    prompt = random_tokens(twin, 2, 4, seed=3)
    got = int8.generate(prompt, max_frames=32)
    want = twin.generate_greedy(torch.from_numpy(prompt), 32).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(int8.generate(prompt[1:], max_frames=32), got[1:])


def test_bad_weights_argument(tmp_path) -> None:
    with pytest.raises(si.InputError, match='weights must be "float32" or "int8"'):
        si.SpeechLM.load(tmp_path, weights="int4")
