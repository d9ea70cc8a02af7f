"""Reconstruction losses: waveform L1 plus a multi-scale log-mel L1 (no torchaudio needed)."""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hz_to_mel(frequency: Tensor) -> Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + frequency / 700.0)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_fft: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Tensor:
    """Triangular HTK mel filterbank ``[n_mels, n_fft // 2 + 1]`` (peak 1, no area norm)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}")
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(
            hz_to_mel(torch.tensor(f_min, dtype=torch.float64)).item(),
            hz_to_mel(torch.tensor(f_max, dtype=torch.float64)).item(),
            n_mels + 2,
            dtype=torch.float64,
        )
    )
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (center - lower)
    falling = (upper - bins) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


class MelSpectrogram(nn.Module):
    """Log-mel spectrogram at one STFT resolution (Hann window, hop = window / 4)."""

    window: Tensor
    filterbank: Tensor

    def __init__(
        self, sample_rate: int, window_length: int, n_mels: int, floor: float = 1e-5
    ) -> None:
        super().__init__()
        self.window_length = window_length
        self.hop_length = window_length // 4
        self.floor = floor
        self.register_buffer("window", torch.hann_window(window_length), persistent=False)
        self.register_buffer(
            "filterbank", mel_filterbank(window_length, n_mels, sample_rate), persistent=False
        )

    def forward(self, wave: Tensor) -> Tensor:
        """Map ``wave`` ``[..., T]`` to ``log(mel power)`` ``[N, n_mels, frames]``."""
        spectrum = torch.stft(
            wave.reshape(-1, wave.shape[-1]),
            n_fft=self.window_length,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()
        return torch.log(torch.clamp(self.filterbank @ power, min=self.floor))


class MultiScaleMelLoss(nn.Module):
    """Mean over STFT resolutions of the L1 distance between log-mel spectrograms."""

    def __init__(
        self,
        sample_rate: int,
        window_lengths: Sequence[int] = (256, 512, 1024),
        n_mels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if n_mels is None:
            n_mels = [min(80, w // 8) for w in window_lengths]
        if len(n_mels) != len(window_lengths):
            raise ValueError("n_mels needs one entry per window length")
        self.scales = nn.ModuleList(
            MelSpectrogram(sample_rate, w, m) for w, m in zip(window_lengths, n_mels, strict=True)
        )

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss between waves of equal shape ``[..., T]``."""
        total = prediction.new_zeros(())
        for scale in self.scales:
            total = total + F.l1_loss(scale(prediction), scale(target))
        return total / len(self.scales)


class ReconstructionLoss(nn.Module):
    """``l1_weight * mean|prediction - target| + mel_weight * multi-scale log-mel L1``."""

    def __init__(
        self,
        sample_rate: int,
        l1_weight: float = 1.0,
        mel_weight: float = 1.0,
        window_lengths: Sequence[int] = (256, 512, 1024),
    ) -> None:
        super().__init__()
        if not math.isfinite(l1_weight) or not math.isfinite(mel_weight):
            raise ValueError("loss weights must be finite")
        self.l1_weight = l1_weight
        self.mel_weight = mel_weight
        self.mel = MultiScaleMelLoss(sample_rate, window_lengths)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Return the scalar loss between waves of equal shape ``[B, C, T]``."""
        if prediction.shape != target.shape:
            raise ValueError(f"shape mismatch: {tuple(prediction.shape)} vs {tuple(target.shape)}")
        loss = self.l1_weight * F.l1_loss(prediction, target)
        if self.mel_weight:
            loss = loss + self.mel_weight * self.mel(prediction, target)
        return loss
