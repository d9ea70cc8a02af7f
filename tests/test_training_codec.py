"""Tests of the PyTorch codec twin (training/speechinfer_training) against docs/codec.md.

The expected tensor names, shapes and reference forward passes are derived here from the document,
independently of the model code.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors import safe_open

try:
    import speechinfer_training
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    import speechinfer_training

from speechinfer_training import Codec, load_pretrained, save_pretrained
from speechinfer_training.train_codec import main as train_main

DOC_DEFAULTS = {
    "model_type": "speechinfer-codec",
    "sample_rate": 16000,
    "channels": 1,
    "n_filters": 32,
    "ratios": [8, 5, 4, 2],
    "kernel_size": 7,
    "residual_kernel_size": 3,
    "last_kernel_size": 7,
    "n_residual_layers": 1,
    "dilation_base": 2,
    "compress": 2,
    "dimension": 128,
    "num_codebooks": 8,
    "codebook_size": 1024,
}

TINY = {
    "n_filters": 4,
    "ratios": [4, 2],
    "dimension": 16,
    "num_codebooks": 3,
    "codebook_size": 32,
}

CONFIGS = [
    TINY,
    {**TINY, "ratios": [2, 2], "num_codebooks": 1, "codebook_size": 16},
    {**TINY, "ratios": [3, 2, 2], "n_filters": 8, "codebook_size": 64, "num_codebooks": 4},
    {
        **TINY,
        "channels": 2,
        "n_residual_layers": 2,
        "dilation_base": 3,
        "kernel_size": 5,
        "last_kernel_size": 3,
        "compress": 4,
    },
    {**TINY, "ratios": [5], "n_filters": 6, "residual_kernel_size": 5, "sample_rate": 8000},
]


def full_config(config: dict) -> dict:
    return {**DOC_DEFAULTS, **config}


def hop_of(config: dict) -> int:
    return math.prod(full_config(config)["ratios"])


def expected_tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every contract tensor and its shape, straight from docs/codec.md."""
    c = full_config(config)
    nf, ratios, levels = c["n_filters"], c["ratios"], len(c["ratios"])
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, kernel: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, kernel)
        shapes[f"{name}.bias"] = (cout,)

    def residual_units(prefix: str, channels: int) -> None:
        hidden = channels // c["compress"]
        for j in range(c["n_residual_layers"]):
            conv(f"{prefix}.res.{j}.conv1", channels, hidden, c["residual_kernel_size"])
            conv(f"{prefix}.res.{j}.conv2", hidden, channels, 1)

    conv("encoder.conv_in", c["channels"], nf, c["kernel_size"])
    for i, r in enumerate(reversed(ratios)):
        channels = nf * 2**i
        residual_units(f"encoder.blocks.{i}", channels)
        conv(f"encoder.blocks.{i}.down", channels, 2 * channels, 2 * r)
    conv("encoder.conv_out", nf * 2**levels, c["dimension"], c["last_kernel_size"])
    for q in range(c["num_codebooks"]):
        shapes[f"quantizer.layers.{q}.codebook"] = (c["codebook_size"], c["dimension"])
    conv("decoder.conv_in", c["dimension"], nf * 2**levels, c["kernel_size"])
    for i, r in enumerate(ratios):
        channels = nf * 2 ** (levels - i)
        shapes[f"decoder.blocks.{i}.up.weight"] = (channels, channels // 2, 2 * r)
        shapes[f"decoder.blocks.{i}.up.bias"] = (channels // 2,)
        residual_units(f"decoder.blocks.{i}", channels // 2)
    conv("decoder.conv_out", nf, c["channels"], c["last_kernel_size"])
    return shapes


def ref_conv(
    x: torch.Tensor, t: dict, name: str, stride: int = 1, dilation: int = 1
) -> torch.Tensor:
    weight = t[f"{name}.weight"]
    left = (weight.shape[-1] - 1) * dilation + 1 - stride
    x = F.pad(x, (left, 0))
    return F.conv1d(x, weight, t[f"{name}.bias"], stride=stride, dilation=dilation)


def ref_conv_transpose(x: torch.Tensor, t: dict, name: str, r: int) -> torch.Tensor:
    """Overlap-add written out: input frame n writes kernel tap k to output n * r + k."""
    weight, bias = t[f"{name}.weight"], t[f"{name}.bias"]
    batch, _, frames = x.shape
    taps = torch.einsum("bin,iok->bonk", x, weight)
    out_channels = weight.shape[1]
    first = taps[..., :r].reshape(batch, out_channels, frames * r)
    second = taps[..., r:].reshape(batch, out_channels, frames * r)
    full = F.pad(first, (0, r)) + F.pad(second, (r, 0)) + bias[None, :, None]
    assert full.shape[-1] == frames * r + r
    return full[..., :-r]


def ref_residual_units(x: torch.Tensor, t: dict, prefix: str, c: dict) -> torch.Tensor:
    for j in range(c["n_residual_layers"]):
        unit = f"{prefix}.res.{j}"
        h = ref_conv(F.elu(x), t, f"{unit}.conv1", dilation=c["dilation_base"] ** j)
        x = x + ref_conv(F.elu(h), t, f"{unit}.conv2")
    return x


def ref_encode(wave: torch.Tensor, t: dict, config: dict) -> torch.Tensor:
    c = full_config(config)
    hop = hop_of(config)
    wave = F.pad(wave, (0, (-wave.shape[-1]) % hop))
    x = ref_conv(wave, t, "encoder.conv_in")
    for i, r in enumerate(reversed(c["ratios"])):
        x = ref_residual_units(x, t, f"encoder.blocks.{i}", c)
        x = ref_conv(F.elu(x), t, f"encoder.blocks.{i}.down", stride=r)
    latent = ref_conv(F.elu(x), t, "encoder.conv_out")
    residual = latent.transpose(1, 2)
    codes = []
    for q in range(c["num_codebooks"]):
        codebook = t[f"quantizer.layers.{q}.codebook"]
        dist = (codebook * codebook).sum(-1) - 2 * residual @ codebook.T
        code = dist.argmin(-1)
        residual = residual - codebook[code]
        codes.append(code)
    return torch.stack(codes, dim=1)


def ref_decode(codes: torch.Tensor, t: dict, config: dict) -> torch.Tensor:
    c = full_config(config)
    latent = sum(t[f"quantizer.layers.{q}.codebook"][codes[:, q]] for q in range(codes.shape[1]))
    x = ref_conv(latent.transpose(1, 2), t, "decoder.conv_in")
    for i, r in enumerate(c["ratios"]):
        x = ref_conv_transpose(F.elu(x), t, f"decoder.blocks.{i}.up", r)
        x = ref_residual_units(x, t, f"decoder.blocks.{i}", c)
    return ref_conv(F.elu(x), t, "decoder.conv_out")


def seeded_codec(config: dict, seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    return Codec(config).eval()


def test_default_codec() -> None:
    codec = seeded_codec({})
    assert codec.config == DOC_DEFAULTS
    assert speechinfer_training.DEFAULT_CONFIG == DOC_DEFAULTS
    assert json.loads(json.dumps(codec.config)) == codec.config
    assert (codec.hop_length, codec.frame_rate, codec.sample_rate) == (320, 50.0, 16000)
    assert (codec.num_codebooks, codec.codebook_size) == (8, 1024)
    wave = torch.randn(2, 1, 1000)
    with torch.no_grad():
        codes = codec.encode(wave)
        assert codes.shape == (2, 8, 4) and codes.dtype == torch.int64
        assert codec.decode(codes).shape == (2, 1, 1280)


def test_missing_keys_take_defaults() -> None:
    codec = Codec({"num_codebooks": 2, "ratios": (4, 2)})
    assert codec.config == {**DOC_DEFAULTS, "num_codebooks": 2, "ratios": [4, 2]}
    assert codec.hop_length == 8 and codec.frame_rate == 2000.0


@pytest.mark.parametrize(
    "bad",
    [
        {"unknown_key": 1},
        {"model_type": "speechinfer-lm"},
        {"ratios": []},
        {"num_codebooks": 0},
        {"dimension": 2.5},
        {"codebook_size": True},
    ],
)
def test_invalid_config_raises(bad: dict) -> None:
    with pytest.raises(ValueError):
        Codec(bad)


@pytest.mark.parametrize("config", CONFIGS)
def test_shapes_and_reference(config: dict) -> None:
    codec = seeded_codec(config)
    c, hop = full_config(config), hop_of(config)
    assert codec.config == c
    tensors = codec.export_state_dict()
    for length in (1, hop - 1 or 1, hop, 3 * hop + 1, 7 * hop + hop // 2):
        frames = math.ceil(length / hop)
        wave = torch.randn(3, c["channels"], length)
        with torch.no_grad():
            codes = codec.encode(wave)
            assert codes.shape == (3, c["num_codebooks"], frames)
            assert codes.dtype == torch.int64
            assert 0 <= int(codes.min()) and int(codes.max()) < c["codebook_size"]
            assert torch.equal(codes, ref_encode(wave, tensors, config))
            assert codec.encode_latent(wave).shape == (3, c["dimension"], frames)
            audio = codec.decode(codes)
            assert audio.shape == (3, c["channels"], frames * hop)
            expected = ref_decode(codes, tensors, config)
            torch.testing.assert_close(audio, expected, rtol=1e-4, atol=1e-5)
            recon, train_codes, losses = codec(wave)
        assert recon.shape == wave.shape
        assert torch.equal(train_codes, codes)
        assert losses["commitment"].ndim == 0


def test_decode_with_fewer_codebooks() -> None:
    config = {**TINY, "num_codebooks": 4}
    codec = seeded_codec(config)
    tensors = codec.export_state_dict()
    with torch.no_grad():
        codes = codec.encode(torch.randn(2, 1, 100))
        for q in range(1, 5):
            audio = codec.decode(codes[:, :q])
            assert audio.shape == (2, 1, 13 * 8)
            torch.testing.assert_close(
                audio, ref_decode(codes[:, :q], tensors, config), rtol=1e-4, atol=1e-5
            )
        assert codec.encode(torch.randn(2, 1, 100), num_codebooks=2).shape == (2, 2, 13)
        with pytest.raises(ValueError):
            codec.decode(torch.zeros(2, 5, 13, dtype=torch.int64))


def test_exported_tensor_names_and_config(tmp_path: Path) -> None:
    for index, config in enumerate([*CONFIGS, {}]):
        codec = seeded_codec(config)
        directory = save_pretrained(codec, tmp_path / str(index))
        assert json.loads((directory / "config.json").read_text()) == full_config(config)
        expected = expected_tensor_shapes(config)
        with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
            assert sorted(handle.keys()) == sorted(expected)
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                assert tuple(tensor.shape) == expected[name], name
                assert tensor.dtype == torch.float32
        assert sorted(codec.export_state_dict()) == sorted(expected)
        assert set(expected) < set(codec.state_dict())


def test_save_load_round_trip(tmp_path: Path) -> None:
    config = CONFIGS[2]
    codec = seeded_codec(config)
    wave = torch.randn(2, 1, 500)
    loaded = load_pretrained(save_pretrained(codec, tmp_path / "f32"))
    assert isinstance(loaded, Codec) and not loaded.training
    assert loaded.config == codec.config
    with torch.no_grad():
        codes = codec.encode(wave)
        assert torch.equal(loaded.encode(wave), codes)
        assert torch.equal(loaded.decode(codes), codec.decode(codes))
        for name, tensor in codec.export_state_dict().items():
            assert torch.equal(loaded.export_state_dict()[name], tensor)

    half = load_pretrained(save_pretrained(codec, tmp_path / "bf16", dtype="bfloat16"))
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), framework="pt") as handle:
        assert all(handle.get_tensor(k).dtype == torch.bfloat16 for k in handle.keys())
    assert all(t.dtype == torch.float32 for t in half.export_state_dict().values())
    with pytest.raises(ValueError):
        save_pretrained(codec, tmp_path / "bad", dtype="int8")  # type: ignore[arg-type]


def test_load_rejects_wrong_tensor_names(tmp_path: Path) -> None:
    codec = seeded_codec(TINY)
    tensors = dict(codec.export_state_dict())
    tensors["quantizer.layers.0.cluster_size"] = torch.ones(32)
    with pytest.raises(ValueError, match="unexpected"):
        Codec(TINY).load_export_state_dict(tensors)
    tensors = dict(codec.export_state_dict())
    del tensors["decoder.conv_out.bias"]
    with pytest.raises(ValueError, match="missing"):
        Codec(TINY).load_export_state_dict(tensors)


@pytest.mark.parametrize("config", [TINY, CONFIGS[3]])
def test_causality(config: dict) -> None:
    codec = seeded_codec(config)
    hop, channels = hop_of(config), full_config(config)["channels"]
    wave = torch.randn(2, channels, 12 * hop)
    cut = 5 * hop + 3
    changed = wave.clone()
    changed[..., cut:] = torch.randn_like(changed[..., cut:])
    with torch.no_grad():
        latent, latent_changed = codec.encode_latent(wave), codec.encode_latent(changed)
        whole = cut // hop
        assert torch.equal(latent[..., :whole], latent_changed[..., :whole])
        assert not torch.equal(latent[..., whole:], latent_changed[..., whole:])
        codes = codec.encode(wave)
        assert torch.equal(codes[..., :whole], codec.encode(changed)[..., :whole])

        future = codes.clone()
        future[..., 7:] = torch.randint(0, codec.codebook_size, future[..., 7:].shape)
        audio, audio_future = codec.decode(codes), codec.decode(future)
        assert torch.equal(audio[..., : 7 * hop], audio_future[..., : 7 * hop])
        assert not torch.equal(audio, audio_future)


def test_eval_forward_does_not_touch_codebooks() -> None:
    codec = seeded_codec(TINY)
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    with torch.no_grad():
        codec(torch.randn(2, 1, 64))
        codec.encode(torch.randn(2, 1, 64))
    assert all(torch.equal(before[k], v) for k, v in codec.state_dict().items())
    codec.train()
    codec(torch.randn(2, 1, 64))
    assert not torch.equal(
        before["quantizer.layers.0.codebook"], codec.quantizer.layers[0].codebook
    )


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_args(out: Path, config_path: Path, steps: int, *extra: str) -> list[str]:
    return [
        "--synthetic",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--config",
        str(config_path),
        "--batch-size",
        "4",
        "--segment-seconds",
        "0.25",
        "--lr",
        "3e-3",
        "--checkpoint-every",
        "15",
        "--seed",
        "3",
        "--print-every",
        "1000",
        *extra,
    ]


def test_training_decreases_loss_and_resumes(tmp_path: Path) -> None:
    config = {
        "n_filters": 8,
        "ratios": [4, 2],
        "dimension": 16,
        "num_codebooks": 2,
        "codebook_size": 32,
    }
    config_path = tmp_path / "codec.json"
    config_path.write_text(json.dumps(config))

    straight = tmp_path / "straight"
    train_main(train_args(straight, config_path, 30))
    log = read_log(straight / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 31))
    losses = [r["loss"] for r in log]
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert torch.load(straight / "checkpoint.pt", weights_only=True)["step"] == 30
    trained = load_pretrained(straight / "model")
    assert trained.config == full_config(config)

    resumed = tmp_path / "resumed"
    train_main(train_args(resumed, config_path, 15))
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["step"] == 15
    with (resumed / "log.jsonl").open("a") as handle:
        handle.write(json.dumps({"step": 16, "loss": -1.0}) + "\n")
    train_main(train_args(resumed, config_path, 30, "--resume"))
    resumed_log = read_log(resumed / "log.jsonl")
    assert [r["step"] for r in resumed_log] == list(range(1, 31))
    assert resumed_log == log
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["step"] == 30
    final = load_pretrained(resumed / "model")
    for name, tensor in trained.export_state_dict().items():
        assert torch.equal(final.export_state_dict()[name], tensor), name


def test_training_on_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    sf.write(audio_dir / "a.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 8000)
    sf.write(audio_dir / "b.wav", 0.1 * rng.standard_normal((3000, 2)).astype(np.float32), 22050)
    sf.write(audio_dir / "c.wav", 0.1 * rng.standard_normal(4000).astype(np.float32), 16000)
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"audio/{n}.wav"}) + "\n" for n in "abc"))
    config_path = tmp_path / "codec.json"
    config_path.write_text(json.dumps(TINY))
    for source, name in ((audio_dir, "dir"), (manifest, "manifest")):
        out = tmp_path / name
        train_main(
            [
                "--data",
                str(source),
                "--out",
                str(out),
                "--steps",
                "2",
                "--config",
                str(config_path),
                "--batch-size",
                "3",
                "--segment-seconds",
                "0.5",
            ]
        )
        assert len(read_log(out / "log.jsonl")) == 2
        assert isinstance(load_pretrained(out / "model"), Codec)


def test_freeze_encoder_keeps_the_codes(tmp_path: Path) -> None:
    """``--freeze-encoder`` continues a run training the decoder only: the encoder and the
    codebooks (hence every code) stay bit-identical, the decoder moves."""
    config_path = tmp_path / "codec.json"
    config_path.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    train_main(train_args(out, config_path, 10))
    before = load_pretrained(out / "model").export_state_dict()
    train_main(train_args(out, config_path, 16, "--resume", "--freeze-encoder"))
    after = load_pretrained(out / "model").export_state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        same = torch.equal(after[name], tensor)
        assert same == (not name.startswith("decoder.")), name
