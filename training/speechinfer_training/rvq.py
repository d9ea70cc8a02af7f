"""Residual vector quantizer with EMA-updated codebooks (docs/codec.md).

Only ``layers.{q}.codebook`` belongs to the exported contract; ``cluster_size``, ``embed_sum`` and
``initialized`` are training statistics that checkpoints keep and exports drop.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class EmaSettings:
    """How training updates the codebooks.

    Attributes:
        decay: EMA decay of the per-code usage counts and vector sums.
        epsilon: Laplace smoothing of the usage counts, keeping rare codes finite.
        dead_code_threshold: codes whose EMA usage falls below this are re-initialised from
            random residuals of the current batch.
    """

    decay: float = 0.99
    epsilon: float = 1e-5
    dead_code_threshold: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.decay}")
        if self.epsilon <= 0.0:
            raise ValueError(f"EMA epsilon must be positive, got {self.epsilon}")
        if self.dead_code_threshold < 0.0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {self.dead_code_threshold}")


class VectorQuantizer(nn.Module):
    """One codebook ``[codebook_size, dimension]`` with nearest-neighbour lookup and EMA updates."""

    codebook: Tensor
    cluster_size: Tensor
    embed_sum: Tensor
    initialized: Tensor

    def __init__(self, codebook_size: int, dimension: int, ema: EmaSettings) -> None:
        super().__init__()
        self.ema = ema
        codebook = torch.randn(codebook_size, dimension)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def codebook_size(self) -> int:
        """Number of entries."""
        return self.codebook.shape[0]

    def nearest(self, residual: Tensor) -> Tensor:
        """Return the int64 index ``[N]`` of the entry nearest each row of ``residual`` ``[N, D]``.

        Uses ``sum(c*c, -1) - 2 * residual @ codebook.T`` and the first index on ties, exactly as
        the engine does.
        """
        codebook = self.codebook
        distance = torch.sum(codebook * codebook, dim=-1) - 2.0 * (residual @ codebook.T)
        return torch.argmin(distance, dim=-1)

    def lookup(self, codes: Tensor) -> Tensor:
        """Return the entries for ``codes`` (any shape), with a trailing ``dimension`` axis."""
        return F.embedding(codes, self.codebook)

    @torch.no_grad()
    def reset_statistics(self) -> None:
        """Make the EMA statistics agree with the current codebook and mark it initialised.

        Called after loading an exported codebook so that further training starts from it.
        """
        self.cluster_size.fill_(1.0)
        self.embed_sum.copy_(self.codebook)
        self.initialized.fill_(True)

    @torch.no_grad()
    def initialize_from(self, residual: Tensor) -> None:
        """Set the codebook to random rows of ``residual``, with replacement if N < K."""
        count = residual.shape[0]
        if count >= self.codebook_size:
            index = torch.randperm(count, device=residual.device)[: self.codebook_size]
        else:
            index = torch.randint(0, count, (self.codebook_size,), device=residual.device)
        self.codebook.copy_(residual[index])
        self.reset_statistics()

    @torch.no_grad()
    def update(self, residual: Tensor, codes: Tensor) -> None:
        """EMA-update the codebook from ``residual`` ``[N, D]`` assigned to ``codes`` ``[N]``.

        Codes whose smoothed usage drops below ``ema.dead_code_threshold`` are replaced by random
        rows of ``residual``.
        """
        decay, epsilon = self.ema.decay, self.ema.epsilon
        residual = residual.to(self.embed_sum.dtype)
        counts = torch.bincount(codes, minlength=self.codebook_size).to(residual.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, residual)
        self.cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1.0 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + epsilon) / (total + self.codebook_size * epsilon) * total
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(-1))
        dead = torch.nonzero(self.cluster_size < self.ema.dead_code_threshold).squeeze(-1)
        if dead.numel() > 0:
            index = torch.randint(0, residual.shape[0], (dead.numel(),), device=residual.device)
            replacement = residual[index]
            threshold = self.ema.dead_code_threshold
            self.codebook[dead] = replacement
            self.embed_sum[dead] = replacement * threshold
            self.cluster_size[dead] = threshold


class QuantizerOutput(NamedTuple):
    """Result of a training pass through the residual quantizer."""

    quantized: Tensor
    """Straight-through latent ``[B, D, F]``: forward value is the quantized latent, gradient
    flows to the input latent unchanged."""
    codes: Tensor
    """Int64 codes ``[B, q, F]``."""
    commitment_loss: Tensor
    """Mean over codebooks of the MSE between each residual and its (detached) codebook entry."""


class ResidualVectorQuantizer(nn.Module):
    """``num_codebooks`` quantizers applied in turn to what the previous ones left over."""

    def __init__(
        self, num_codebooks: int, codebook_size: int, dimension: int, ema: EmaSettings | None = None
    ) -> None:
        super().__init__()
        self.dimension = dimension
        settings = ema or EmaSettings()
        self.layers = nn.ModuleList(
            VectorQuantizer(codebook_size, dimension, settings) for _ in range(num_codebooks)
        )

    @property
    def num_codebooks(self) -> int:
        """Q, the number of codebooks."""
        return len(self.layers)

    def set_ema(self, ema: EmaSettings) -> None:
        """Change the EMA settings of every codebook."""
        for layer in self.layers:
            layer.ema = ema

    def reset_statistics(self) -> None:
        """Align every codebook's EMA statistics with its current entries."""
        for layer in self.layers:
            layer.reset_statistics()

    def _count(self, num_codebooks: int | None) -> int:
        count = self.num_codebooks if num_codebooks is None else num_codebooks
        if not 1 <= count <= self.num_codebooks:
            raise ValueError(f"num_codebooks must be in [1, {self.num_codebooks}], got {count}")
        return count

    def _frames(self, latent: Tensor) -> Tensor:
        if latent.dim() != 3 or latent.shape[1] != self.dimension:
            raise ValueError(f"latent must be [B, {self.dimension}, F], got {tuple(latent.shape)}")
        return latent.transpose(1, 2).reshape(-1, self.dimension)

    def encode(self, latent: Tensor, num_codebooks: int | None = None) -> Tensor:
        """Quantize ``latent`` ``[B, D, F]`` into int64 codes ``[B, q, F]`` without updating."""
        batch, _, frames = latent.shape
        residual = self._frames(latent)
        codes = []
        for layer in self.layers[: self._count(num_codebooks)]:
            code = layer.nearest(residual)
            residual = residual - layer.lookup(code)
            codes.append(code)
        return torch.stack(codes).view(-1, batch, frames).transpose(0, 1).contiguous()

    def decode(self, codes: Tensor) -> Tensor:
        """Sum the first ``q`` codebooks' entries for ``codes`` ``[B, q, F]`` into ``[B, D, F]``."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, q, F], got {tuple(codes.shape)}")
        count = self._count(codes.shape[1])
        codes = codes.long()
        latent = self.layers[0].lookup(codes[:, 0])
        for q in range(1, count):
            latent = latent + self.layers[q].lookup(codes[:, q])
        return latent.transpose(1, 2)

    def forward(self, latent: Tensor, num_codebooks: int | None = None) -> QuantizerOutput:
        """Quantize with straight-through gradients; in training mode also EMA-update codebooks.

        In training mode, codebooks not yet initialised are first set from the batch residuals.
        """
        batch, _, frames = latent.shape
        flat = self._frames(latent)
        residual = flat
        quantized = torch.zeros_like(flat)
        codes, losses = [], []
        for layer in self.layers[: self._count(num_codebooks)]:
            if self.training and not bool(layer.initialized):
                layer.initialize_from(residual.detach())
            code = layer.nearest(residual.detach())
            entry = layer.lookup(code).detach()
            losses.append(F.mse_loss(residual, entry))
            if self.training:
                layer.update(residual.detach(), code)
            residual = residual - entry
            quantized = quantized + entry
            codes.append(code)
        straight_through = flat + (quantized - flat).detach()
        return QuantizerOutput(
            quantized=straight_through.view(batch, frames, self.dimension).transpose(1, 2),
            codes=torch.stack(codes).view(-1, batch, frames).transpose(0, 1).contiguous(),
            commitment_loss=torch.stack(losses).mean(),
        )
