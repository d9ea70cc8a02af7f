"""Transformer building blocks shared by the LM twin's main, depth and NAR transformers.

Every block is sized by a mapping with the keys ``d_model``, ``n_heads``, ``n_kv_heads``,
``ffn_dim`` and ``norm_eps`` (the main config, or a depth config with the main ``norm_eps``), so
the same classes give the contract's ``layers.{i}.*``, ``depth.layers.{i}.*`` and
``nar.layers.{i}.*`` tensors (``docs/lm.md``).
"""

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NO_INPUT = -1
"""Token marker of a position that exists but contributes nothing (its embedding is zero)."""


class RMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight``."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` over its last axis."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, positions: int, theta: float) -> tuple[Tensor, Tensor]:
    """``cos``, ``sin`` ``[positions, head_dim]`` (angles in float64, rounded once to float32)."""
    half = head_dim // 2
    inv_freq = torch.tensor([theta ** (-(2.0 * j) / head_dim) for j in range(half)])
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().float(), angles.sin().float()
    return torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE of ``x`` ``[B, heads, S, hd]`` with tables ``[S, hd]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, no biases; causal unless ``causal=False``."""

    def __init__(self, sizes: Mapping[str, Any], causal: bool = True) -> None:
        super().__init__()
        d = sizes["d_model"]
        self.n_heads, self.n_kv_heads = sizes["n_heads"], sizes["n_kv_heads"]
        self.head_dim = d // self.n_heads
        self.causal = causal
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Attend over ``x`` ``[B, S, d]`` (positions ``0..S``) with RoPE tables ``[S, hd]``."""
        b, s, _ = x.shape
        hd = self.head_dim

        def heads(proj: nn.Linear, n: int) -> Tensor:
            return proj(x).view(b, s, n, hd).transpose(1, 2)

        q = apply_rope(heads(self.q_proj, self.n_heads), cos, sin)
        k = apply_rope(heads(self.k_proj, self.n_kv_heads), cos, sin)
        v = heads(self.v_proj, self.n_kv_heads)
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = q @ k.transpose(-1, -2) / hd**0.5
        if self.causal:
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
        out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.n_heads * hd))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the gated feed-forward."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block; its attention is causal unless ``causal=False``."""

    def __init__(self, sizes: Mapping[str, Any], causal: bool = True) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(sizes["d_model"], sizes["norm_eps"])
        self.attn = Attention(sizes, causal)
        self.ffn_norm = RMSNorm(sizes["d_model"], sizes["norm_eps"])
        self.ffn = SwiGLU(sizes["d_model"], sizes["ffn_dim"])

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Apply attention and feed-forward, each around a residual."""
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


def run_blocks(blocks: Iterable[nn.Module], x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Apply ``blocks`` in order to ``x`` ``[B, S, d]`` with RoPE tables ``[S, hd]``."""
    for block in blocks:
        x = block(x, cos, sin)
    return x


def embed(table: nn.Embedding, ids: Tensor) -> Tensor:
    """Rows of ``table`` for ``ids``; a :data:`NO_INPUT` (``-1``) id gives the zero vector."""
    rows = table(ids.clamp(min=0))
    return rows.masked_fill((ids == NO_INPUT)[..., None], 0.0)


def sum_embeddings(tables: Iterable[nn.Embedding], rows: Iterable[Tensor]) -> Tensor:
    """``Σ_k embed(tables[k], rows[k])`` in stream order."""
    total: Tensor | None = None
    for table, ids in zip(tables, rows, strict=True):
        e = embed(table, ids)
        total = e if total is None else total + e
    if total is None:
        raise ValueError("no streams to embed")
    return total


def check_token_ids(tokens: Tensor, vocab_sizes: list[int], what: str) -> None:
    """Require integer ids in ``[-1, V_k)`` for row ``k`` of ``tokens`` ``[B, K, L]``.

    ``-1`` is the "no input" marker; anything below it or at/over the vocabulary is an error.
    """
    k_n = len(vocab_sizes)
    if tokens.dim() != 3 or tokens.shape[1] != k_n:
        raise ValueError(f"{what} must be [B, {k_n}, L], got {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(f"{what} must hold integer ids, got {tokens.dtype}")
    if 0 in tokens.shape:
        raise ValueError(f"{what} is empty: {tuple(tokens.shape)}")
    for k, vocab in enumerate(vocab_sizes):
        row = tokens[:, k]
        if row.min() < NO_INPUT or row.max() >= vocab:
            raise ValueError(f"{what}: stream {k} holds ids outside [-1, {vocab})")
