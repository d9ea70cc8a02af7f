"""Hugging Face EnCodec directories load as `save_pretrained` writes them and match `transformers`.

The reference is `transformers.EncodecModel(EncodecConfig())` (the 24 kHz architecture) with
random weights, no download. Its codebooks (all zero when untrained) are seeded k-means style
from latents of the model itself, so that codes vary frame to frame; the directory is written
with `save_pretrained(..., safe_serialization=True)` (weight norm as `parametrizations.*`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from conftest import chirp_signal

transformers = pytest.importorskip("transformers", reason="transformers is not installed")

SR = 24000
HOP = 320
BANDWIDTHS = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}


def test_signal(seconds: float, batch: int, seed: int) -> np.ndarray:
    return chirp_signal(seconds, batch, seed, SR)


test_signal.__test__ = False  # a helper, not a test


@torch.no_grad()
def build_reference() -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.EncodecModel(transformers.EncodecConfig()).eval()
    gen = torch.Generator().manual_seed(1)
    wave = torch.from_numpy(test_signal(2.0, 4, seed=123))[:, None]
    latent = model.encoder(wave)  # [B, D, F]
    x = latent.transpose(1, 2).reshape(-1, latent.shape[1])
    for level, layer in enumerate(model.quantizer.layers):
        book = layer.codebook
        size, dim = book.embed.shape
        noise = torch.randn(size, dim, generator=gen)
        if level == 0:  # around the latents
            picks = torch.randint(0, x.shape[0], (size,), generator=gen)
            vectors = x[picks] + 0.5 * x.std(0, keepdim=True) * noise
        else:  # random directions, a quarter of the residual's norm
            vectors = noise * (0.25 * x.norm(dim=1).mean() / dim**0.5)
        book.embed.copy_(vectors)
        book.embed_avg.copy_(vectors)
        book.cluster_size.fill_(1.0)
        x = x - vectors[torch.cdist(x[None], vectors[None])[0].argmin(-1)]
    return model


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return build_reference()


@pytest.fixture(scope="module")
def model_dir(reference, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("encodec") / "encodec_24khz_random"
    reference.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def codec(model_dir) -> si.Codec:
    return si.Codec.load(model_dir)


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    return test_signal(1.0, 2, seed=7)[:, :-77]  # not a whole number of frames


def hf_encode(model, wave: np.ndarray, bandwidth: float, mask: np.ndarray | None = None):
    with torch.no_grad():
        out = model.encode(
            torch.from_numpy(wave)[:, None],
            padding_mask=None if mask is None else torch.from_numpy(mask),
            bandwidth=bandwidth,
        )
    assert out.audio_scales == [None]  # 24 kHz: normalize=False, one chunk
    return out.audio_codes[0].numpy()


def reference_ties(model, wave: np.ndarray, q: int, rel: float = 1e-5) -> np.ndarray:
    """[B, q, F] bool: where the reference's nearest codeword wins by less than `rel` of its
    squared distance, i.e. a tie that f32 rounding in the convs may break either way."""
    with torch.no_grad():
        x = model.encoder(torch.from_numpy(wave)[:, None]).transpose(1, 2)
        ties = []
        for layer in model.quantizer.layers[:q]:
            embed = layer.codebook.embed
            dist = (x**2).sum(-1, keepdim=True) - 2 * x @ embed.T + (embed**2).sum(-1)
            best, second = dist.topk(2, largest=False).values.unbind(-1)
            ties.append((second - best) < rel * best.abs())
            x = x - embed[dist.argmin(-1)]
    return torch.stack(ties, 1).numpy()


def assert_codes_match(got: np.ndarray, want: np.ndarray, ties: np.ndarray) -> None:
    """Equal codes, except that a frame may differ from its first reference near-tie on (the
    residuals of later codebooks then differ too); there must be few such frames."""
    assert got.shape == want.shape
    differs = got != want
    first = differs.argmax(1)  # [B, F]: the first differing codebook of each frame
    b_idx, f_idx = np.nonzero(differs.any(1))
    unexplained = [
        (b, first[b, f], f)
        for b, f in zip(b_idx, f_idx, strict=True)
        if not ties[b, first[b, f], f]
    ]
    assert not unexplained, f"codes differ without a reference tie at (b, q, f) {unexplained}"
    assert len(b_idx) <= max(1, differs.shape[-1] // 50), f"{len(b_idx)} frames differ"


def hf_decode(model, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.from_numpy(codes)[None], [None]).audio_values.numpy()[:, 0]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def ref_codes(reference, wave) -> np.ndarray:
    return hf_encode(reference, wave, 6.0)


def test_properties(codec: si.Codec) -> None:
    assert codec.format == "encodec"
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate) == (SR, HOP, 75.0)
    assert codec.channels == 1
    assert codec.num_codebooks == 32  # default: the largest target bandwidth (24 kbps)
    assert codec.codebook_size == 1024
    assert '"model_type":"encodec"' in codec.config_json


@pytest.mark.parametrize("bandwidth", [1.5, 6.0, 24.0])
def test_encode_matches_transformers(model_dir, codec, reference, wave, bandwidth) -> None:
    q = BANDWIDTHS[bandwidth]
    want = hf_encode(reference, wave, bandwidth)
    assert want.shape == (2, q, int(np.ceil(wave.shape[1] / HOP)))
    assert len(np.unique(want[:, 0])) > 10, "degenerate reference codes"
    ties = reference_ties(reference, wave, q)
    assert_codes_match(si.Codec.load(model_dir, num_codebooks=q).encode(wave), want, ties)
    # Fewer codebooks are a prefix of more: the default (32) codec's first q rows agree.
    assert_codes_match(codec.encode(wave)[:, :q], want, ties)
    assert_codes_match(codec.encode(wave[1])[:, :q], want[1:], ties[1:])


def test_padding_mask_is_zeroed_audio(codec, reference, wave) -> None:
    """HF multiplies the input by `padding_mask`; the engine sees the same zero-padded batch."""
    mask = np.ones_like(wave, dtype=bool)
    mask[1, -5000:] = False
    want = hf_encode(reference, wave, 6.0, mask)
    got = codec.encode(wave * mask)[:, :8]
    # With torch 2.15 one frame's first code is a near-tie that the reference resolves the
    # other way, and the residual codebooks of that frame follow (8 of 1200 codes, seen
    # 2026-12-08; exact with earlier torch). Every other frame is exact.
    assert got.shape == want.shape
    assert (got != want).any(axis=1).sum() <= 2


@pytest.mark.parametrize("q", [2, 8, 32])
def test_decode_matches_transformers(codec, reference, wave, q) -> None:
    codes = hf_encode(reference, wave, 24.0)[:, :q]
    want = hf_decode(reference, codes)
    got = codec.decode(codes)
    assert got.shape == (2, codes.shape[2] * HOP) == want.shape
    assert np.abs(want).max() > 1e-3, "silent reference"
    assert rel_err(got, want) < 1e-4


def test_stream_decode(codec, ref_codes) -> None:
    """Streaming equals batch once the first chunk is longer than the reflect padding (7 frames);
    frame by frame from the very start only the first frames differ (less audio to reflect)."""
    whole = codec.decode(ref_codes)
    frames = ref_codes.shape[2]
    dec = codec.stream_decoder(batch_size=2)
    pieces = [dec.step(ref_codes[:, :, :8])]
    pieces += [dec.step(ref_codes[:, :, f : f + 1]) for f in range(8, frames)]
    assert pieces[0].shape == (2, 8 * HOP) and all(p.shape == (2, HOP) for p in pieces[1:])
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-5)
    dec.reset()
    per_frame = np.concatenate([dec.step(ref_codes[:, :, f : f + 1]) for f in range(frames)], 1)
    assert per_frame.shape == whole.shape
    assert rel_err(per_frame, whole) < 1e-3
    np.testing.assert_allclose(per_frame[:, 10 * HOP :], whole[:, 10 * HOP :], atol=1e-4)


def test_stream_encode(codec, wave) -> None:
    frames = wave.shape[1] // HOP
    audio = wave[:, : frames * HOP]
    enc = codec.stream_encoder(batch_size=2)
    pieces, pos = [], 0
    for size in [2500, 1000, HOP, 5000, 7, 10**6]:
        pieces.append(enc.step(audio[:, pos : pos + size]))
        pos += size
    streamed = np.concatenate(pieces, axis=2)
    assert streamed.shape == (2, 32, frames)
    # The first 8 codebooks (deeper ones quantize residuals small enough for float noise to tie).
    np.testing.assert_array_equal(streamed[:, :8], codec.encode(audio)[:, :8])


def damaged_copy(model_dir: Path, tmp_path: Path, config=None, drop=None) -> Path:
    out = tmp_path / "damaged"
    shutil.copytree(model_dir, out)
    if config is not None:
        data = json.loads((out / "config.json").read_text())
        data.update(config)
        (out / "config.json").write_text(json.dumps(data))
    if drop is not None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(out / "model.safetensors"))
        del tensors[drop]
        save_file(tensors, str(out / "model.safetensors"))
    return out


def test_missing_tensor_is_named(model_dir, tmp_path) -> None:
    name = "decoder.layers.1.lstm.weight_hh_l1"
    with pytest.raises(si.CheckpointError, match=f"'{name}' is missing"):
        si.Codec.load(damaged_copy(model_dir, tmp_path, drop=name))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"norm_type": "time_group_norm"}, "norm_type"),
        ({"chunk_length_s": 1.0, "overlap": 0.01, "sampling_rate": 48000}, "chunk_length_s"),
        ({"normalize": True}, "normalize"),
        ({"use_causal_conv": False}, "use_causal_conv"),
    ],
)
def test_unsupported_config(model_dir, tmp_path, change, key) -> None:
    with pytest.raises(si.ConfigError, match=f"'{key}'"):
        si.Codec.load(damaged_copy(model_dir, tmp_path, config=change))


@pytest.mark.parametrize("q", [0, 5, 64])
def test_num_codebooks_must_match_a_bandwidth(model_dir, q) -> None:
    with pytest.raises(
        si.InputError, match=r"num_codebooks=\d+ is not allowed.*\[2, 4, 8, 16, 32\]"
    ):
        si.Codec.load(model_dir, num_codebooks=q)


def test_decode_rejects_too_many_codebooks(model_dir) -> None:
    codec = si.Codec.load(model_dir, num_codebooks=4, format="encodec")
    assert codec.num_codebooks == 4
    with pytest.raises(si.InputError, match="only 4"):
        codec.decode(np.zeros((1, 8, 3), dtype=np.int64))
