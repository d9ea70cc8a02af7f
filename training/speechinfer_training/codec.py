"""PyTorch twin of the speechinfer codec: causal SEANet encoder/decoder around a residual VQ.

The architecture, config keys and tensor names follow ``docs/codec.md`` exactly, so a model
exported with :func:`speechinfer_training.export.save_pretrained` is served by the engine with the
same codes and (up to float rounding) the same audio.
"""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Self

import torch.nn.functional as F
from torch import Tensor, nn

from .config import require_positive_int, require_positive_int_list, resolve_config
from .registry import copy_exported_tensors, register_model
from .rvq import EmaSettings, ResidualVectorQuantizer
from .seanet import Decoder, Encoder

MODEL_TYPE = "speechinfer-codec"

DEFAULT_CONFIG: dict[str, Any] = {
    # Identifies the model family in config.json; must be this value when present.
    "model_type": MODEL_TYPE,
    # Audio sample rate in Hz.
    "sample_rate": 16000,
    # Audio channels of the wave the codec encodes and decodes.
    "channels": 1,
    # Channels after the first encoder conv (and before the last decoder conv); doubled per level.
    "n_filters": 32,
    # Up-sampling ratios in decoder order; the encoder down-samples by them reversed.
    # hop_length = product of the ratios.
    "ratios": [8, 5, 4, 2],
    # Kernel of the first conv of encoder and decoder.
    "kernel_size": 7,
    # Kernel of the first (dilated) conv of each residual unit.
    "residual_kernel_size": 3,
    # Kernel of the last conv of encoder and decoder.
    "last_kernel_size": 7,
    # Residual units per resolution; unit j has dilation dilation_base ** j.
    "n_residual_layers": 1,
    "dilation_base": 2,
    # Residual units on C channels have C // compress hidden channels.
    "compress": 2,
    # Latent size, which is also the size of every codebook vector.
    "dimension": 128,
    # Q, the number of codebooks of the residual VQ.
    "num_codebooks": 8,
    # Entries per codebook.
    "codebook_size": 1024,
}

_POSITIVE_INT_KEYS = (
    "sample_rate",
    "channels",
    "n_filters",
    "kernel_size",
    "residual_kernel_size",
    "last_kernel_size",
    "dilation_base",
    "compress",
    "dimension",
    "num_codebooks",
    "codebook_size",
)


def resolve_codec_config(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the full codec config: ``config`` over :data:`DEFAULT_CONFIG`, validated.

    Raises ``ValueError`` on unknown keys, a foreign ``model_type`` or invalid values.
    """
    resolved = resolve_config(config, DEFAULT_CONFIG)
    for key in _POSITIVE_INT_KEYS:
        require_positive_int(resolved, key)
    require_positive_int_list(resolved, "ratios")
    n_residual_layers = resolved["n_residual_layers"]
    if (
        isinstance(n_residual_layers, bool)
        or not isinstance(n_residual_layers, int)
        or n_residual_layers < 0
    ):
        raise ValueError(
            f"config['n_residual_layers'] must be a non-negative integer, got {n_residual_layers!r}"
        )
    if resolved["n_residual_layers"] > 0 and resolved["n_filters"] // resolved["compress"] < 1:
        raise ValueError("n_filters // compress must be at least 1")
    return resolved


class CodecOutput(NamedTuple):
    """Result of :meth:`Codec.forward`."""

    recon: Tensor
    """Reconstructed wave ``[B, channels, T]``, cropped to the input length."""
    codes: Tensor
    """Int64 codes ``[B, q, F]``."""
    losses: dict[str, Tensor]
    """Auxiliary losses; ``"commitment"`` is the RVQ commitment loss."""


@register_model(MODEL_TYPE)
class Codec(nn.Module):
    """Causal neural audio codec: wave ``[B, channels, T]`` <-> codes ``[B, Q, ceil(T / hop)]``.

    Built as ``Codec(config)`` where ``config`` holds any subset of :data:`DEFAULT_CONFIG`;
    ``Codec({})`` is the default codec. ``ema`` sets how training updates the codebooks and is not
    part of the exported config.
    """

    def __init__(
        self, config: Mapping[str, Any] | None = None, *, ema: EmaSettings | None = None
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = resolve_codec_config(config)
        self.encoder = Encoder(self.config)
        self.quantizer = ResidualVectorQuantizer(
            self.config["num_codebooks"],
            self.config["codebook_size"],
            self.config["dimension"],
            ema,
        )
        self.decoder = Decoder(self.config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Build an untrained codec from ``config`` (see :data:`DEFAULT_CONFIG`)."""
        return cls(config)

    @property
    def hop_length(self) -> int:
        """Samples per frame: the product of ``ratios``."""
        return math.prod(self.config["ratios"])

    @property
    def frame_rate(self) -> float:
        """Frames per second: ``sample_rate / hop_length``."""
        return self.sample_rate / self.hop_length

    @property
    def sample_rate(self) -> int:
        """Audio sample rate in Hz."""
        return self.config["sample_rate"]

    @property
    def channels(self) -> int:
        """Audio channels."""
        return self.config["channels"]

    @property
    def num_codebooks(self) -> int:
        """Q, the number of codebooks."""
        return self.config["num_codebooks"]

    @property
    def codebook_size(self) -> int:
        """Entries per codebook."""
        return self.config["codebook_size"]

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples: ``ceil(num_samples / hop_length)``."""
        return -(-num_samples // self.hop_length)

    def _pad_wave(self, wave: Tensor) -> Tensor:
        if wave.dim() != 3 or wave.shape[1] != self.channels:
            raise ValueError(f"wave must be [B, {self.channels}, T], got {tuple(wave.shape)}")
        if wave.shape[-1] == 0:
            raise ValueError("wave has no samples")
        remainder = wave.shape[-1] % self.hop_length
        if remainder:
            wave = F.pad(wave, (0, self.hop_length - remainder))
        return wave

    def encode_latent(self, wave: Tensor) -> Tensor:
        """Encode ``wave`` ``[B, channels, T]`` into latent ``[B, dimension, ceil(T / hop)]``.

        The wave is zero-padded at the end to a multiple of ``hop_length``.
        """
        return self.encoder(self._pad_wave(wave))

    def decode_latent(self, latent: Tensor) -> Tensor:
        """Decode latent ``[B, dimension, F]`` into wave ``[B, channels, F * hop]``."""
        return self.decoder(latent)

    def encode(self, wave: Tensor, num_codebooks: int | None = None) -> Tensor:
        """Encode ``wave`` ``[B, channels, T]`` into int64 codes ``[B, Q, ceil(T / hop)]``.

        ``num_codebooks`` keeps only the first q codebooks. Never updates the codebooks.
        """
        return self.quantizer.encode(self.encode_latent(wave), num_codebooks)

    def decode(self, codes: Tensor) -> Tensor:
        """Decode codes ``[B, q, F]`` of the first ``q <= Q`` codebooks into ``[B, C, F * hop]``."""
        return self.decode_latent(self.quantizer.decode(codes))

    def forward(self, wave: Tensor, num_codebooks: int | None = None) -> CodecOutput:
        """Training pass: encode, quantize with straight-through gradients, decode.

        In training mode the codebooks are EMA-updated. ``num_codebooks`` (quantizer dropout)
        uses only the first q codebooks.
        """
        latent = self.encode_latent(wave)
        quantized = self.quantizer(latent, num_codebooks)
        recon = self.decode_latent(quantized.quantized)[..., : wave.shape[-1]]
        return CodecOutput(recon, quantized.codes, {"commitment": quantized.commitment_loss})

    def set_ema(self, ema: EmaSettings) -> None:
        """Change how training updates the codebooks."""
        self.quantizer.set_ema(ema)

    def export_state_dict(self) -> dict[str, Tensor]:
        """Return exactly the contract tensors: every conv weight/bias and every codebook."""
        tensors = {
            name: param
            for name, param in self.named_parameters()
            if name.startswith(("encoder.", "decoder."))
        }
        for q, layer in enumerate(self.quantizer.layers):
            tensors[f"quantizer.layers.{q}.codebook"] = layer.codebook
        return tensors

    def load_export_state_dict(self, tensors: Mapping[str, Tensor]) -> None:
        """Load contract tensors (names must match exactly) and sync the EMA statistics."""
        copy_exported_tensors(self, tensors, set(self.export_state_dict()))
        self.quantizer.reset_statistics()
