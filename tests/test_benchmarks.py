"""pytest-benchmark suite: codec encode / decode / streaming step, LM step / generate per pattern.

CI runs these once each as ordinary tests (``--benchmark-disable`` in pyproject), checking their
results; timings come from ``pytest tests/test_benchmarks.py --benchmark-enable`` (bench/README.md).
The codec is the embedded default model (real trained weights); the LMs are random-weight twins of
one size, every pattern on the same four audio streams, so their figures compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
from conftest import chirp_signal, random_lm
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import audio_stream

PATTERNS = ["parallel", "delay", "flatten", "depth", "coarse_first"]
STREAMS, VOCAB = 4, 260
PROMPT_FRAMES, GENERATE_FRAMES = 8, 16
AUDIO_SECONDS = 4.0


@pytest.fixture(scope="module")
def codec() -> si.Codec:
    return si.Pipeline.load().codec


@pytest.fixture(scope="module")
def wave(codec: si.Codec) -> np.ndarray:
    return chirp_signal(AUDIO_SECONDS, 1, 0, codec.sample_rate)  # mono: [batch, samples]


def test_codec_encode(benchmark, codec: si.Codec, wave: np.ndarray) -> None:
    codes = benchmark(codec.encode, wave)
    frames = int(AUDIO_SECONDS * codec.frame_rate)
    assert codes.shape == (1, codec.num_codebooks, frames)
    assert codes.min() >= 0 and codes.max() < codec.codebook_size


def test_codec_decode(benchmark, codec: si.Codec, wave: np.ndarray) -> None:
    codes = codec.encode(wave)
    audio = benchmark(codec.decode, codes)
    assert audio.shape == (1, codes.shape[-1] * codec.hop_length)
    assert np.isfinite(audio).all()


def test_codec_stream_decode_step(benchmark, codec: si.Codec, wave: np.ndarray) -> None:
    codes = codec.encode(wave)
    decoder = codec.stream_decoder()
    frames = iter(range(10**9))

    def step() -> np.ndarray:
        f = next(frames) % codes.shape[-1]
        return decoder.step(codes[:, :, f : f + 1])

    chunk = benchmark(step)
    assert chunk.shape == (1, codec.hop_length)


def lm_config(pattern: str) -> dict:
    delayed = pattern in ("delay", "depth")
    streams = [audio_stream(q, VOCAB, q if delayed else 0) for q in range(STREAMS)]
    depth = {"d_model": 64, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 128}
    return {
        "d_model": 128,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
        "ffn_dim": 352,
        "max_context": 512,
        "streams": streams,
        "pattern": pattern,
        "depth": depth if pattern == "depth" else None,
    }


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, si.SpeechLM]:
    root = tmp_path_factory.mktemp("bench_lms")
    models = {}
    for pattern in PATTERNS:
        path = Path(root / pattern)
        save_pretrained(random_lm(lm_config(pattern)), path)
        assert json.loads((path / "config.json").read_text())["pattern"] == pattern
        models[pattern] = si.SpeechLM.load(path)
    return models


def prompt(batch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, VOCAB - 3, (batch, STREAMS, PROMPT_FRAMES)).astype(np.int64)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_lm_generate(benchmark, lms: dict[str, si.SpeechLM], pattern: str, batch: int) -> None:
    lm = lms[pattern]
    out = benchmark(lm.generate, prompt(batch), GENERATE_FRAMES, seed=0, stop_on_eos=False)
    assert out.shape == (batch, STREAMS, PROMPT_FRAMES + GENERATE_FRAMES)
    np.testing.assert_array_equal(out[:, :, :PROMPT_FRAMES], prompt(batch))
    assert out.min() >= 0 and out.max() < VOCAB


@pytest.mark.parametrize("pattern", ["parallel", "delay", "flatten", "depth"])
def test_lm_session_step(benchmark, lms: dict[str, si.SpeechLM], pattern: str) -> None:
    """One frame of a streaming session (the decode step, every codebook of the frame)."""
    session = lms[pattern].session(batch_size=1, seed=0)
    for frame in prompt(1).transpose(2, 0, 1):
        session.step(frame)
    pick = np.full((1, STREAMS), si.SAMPLE, dtype=np.int64)
    steps = iter(range(10**9))

    def step() -> np.ndarray:
        if next(steps) and session.frames >= 100:  # flatten: 4 positions a frame, 512 in all
            session.reset()
        return session.step(pick)

    done = benchmark(step)
    assert done.shape[:2] == (1, STREAMS)
    assert session.frames >= 1
