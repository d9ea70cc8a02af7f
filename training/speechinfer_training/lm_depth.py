"""The depth transformer of the ``"depth"`` pattern (Moshi / RQ-Transformer style, ``docs/lm.md``).

The main transformer runs once per step; this small causal transformer then produces that step's
K tokens one stream after another. Its tensors are ``depth.in_proj.{j}``, ``depth.embeddings.{k}``
(``k`` in ``1..K``), ``depth.layers.{i}.*``, ``depth.norm`` and ``depth.heads.{k}``.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .lm_blocks import Block, RMSNorm, embed, rope_tables, run_blocks

DEFAULT_DEPTH: dict[str, Any] = {
    # Residual width dd of the depth transformer.
    "d_model": 64,
    # Depth transformer blocks.
    "n_layers": 2,
    # Query heads; dd / n_heads must be even.
    "n_heads": 4,
    # Key/value heads (grouped-query attention); must divide n_heads.
    "n_kv_heads": 2,
    # SwiGLU hidden width.
    "ffn_dim": 128,
    # One input projection of the main hidden state per depth position (else one shared).
    "per_position_proj": True,
}
"""The depth sizes the twin fills in when ``pattern`` is ``"depth"`` and ``depth`` is omitted."""


class DepthTransformer(nn.Module):
    """Produces the K tokens of a step from the main hidden state of the step before.

    ``config`` is the full LM config; its ``depth`` entry gives the sizes, ``rope_theta`` and
    ``norm_eps`` are the main model's.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        depth, streams = config["depth"], config["streams"]
        k_n = len(streams)
        d, dd = config["d_model"], depth["d_model"]
        self.per_position_proj = bool(depth["per_position_proj"])
        sizes = {**depth, "norm_eps": config["norm_eps"]}
        projections = k_n if self.per_position_proj else 1
        self.in_proj = nn.ModuleList(nn.Linear(d, dd, bias=False) for _ in range(projections))
        self.embeddings = nn.ModuleDict(
            {str(k): nn.Embedding(streams[k - 1]["vocab_size"], dd) for k in range(1, k_n)}
        )
        self.layers = nn.ModuleList(Block(sizes) for _ in range(depth["n_layers"]))
        self.norm = RMSNorm(dd, config["norm_eps"])
        self.heads = nn.ModuleList(nn.Linear(dd, s["vocab_size"], bias=False) for s in streams)
        cos, sin = rope_tables(dd // depth["n_heads"], k_n, config["rope_theta"])
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @property
    def num_streams(self) -> int:
        """K, the number of depth positions."""
        return len(self.heads)

    def forward(self, hidden: Tensor, tokens: Tensor) -> list[Tensor]:
        """Teacher-forced depth logits.

        ``hidden`` ``[B, L, d]`` holds the main hidden states (after the main ``norm``) of steps
        ``s``; ``tokens`` ``[B, K, L]`` the tokens ``c_0..c_{K-1}`` of steps ``s + 1`` (``-1`` = no
        input). Returns K tensors ``[B, L, V_k]``: ``logits_k`` predicts ``c_k`` from ``h_s`` and
        ``c_0..c_{k-1}``.
        """
        b, length, _ = hidden.shape
        k_n = self.num_streams
        inputs = []
        for k in range(k_n):
            z = self.in_proj[k if self.per_position_proj else 0](hidden)
            if k > 0:
                z = z + embed(self.embeddings[str(k)], tokens[:, k - 1])
            inputs.append(z)
        x = torch.stack(inputs, dim=2).reshape(b * length, k_n, -1)
        x = self.norm(run_blocks(self.layers, x, self.rope_cos, self.rope_sin))
        x = x.view(b, length, k_n, -1)
        return [head(x[:, :, k]) for k, head in enumerate(self.heads)]

    def column_logits(self, hidden: Tensor, column: Tensor, k: int) -> Tensor:
        """Logits ``[B, V_k]`` of depth position ``k`` for one step.

        ``hidden`` ``[B, d]`` is the main hidden state of the step before; ``column`` ``[B, K]``
        holds the step's tokens, of which only ``c_0..c_{k-1}`` are read (the depth transformer
        is causal).
        """
        logits = self.forward(hidden[:, None], column[:, :, None])
        return logits[k][:, 0]
