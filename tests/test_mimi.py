"""Kyutai Mimi checkpoints load as they are released and match the PyTorch `moshi` package.

The reference is moshi's own Mimi, built with random weights (no download) and made non-trivial:
layer scales and norms are perturbed so that the transformers matter, and every codebook is
seeded k-means style from latents of the model itself, so that codes vary frame to frame (moshi's
untrained codebooks are all zero). Its state dict is saved under the released tensor names
(~385 MB, once per module, in a temporary directory).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from conftest import chirp_signal

loaders = pytest.importorskip(
    "moshi.models.loaders", reason="the PyTorch `moshi` package (Mimi reference) is not installed"
)

SR = 24000
HOP = 1920


def test_signal(seconds: float, batch: int, seed: int) -> np.ndarray:
    return chirp_signal(seconds, batch, seed, SR)


test_signal.__test__ = False  # a helper, not a test


def released_name(name: str) -> str:
    """moshi's module names → the names of the released tokenizer file."""
    return name.replace("in_projs.0.weight", "in_proj_weight").replace(
        "out_projs.0.weight", "out_proj.weight"
    )


@torch.no_grad()
def build_reference() -> torch.nn.Module:
    torch.manual_seed(0)
    model = loaders.get_mimi(None, device="cpu", num_codebooks=8)
    gen = torch.Generator().manual_seed(1)
    for name, param in model.named_parameters():
        if "layer_scale" in name:
            param.copy_(0.2 + 0.1 * torch.randn(param.shape, generator=gen))
        elif "norm" in name and name.endswith("weight"):
            param.copy_(1 + 0.1 * torch.randn(param.shape, generator=gen))
    wave = torch.from_numpy(test_signal(2.0, 4, seed=123))[:, None]
    latent = model._encode_to_unquantized_latent(wave)
    for rvq in (model.quantizer.rvq_first, model.quantizer.rvq_rest):
        x = rvq.input_proj(latent).transpose(1, 2).reshape(-1, rvq.dimension)
        for level, layer in enumerate(rvq.vq.layers):
            book = layer._codebook
            noise = torch.randn(book.codebook_size, book.dim, generator=gen)
            if level == 0:  # around the latents (which sit far from 0)
                picks = torch.randint(0, x.shape[0], (book.codebook_size,), generator=gen)
                vectors = x[picks] + 0.5 * x.std(0, keepdim=True) * noise
            else:  # random directions, a quarter of the residual's norm
                vectors = noise * (0.25 * x.norm(dim=1).mean() / book.dim**0.5)
            usage = 0.5 + 2 * torch.rand(book.codebook_size, generator=gen)
            book.embedding_sum.copy_(vectors * usage[:, None])
            book.cluster_usage.copy_(usage)
            book.register_buffer("_embedding", None, persistent=False)
            codes = torch.cdist(x[None], book.embedding[None])[0].argmin(-1)
            x = x - book.embedding[codes]
    return model.eval()


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    return build_reference()


@pytest.fixture(scope="module")
def state(reference) -> dict[str, torch.Tensor]:
    return {released_name(k): v.contiguous() for k, v in reference.state_dict().items()}


@pytest.fixture(scope="module")
def mimi_file(state, tmp_path_factory) -> Iterator[Path]:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("mimi") / "tokenizer-random.safetensors"
    save_file(state, str(path))
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def codec(mimi_file) -> si.Codec:
    return si.Codec.load(mimi_file, num_codebooks=8)


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    return test_signal(1.7, 2, seed=7)  # not a whole number of frames


@pytest.fixture(scope="module")
def ref_codes(reference, wave) -> np.ndarray:
    with torch.no_grad():
        return reference.encode(torch.from_numpy(wave)[:, None]).numpy()


def moshi_decode(model, codes: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.decode(torch.from_numpy(codes)).numpy()[:, 0]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_properties(codec: si.Codec) -> None:
    assert codec.format == "mimi"
    assert codec.sample_rate == SR
    assert codec.frame_rate == 12.5
    assert codec.hop_length == HOP
    assert codec.channels == 1
    assert codec.num_codebooks == 8
    assert codec.codebook_size == 2048
    assert '"model_type":"mimi"' in codec.config_json


def test_encode_matches_moshi(codec: si.Codec, wave, ref_codes) -> None:
    codes = codec.encode(wave)
    assert codes.shape == (2, 8, int(np.ceil(wave.shape[1] / HOP))) == ref_codes.shape
    assert len(np.unique(ref_codes[:, 0])) > 10, "degenerate reference codes"
    np.testing.assert_array_equal(codes, ref_codes)
    # A batch item encodes the same alone.
    np.testing.assert_array_equal(codec.encode(wave[1]), ref_codes[1:])


@pytest.mark.parametrize("q", [8, 3, 1])
def test_decode_matches_moshi(codec: si.Codec, reference, ref_codes, q: int) -> None:
    codes = ref_codes[:, :q]
    want = moshi_decode(reference, codes)
    got = codec.decode(codes)
    assert got.shape == (2, codes.shape[2] * HOP)
    assert rel_err(got, want) < 1e-4


def test_stream_decode_frame_by_frame(codec: si.Codec, reference, ref_codes) -> None:
    whole = codec.decode(ref_codes)
    dec = codec.stream_decoder(batch_size=2)
    pieces = [dec.step(ref_codes[:, :, f : f + 1]) for f in range(ref_codes.shape[2])]
    assert all(p.shape == (2, HOP) for p in pieces)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=1e-6)
    with torch.no_grad(), reference.streaming(2):
        ref = [
            reference.decode(torch.from_numpy(ref_codes[:, :, f : f + 1])).numpy()[:, 0]
            for f in range(ref_codes.shape[2])
        ]
    assert rel_err(np.concatenate(pieces, axis=1), np.concatenate(ref, axis=1)) < 1e-4


def test_stream_decode_reset_one_item(codec: si.Codec, ref_codes) -> None:
    dec = codec.stream_decoder(batch_size=2)
    first = dec.step(ref_codes[:, :, :5])
    dec.reset(1)
    later = dec.step(ref_codes[:, :, 5:])
    whole = codec.decode(ref_codes)
    np.testing.assert_allclose(np.concatenate([first, later], axis=1)[0], whole[0], atol=1e-6)
    fresh = codec.decode(ref_codes[1:, :, 5:])[0]
    np.testing.assert_allclose(later[1], fresh, atol=1e-6)


def test_stream_encode_matches_moshi(codec: si.Codec, reference, wave, ref_codes) -> None:
    frames = wave.shape[1] // HOP
    audio = wave[:, : frames * HOP]
    enc = codec.stream_encoder(batch_size=2)
    pieces, pos = [], 0
    for size in [1000, 2840, HOP, 5000, 7, 10**6]:
        pieces.append(enc.step(audio[:, pos : pos + size]))
        pos += size
        if pos >= audio.shape[1]:
            break
    streamed = np.concatenate(pieces, axis=2)
    assert streamed.shape == (2, 8, frames)
    with torch.no_grad(), reference.streaming(2):
        ref = [
            reference.encode(torch.from_numpy(audio[:, None, f * HOP : (f + 1) * HOP])).numpy()
            for f in range(frames)
        ]
    np.testing.assert_array_equal(streamed, np.concatenate(ref, axis=2))
    np.testing.assert_array_equal(streamed, ref_codes[:, :, :frames])


def test_past_the_attention_window(codec: si.Codec, reference) -> None:
    """11 s = 275 steps at 25 Hz: the 250-step window slides; streaming still equals batch."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2048, (1, 8, 138))
    whole = codec.decode(codes)
    assert rel_err(whole, moshi_decode(reference, codes)) < 1e-4
    dec = codec.stream_decoder()
    pieces = [dec.step(codes[:, :, f : f + 23]) for f in range(0, 138, 23)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=2e-6)


@torch.no_grad()
def near_ties(model, wave: np.ndarray, rel_gap: float = 1e-5) -> np.ndarray:
    """`[B, Q, F]` booleans: codes at or after, in the same RVQ half, a level whose two nearest
    codebook vectors are within `rel_gap` (in f64, along moshi's own path), so that float32
    rounding alone may pick either (and the residuals after it differ). Those codes are not
    compared."""
    latent = model._encode_to_unquantized_latent(torch.from_numpy(wave)[:, None])
    codes = model.quantizer.encode(latent).transpose(0, 1)  # [Q, B, F]
    halves = [(model.quantizer.rvq_first, codes[:1]), (model.quantizer.rvq_rest, codes[1:])]
    masks = []
    for rvq, half in halves:
        x = rvq.input_proj(latent).double()
        tied = torch.zeros(x.shape[0], x.shape[2], dtype=torch.bool)
        for layer, level_codes in zip(rvq.vq.layers, half, strict=False):
            book = layer._codebook.embedding.double()
            rows = x.transpose(1, 2)  # [B, F, dim]
            dist = torch.cdist(rows, book[None].expand(rows.shape[0], -1, -1))
            best = dist.topk(2, dim=-1, largest=False).values
            tied |= (best[..., 1] - best[..., 0]) < rel_gap * best[..., 0]
            masks.append(tied.clone())
            x = x - book[level_codes].transpose(1, 2)
    return torch.stack(masks, dim=1).numpy()


def test_all_32_codebooks(mimi_file: Path, reference, wave) -> None:
    codec = si.Codec.load(mimi_file, num_codebooks=32, format="mimi")
    assert codec.num_codebooks == 32
    audio = wave[:, : HOP * 8]
    reference.set_num_codebooks(32)
    try:
        with torch.no_grad():
            want = reference.encode(torch.from_numpy(audio)[:, None]).numpy()
        excused = near_ties(reference, audio)
    finally:
        reference.set_num_codebooks(8)
    codes = codec.encode(audio)
    assert codes.shape == want.shape == (2, 32, 8)
    assert excused.mean() < 0.25, "too many near-ties to compare"
    np.testing.assert_array_equal(codes[~excused], want[~excused])
    assert rel_err(codec.decode(want), moshi_decode(reference, want)) < 1e-4


@pytest.mark.parametrize("q", [0, 33])
def test_codebook_limit(mimi_file: Path, q: int) -> None:
    with pytest.raises((si.InputError, si.ConfigError), match=r"between 1 and 32.*got " + str(q)):
        si.Codec.load(mimi_file, num_codebooks=q)


def test_raw_state_dict_names_and_weight_norm(state, reference, ref_codes, tmp_path) -> None:
    """PyTorch's own names (`in_projs.0.weight`) and weight-norm pairs load to the same model."""
    from safetensors.torch import save_file

    tensors = {}
    for name, value in state.items():
        name = name.replace("in_proj_weight", "in_projs.0.weight").replace(
            "out_proj.weight", "out_projs.0.weight"
        )
        tensors[name] = value
    for prefix in ["decoder.model.0.conv.conv", "decoder.model.2.convtr.convtr"]:
        v = tensors.pop(f"{prefix}.weight")
        g = v.flatten(1).norm(dim=1).reshape(-1, *[1] * (v.dim() - 1))
        tensors[f"{prefix}.weight_g"] = g.contiguous()
        tensors[f"{prefix}.weight_v"] = (v * 2).contiguous()  # g · v / ‖v‖ gives v back
    path = tmp_path / "raw.safetensors"
    save_file(tensors, str(path))
    codec = si.Codec.load(path)
    assert codec.format == "mimi"
    assert rel_err(codec.decode(ref_codes), moshi_decode(reference, ref_codes)) < 1e-4
    path.unlink()


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("decoder_transformer.transformer.layers.3.linear1.weight", "drop"),
        ("quantizer.rvq_rest.vq.layers.4._codebook.embedding_sum", "drop"),
        ("encoder.model.6.conv.conv.weight", "reshape"),
    ],
)
def test_bad_tensor_is_named(state, tmp_path, name: str, damage: str) -> None:
    from safetensors.torch import save_file

    tensors = dict(state)
    if damage == "drop":
        del tensors[name]
        message = f"'{name}' is missing"
    else:
        tensors[name] = tensors[name][:, :, :-1].contiguous()
        message = f"'{name}' .* has shape"
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(si.CheckpointError, match=message):
        si.Codec.load(path)
    path.unlink()


def test_not_a_mimi_file(tmp_path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(3, dtype=np.float32)}, str(path))
    with pytest.raises(si.CheckpointError, match="not a Kyutai Mimi checkpoint"):
        si.Codec.load(path)
    with pytest.raises(si.InputError, match="unknown codec format"):
        si.Codec.load(path, format="wavtokenizer")


def test_codes_match_rustymimi(mimi_file: Path, codec: si.Codec, wave) -> None:
    """Kyutai's own Rust Mimi (the `rustymimi` wheel) reads the same file: same codes, same audio.
    Whole frames only: rustymimi does not pad a partial last frame as moshi does."""
    rustymimi = pytest.importorskip("rustymimi", reason="rustymimi is not installed (pip wheel)")
    tokenizer = rustymimi.Tokenizer(str(mimi_file), num_codebooks=8)
    audio = np.ascontiguousarray(wave[:, None, : (wave.shape[1] // HOP) * HOP])
    want = tokenizer.encode(audio).astype(np.int64)
    assert want.shape == (2, 8, wave.shape[1] // HOP)
    np.testing.assert_array_equal(codec.encode(audio[:, 0]), want)
    assert rel_err(codec.decode(want), tokenizer.decode(want.astype(np.uint32))[:, 0]) < 1e-4


def test_num_codebooks_is_mimi_only(export_codec) -> None:
    from conftest import SMALL_CODEC

    _, directory = export_codec(SMALL_CODEC)
    assert si.Codec.load(directory).format == "speechinfer"
    with pytest.raises(si.InputError, match="Mimi checkpoints only"):
        si.Codec.load(directory, num_codebooks=2)


BF16_MODULES = (
    "encoder.",
    "decoder.",
    "encoder_transformer.",
    "decoder_transformer.",
    "downsample.",
)


def test_bf16_weights_match_moshi_holding_the_same_rounded_weights(
    mimi_file: Path, reference, ref_codes
) -> None:
    """weights="bf16": exact (1e-4) against moshi with the same conv/linear weights rounded to
    bfloat16, streaming equal to the whole call, and within the rounding of the f32 model."""
    import copy

    codec = si.Codec.load(mimi_file, weights="bf16")
    assert codec.weights == "bf16"
    rounded = copy.deepcopy(reference)
    changed = 0
    with torch.no_grad():
        for name, param in rounded.named_parameters():
            if param.ndim >= 2 and name.startswith(BF16_MODULES):
                param.copy_(param.to(torch.bfloat16).float())
                changed += 1
    assert changed > 50, "the rounding missed the model's weights"
    whole = codec.decode(ref_codes)
    assert rel_err(whole, moshi_decode(rounded, ref_codes)) < 1e-4
    drift = rel_err(whole, moshi_decode(reference, ref_codes))
    assert 1e-4 < drift < 3e-2, drift
    dec = codec.stream_decoder(batch_size=2)
    pieces = [dec.step(ref_codes[:, :, f : f + 1]) for f in range(ref_codes.shape[2])]
    assert rel_err(np.concatenate(pieces, axis=1), whole) < 1e-5


def test_bf16_weights_are_mimi_only(export_codec, mimi_file: Path) -> None:
    from conftest import SMALL_CODEC

    _, directory = export_codec(SMALL_CODEC)
    assert si.Codec.load(directory).weights == "float32"
    with pytest.raises(si.InputError, match="Mimi checkpoints only"):
        si.Codec.load(directory, weights="bf16")
    with pytest.raises(si.InputError, match="'float32' or 'bf16'"):
        si.Codec.load(mimi_file, weights="int4")
