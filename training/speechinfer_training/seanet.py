"""SEANet-style causal encoder and decoder of the codec, laid out with the contract tensor names."""

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .modules import CausalConv1d, CausalConvTranspose1d, elu, residual_stack


class EncoderBlock(nn.Module):
    """Residual units on ``channels``, then a stride-``ratio`` down-sampling to twice as many."""

    def __init__(self, channels: int, ratio: int, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.res = residual_stack(
            channels,
            config["n_residual_layers"],
            config["residual_kernel_size"],
            config["dilation_base"],
            config["compress"],
        )
        self.down = CausalConv1d(channels, 2 * channels, 2 * ratio, stride=ratio)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, C, T]`` to ``[B, 2C, T / ratio]``."""
        for unit in self.res:
            x = unit(x)
        return self.down(elu(x))


class DecoderBlock(nn.Module):
    """Up-sampling by ``ratio`` from ``channels`` to half as many, then residual units."""

    def __init__(self, channels: int, ratio: int, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.up = CausalConvTranspose1d(channels, channels // 2, ratio)
        self.res = residual_stack(
            channels // 2,
            config["n_residual_layers"],
            config["residual_kernel_size"],
            config["dilation_base"],
            config["compress"],
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[B, C, T]`` to ``[B, C / 2, T * ratio]``."""
        x = self.up(elu(x))
        for unit in self.res:
            x = unit(x)
        return x


class Encoder(nn.Module):
    """Wave ``[B, channels, T]`` (T a multiple of hop) to latent ``[B, dimension, T / hop]``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        n_filters = config["n_filters"]
        ratios = list(reversed(config["ratios"]))
        self.conv_in = CausalConv1d(config["channels"], n_filters, config["kernel_size"])
        self.blocks = nn.ModuleList(
            EncoderBlock(n_filters * 2**i, r, config) for i, r in enumerate(ratios)
        )
        self.conv_out = CausalConv1d(
            n_filters * 2 ** len(ratios), config["dimension"], config["last_kernel_size"]
        )

    def forward(self, x: Tensor) -> Tensor:
        """Encode a hop-aligned wave into its latent frames."""
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(elu(x))


class Decoder(nn.Module):
    """Latent ``[B, dimension, F]`` to wave ``[B, channels, F * hop]``."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        n_filters = config["n_filters"]
        ratios = config["ratios"]
        levels = len(ratios)
        self.conv_in = CausalConv1d(
            config["dimension"], n_filters * 2**levels, config["kernel_size"]
        )
        self.blocks = nn.ModuleList(
            DecoderBlock(n_filters * 2 ** (levels - i), r, config) for i, r in enumerate(ratios)
        )
        self.conv_out = CausalConv1d(n_filters, config["channels"], config["last_kernel_size"])

    def forward(self, x: Tensor) -> Tensor:
        """Decode latent frames into a wave."""
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(elu(x))
