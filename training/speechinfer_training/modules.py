"""Causal convolution building blocks shared by the codec encoder and decoder (docs/codec.md)."""

import torch.nn.functional as F
from torch import Tensor, nn


def elu(x: Tensor) -> Tensor:
    """ELU with alpha 1, the only activation of the codec."""
    return F.elu(x, alpha=1.0)


class CausalConv1d(nn.Conv1d):
    """``Conv1d`` padded on the left only, with ``(k - 1) * d + 1 - s`` zeros.

    A stride-``s`` convolution therefore maps ``T`` samples to ``T / s`` when ``s`` divides ``T``.
    Parameters keep the ``nn.Conv1d`` names and layout (``weight`` ``[out, in, k]``, ``bias``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        self.left_padding = (kernel_size - 1) * dilation + 1 - stride
        if self.left_padding < 0:
            raise ValueError(f"stride {stride} exceeds the receptive field of kernel {kernel_size}")

    def forward(self, x: Tensor) -> Tensor:
        """Convolve ``x`` ``[B, in, T]`` into ``[B, out, T / stride]``."""
        x = F.pad(x, (self.left_padding, 0))
        return F.conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation)


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """``ConvTranspose1d`` with kernel ``2r`` and stride ``r`` whose last ``r`` outputs are dropped.

    Maps ``T`` samples to ``T * r``. ``weight`` has the ``nn.ConvTranspose1d`` layout
    ``[in, out, 2r]``.
    """

    def __init__(self, in_channels: int, out_channels: int, ratio: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2 * ratio, stride=ratio)
        self.ratio = ratio

    def forward(self, x: Tensor) -> Tensor:
        """Up-sample ``x`` ``[B, in, T]`` into ``[B, out, T * r]``."""
        y = F.conv_transpose1d(x, self.weight, self.bias, stride=self.ratio)
        return y[..., : -self.ratio]


class ResidualUnit(nn.Module):
    """Residual unit ``x + conv2(elu(conv1(elu(x))))`` on ``channels`` channels.

    ``conv1`` (dilated) narrows to ``channels // compress``; ``conv2`` (kernel 1) widens back.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, compress: int) -> None:
        super().__init__()
        hidden = channels // compress
        if hidden < 1:
            raise ValueError(
                f"compress {compress} leaves no hidden channels for {channels} channels"
            )
        self.conv1 = CausalConv1d(channels, hidden, kernel_size, dilation=dilation)
        self.conv2 = CausalConv1d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the unit; shape is preserved."""
        return x + self.conv2(elu(self.conv1(elu(x))))


def residual_stack(
    channels: int, count: int, kernel_size: int, dilation_base: int, compress: int
) -> nn.ModuleList:
    """Return ``count`` residual units, unit ``j`` dilated by ``dilation_base ** j``."""
    return nn.ModuleList(
        ResidualUnit(channels, kernel_size, dilation_base**j, compress) for j in range(count)
    )
