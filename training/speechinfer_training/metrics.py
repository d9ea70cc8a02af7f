"""Codec resynthesis metrics: log-mel distance, SI-SDR and STOI between a reference and an estimate.

Every function takes mono float arrays (``[T]``) at the same sample rate and compares them over
their common length (the codec's output is ``ceil(T / hop) * hop`` samples, a little longer than
its input; the codec is causal, so no alignment search is needed).

* :func:`mel_distance`: mean absolute difference of natural-log mel power spectrograms (1024-point
  Hann STFT, hop 256, 80 HTK mel bands up to Nyquist, floor 1e-5: the finest resolution of the
  codec's training loss, :class:`speechinfer_training.losses.MelSpectrogram`) at the codec's own
  sample rate. 0 for identical signals; lower is better.
* :func:`si_sdr`: scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019), both
  signals made zero-mean; higher is better.
* :func:`stoi`: short-time objective intelligibility (Taal et al. 2011) from PyPI ``pystoi``,
  in [0, 1] (internally at 10 kHz); higher is better.
"""

import functools

import numpy as np
import torch

from .losses import MelSpectrogram

MEL_WINDOW = 1024
MEL_BANDS = 80
SI_SDR_EPS = 1e-10


def _common(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.ndim != 1 or est.ndim != 1:
        raise ValueError(f"signals must be mono [T], got {ref.shape} and {est.shape}")
    n = min(ref.size, est.size)
    if n == 0:
        raise ValueError("signals must not be empty")
    return ref[:n], est[:n]


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int) -> MelSpectrogram:
    return MelSpectrogram(sample_rate, MEL_WINDOW, MEL_BANDS)


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Natural-log mel power spectrogram ``[80, frames]`` of mono ``audio`` (see module doc)."""
    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    with torch.no_grad():
        return _mel(int(sample_rate))(wave)[0].numpy()


def mel_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Mean absolute log-mel difference over the common length (0 when identical)."""
    ref, est = _common(reference, estimate)
    return float(np.mean(np.abs(log_mel(ref, sample_rate) - log_mel(est, sample_rate))))


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB of ``estimate`` against ``reference`` over the common length.

    ``target = <est, ref> / <ref, ref> * ref``, ``noise = est - target``,
    ``10 log10((|target|² + eps) / (|noise|² + eps))`` with ``eps = 1e-10``, both zero-mean
    (an identical estimate scores about ``10 log10(|ref|² / eps)``, very high).
    """
    ref, est = _common(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    energy = float(ref @ ref)
    scale = float(est @ ref) / energy if energy > 0 else 0.0
    target = scale * ref
    noise = est - target
    return float(10.0 * np.log10((target @ target + SI_SDR_EPS) / (noise @ noise + SI_SDR_EPS)))


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """STOI of ``estimate`` against the clean ``reference`` (``pystoi``, classic, not extended).

    ``pystoi`` needs at least 30 frames of 384 samples at 10 kHz after removing silent frames;
    shorter signals give its floor value 1e-5 with a warning.
    """
    from pystoi import stoi as _stoi

    ref, est = _common(reference, estimate)
    return float(_stoi(ref, est, int(sample_rate), extended=False))
