"""Streaming decode/encode equal batch decode/encode; reset starts a new utterance."""

from __future__ import annotations

import numpy as np
import pytest
import speechinfer as si

CONFIG = {
    "n_filters": 8,
    "ratios": [5, 4, 2],
    "n_residual_layers": 2,
    "dimension": 16,
    "num_codebooks": 6,
    "codebook_size": 64,
}


@pytest.fixture
def codec(export_codec) -> si.Codec:
    _, path = export_codec(CONFIG)
    return si.Codec.load(path)


def random_codes(codec: si.Codec, batch: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, codec.codebook_size, (batch, codec.num_codebooks, frames))


@pytest.mark.parametrize("chunks", [[1] * 12, [3, 1, 5, 3], [12], [2, 7, 1, 1, 1]])
def test_stream_decode_equals_batch(codec: si.Codec, chunks: list[int]) -> None:
    codes = random_codes(codec, batch=2, frames=sum(chunks))
    whole = codec.decode(codes)
    dec = codec.stream_decoder(batch_size=2)
    pieces, f = [], 0
    for n in chunks:
        out = dec.step(codes[:, :, f : f + n])
        assert out.shape == (2, n * codec.hop_length)
        pieces.append(out)
        f += n
    streamed = np.concatenate(pieces, axis=1)
    assert np.max(np.abs(streamed - whole)) <= 1e-5


def test_stream_decode_fewer_codebooks(codec: si.Codec) -> None:
    codes = random_codes(codec, batch=1, frames=6)[:, :2]
    dec = codec.stream_decoder()
    streamed = np.concatenate([dec.step(codes[:, :, f : f + 1]) for f in range(6)], axis=1)
    assert np.max(np.abs(streamed - codec.decode(codes))) <= 1e-5


def test_reset_starts_new_utterance(codec: si.Codec) -> None:
    first = random_codes(codec, 1, 4, seed=1)
    second = random_codes(codec, 1, 4, seed=2)
    dec = codec.stream_decoder()
    dec.step(first)
    carried = dec.step(second)
    dec.reset()
    fresh = dec.step(second)
    assert np.max(np.abs(fresh - codec.decode(second))) <= 1e-5
    assert np.max(np.abs(carried - fresh)) > 1e-4  # context really was carried before


def test_reset_one_batch_item(codec: si.Codec) -> None:
    a, b = random_codes(codec, 2, 3, seed=3), random_codes(codec, 2, 3, seed=4)
    dec = codec.stream_decoder(batch_size=2)
    dec.step(a)
    dec.reset(1)
    out = dec.step(b)
    alone = codec.stream_decoder(batch_size=1)
    alone.step(a[:1])
    np.testing.assert_allclose(out[0], alone.step(b[:1])[0], atol=1e-5)
    np.testing.assert_allclose(out[1], codec.decode(b[1:])[0], atol=1e-5)
    assert dec.batch_size == 2


@pytest.mark.parametrize("chunk", [1, 37, 40, 123, 400])
def test_stream_encode_equals_batch(codec: si.Codec, chunk: int) -> None:
    hop = codec.hop_length
    wave = (np.random.default_rng(5).standard_normal((2, 10 * hop)) * 0.3).astype(np.float32)
    enc = codec.stream_encoder(batch_size=2)
    pieces = [enc.step(wave[:, s : s + chunk]) for s in range(0, wave.shape[1], chunk)]
    streamed = np.concatenate(pieces, axis=2)
    np.testing.assert_array_equal(streamed, codec.encode(wave))
    enc.reset()
    np.testing.assert_array_equal(enc.step(wave), codec.encode(wave))


def test_stream_batch_mismatch_is_input_error(codec: si.Codec) -> None:
    dec = codec.stream_decoder(batch_size=2)
    with pytest.raises(si.InputError, match="batch size"):
        dec.step(random_codes(codec, 1, 1))
    with pytest.raises(si.InputError, match="batch_size"):
        codec.stream_decoder(batch_size=0)


def test_bad_reset_index_leaves_state_intact(codec: si.Codec) -> None:
    a, b = random_codes(codec, 2, 3, seed=6), random_codes(codec, 2, 3, seed=7)
    dec, reference = codec.stream_decoder(batch_size=2), codec.stream_decoder(batch_size=2)
    dec.step(a)
    reference.step(a)
    with pytest.raises(si.InputError, match="out of range"):
        dec.reset(2)
    np.testing.assert_array_equal(dec.step(b), reference.step(b))
