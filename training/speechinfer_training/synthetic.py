"""Generated training audio: harmonic tones and chirps with noise, so training needs no data."""

import numpy as np


def synthetic_wave(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """Return one float32 mono signal ``[num_samples]`` peaking between 0.3 and 0.9.

    It sums one to three harmonic voices, each with a fundamental gliding linearly between two
    random pitches (a chirp when they differ), a random harmonic roll-off and a smooth envelope,
    plus white noise 20 to 50 dB below.
    """
    t = np.arange(num_samples) / sample_rate
    duration = max(num_samples / sample_rate, 1.0 / sample_rate)
    nyquist = sample_rate / 2
    signal = np.zeros(num_samples)
    for _ in range(rng.integers(1, 4)):
        start, end = rng.uniform(60.0, min(600.0, nyquist / 2), size=2)
        if rng.random() < 0.5:
            end = start
        phase = 2 * np.pi * (start * t + 0.5 * (end - start) / duration * t**2)
        rolloff = rng.uniform(0.5, 2.0)
        for harmonic in range(1, rng.integers(1, 9) + 1):
            if harmonic * max(start, end) >= nyquist:
                break
            amplitude = harmonic**-rolloff
            signal += amplitude * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
        envelope_rate = rng.uniform(0.5, 6.0)
        signal *= 0.6 + 0.4 * np.sin(2 * np.pi * envelope_rate * t + rng.uniform(0, 2 * np.pi))
    peak = np.max(np.abs(signal))
    if peak > 0:
        signal /= peak
    noise_db = rng.uniform(20.0, 50.0)
    signal += 10 ** (-noise_db / 20) * rng.standard_normal(num_samples)
    signal *= rng.uniform(0.3, 0.9) / max(np.max(np.abs(signal)), 1e-8)
    return signal.astype(np.float32)


class SyntheticSource:
    """Audio source drawing :func:`synthetic_wave` signals, copied to every channel."""

    def __init__(self, sample_rate: int, channels: int = 1) -> None:
        self.sample_rate = sample_rate
        self.channels = channels

    def sample(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """Return a float32 segment ``[channels, num_samples]``."""
        wave = synthetic_wave(rng, num_samples, self.sample_rate)
        return np.repeat(wave[None, :], self.channels, axis=0)
