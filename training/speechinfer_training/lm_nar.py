"""The non-autoregressive model of the ``"coarse_first"`` pattern (VALL-E, ``docs/lm.md``).

It fills streams ``1..K-1`` stage by stage from the whole grid at once: bidirectional attention,
no special step, frame ``t`` at RoPE position ``t``. Tensors: ``nar.embeddings.{k}`` (``k`` in
``0..K``), ``nar.stage_embeddings`` ``[K - 1, d]``, ``nar.layers.{i}.*``, ``nar.norm`` and
``nar.heads.{j}`` (``j`` in ``1..K``).
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .lm_blocks import Block, RMSNorm, embed, run_blocks


class NarModel(nn.Module):
    """The NAR stages of a coarse-first LM, with the main model's sizes (``config``)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        streams = config["streams"]
        k_n, d = len(streams), config["d_model"]
        self.embeddings = nn.ModuleList(nn.Embedding(s["vocab_size"], d) for s in streams)
        self.stage_embeddings = nn.Embedding(k_n - 1, d)
        self.layers = nn.ModuleList(Block(config, causal=False) for _ in range(config["n_layers"]))
        self.norm = RMSNorm(d, config["norm_eps"])
        self.heads = nn.ModuleDict(
            {str(j): nn.Linear(d, streams[j]["vocab_size"], bias=False) for j in range(1, k_n)}
        )

    def forward(
        self, grid: Tensor, stage: int, prompt_frames: int, cos: Tensor, sin: Tensor
    ) -> Tensor:
        """Logits ``[B, T, V_j]`` of stream ``j = stage`` for every frame of ``grid`` ``[B, K, T]``.

        ``x_t = Σ_{k<j} emb_k[g_{k,t}] + [t < P] · Σ_{k≥j} emb_k[g_{k,t}] + stage_emb[j - 1]``
        with ``P = prompt_frames``; ``cos``/``sin`` are RoPE tables of at least ``T`` positions.
        """
        t_n = grid.shape[-1]
        prompt = (torch.arange(t_n, device=grid.device) < prompt_frames)[None, :, None]
        x = self.stage_embeddings.weight[stage - 1].expand(grid.shape[0], t_n, -1)
        lower: Tensor | None = None
        upper: Tensor | None = None
        for k, table in enumerate(self.embeddings):
            e = embed(table, grid[:, k])
            if k < stage:
                lower = e if lower is None else lower + e
            else:
                upper = e if upper is None else upper + e
        assert lower is not None and upper is not None
        x = lower + upper.masked_fill(~prompt, 0.0) + x
        x = self.norm(run_blocks(self.layers, x, cos[:t_n], sin[:t_n]))
        return self.heads[str(stage)](x)
