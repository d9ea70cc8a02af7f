"""TTS training side (docs/tts.md): text, LM config, the utterance grid, token shards made with
the engine's codec, train_tts (resume, --init-from, torchrun with 2 processes) and the exported
pipeline directory as the engine loads it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechinfer as si
import torch
from conftest import random_codec
from safetensors import safe_open
from speechinfer.textnorm import number_words
from speechinfer_training import compare_init, compare_patterns, corpus, train_text_lm, train_tts
from speechinfer_training import tts_data as td
from speechinfer_training.checkpoint import read_checkpoint
from speechinfer_training.codec import Codec as TwinCodec
from speechinfer_training.export import load_pretrained, save_pretrained
from speechinfer_training.lm import SpeechLM
from speechinfer_training.lm_training import LoopOptions, read_log, stream_losses
from speechinfer_training.tts_export import directory_bytes, save_pipeline

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Never put off until tomorrow what you can do today!",
]
VOICES = ["slt", "rms"]
TINY_CODEC = {
    "n_filters": 4,
    "ratios": [8, 5, 4, 4],  # hop 640: 25 frames/s at 16 kHz
    "dimension": 16,
    "num_codebooks": 3,
    "codebook_size": 32,
}
Q = 2  # codebooks the LM uses (the codec has 3)
SIZES = {"d_model": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64}
LOOP = {"batch_size": 2, "eval_every": 2, "print_every": 100, "checkpoint_every": 100}
LOSS_KEYS = ("loss", "audio_loss", "text_loss", "heldout_audio_loss", "heldout_text_loss")


def synthetic_corpus(out: Path) -> Path:
    """Tones instead of speech (when flite is missing), with the corpus manifest's fields."""
    lines = []
    for i, text in enumerate(SENTENCES):
        for v, voice in enumerate(VOICES):
            t = np.arange(int(16000 * (1.5 + 0.3 * i + 0.1 * v))) / 16000
            path = out / corpus.wav_relpath(voice, text)
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.3 * np.sin(2 * np.pi * (200 + 50 * i + 80 * v) * t), 16000)
            entry = {"id": corpus.sentence_id(text), "text": text, "voice": voice}
            entry |= {"path": corpus.wav_relpath(voice, text), "duration": len(t) / 16000}
            lines.append(json.dumps(entry | {"split": "heldout" if i == 1 else "train"}))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return out / "manifest.jsonl"


@dataclass
class Data:
    root: Path
    manifest: Path
    codec: Path
    shards: Path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    root = tmp_path_factory.mktemp("tts")
    text = root / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    try:
        manifest = corpus.build_corpus(
            root / "corpus",
            voices=VOICES,
            held_out_fraction=0.5,
            seed=3,  # both splits occur (tests/test_corpus.py)
            text_files=[text],
            use_fortunes=False,
            install=False,
        )
    except corpus.MissingPackageError:
        manifest = synthetic_corpus(root / "corpus")
    codec = save_pretrained(random_codec(TINY_CODEC), root / "codec")
    shards = td.tokenize_corpus(manifest, codec, root / "shards", num_codebooks=Q, batch_size=4)
    return Data(root, manifest, codec, shards)


def run_tts(data: Data, out: Path, steps: int, **options) -> Path:
    tts = train_tts.TtsOptions(shards=data.shards, out=out, **{**SIZES, **options})
    return train_tts.train(tts, LoopOptions(steps=steps, threads=1, **LOOP))


@pytest.fixture(scope="module")
def trained(data: Data) -> Path:
    """An uninterrupted 3-step run with its pipeline export."""
    out = data.root / "run"
    assert run_tts(data, out, 3) == out / "pipeline"
    return out


# ----------------------------------------------------------------------------------------------


def test_char_tokenizer_and_normalize_text(tmp_path: Path) -> None:
    tok = td.make_char_tokenizer(tmp_path / "tokenizer.json")
    assert (tmp_path / "tokenizer.json").is_file()
    assert tok.get_vocab_size() == len(td.CHARACTERS) == 35
    text = "Hello, World! it's a-ok; yes: no?"
    assert tok.encode(text, add_special_tokens=False).ids == td.char_ids(text)
    assert tok.decode(td.char_ids(text)) == text.lower()
    assert td.normalize_text('  "It\u2019s  21 o\'clock,"  she said.') == (
        "it's twenty-one o'clock, she said."
    )
    assert (
        td.normalize_text("Pi is 3.14 and 007.")
        == "pi is three point one four and zero zero seven."
    )
    assert td.normalize_text("12,000 people, 3 dogs") == "twelve thousand people, three dogs"
    assert number_words(1_234_567) == (
        "one million two hundred thirty-four thousand five hundred sixty-seven"
    )
    with pytest.raises(ValueError, match="'@'"):
        td.normalize_text("mail me @ home")
    with pytest.raises(ValueError, match="no letters"):
        td.normalize_text(" ... ")


def test_phone_tokenizer_and_options(tmp_path: Path) -> None:
    from speechinfer.phonemes import PHONES

    tok = td.make_phone_tokenizer(tmp_path / "tokenizer.json")
    assert tok.get_vocab_size() == len(PHONES)
    assert tok.encode("pau hh ax l ow pau", add_special_tokens=False).ids == [
        PHONES.index(p) for p in ("pau", "hh", "ax", "l", "ow", "pau")
    ]
    lexicon = tmp_path / "lexicon.txt.gz"
    with pytest.raises(ValueError, match="--units phones needs"):
        train_tts.TtsOptions(shards=tmp_path, out=tmp_path, units="phones", lexicon=lexicon)
    with pytest.raises(ValueError, match="--units phones needs"):
        train_tts.TtsOptions(shards=tmp_path, out=tmp_path, units="phones", layout="aligned")
    with pytest.raises(ValueError, match="units must be one of"):
        train_tts.TtsOptions(shards=tmp_path, out=tmp_path, units="words")


def test_tts_lm_config() -> None:
    config = td.tts_lm_config(["a", "b", "c"], 100, 4, **SIZES)
    text, *audio = config["streams"]
    assert text == {
        "name": "text",
        "role": "text",
        "vocab_size": 4 + 3 + 35,
        "pad_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "delay": 0,
        "text_offset": 7,
    }
    assert [(s["name"], s["role"], s["vocab_size"]) for s in audio] == [
        (f"audio{q}", "audio", 103) for q in range(4)
    ]
    assert {(s["eos_id"], s["pad_id"], s["bos_id"]) for s in audio} == {(100, 101, 102)}
    assert [s["delay"] for s in audio] == [0, 1, 2, 3]
    assert config["end_stream"] == 1 and config["pattern"] == "delay"
    assert config["max_context"] == (64 + 2 + 400) + 3  # S - 1 of the longest generation
    flat = td.tts_lm_config(["a"], 100, 4, "flatten")
    assert [s["delay"] for s in flat["streams"]] == [0] * 5
    assert flat["max_context"] == (64 + 2 + 400) * 5
    assert td.tts_lm_config(["a"], 100, 2, "parallel", max_context=99)["max_context"] == 99
    with pytest.raises(ValueError):
        td.tts_lm_config(["a"], 100, 2, "coarse_first")


def test_utterance_grid_is_the_table() -> None:
    # 2 voices: text_offset 6; voice 1 = token 5; C = 10 (eos 10).
    grid = td.utterance_grid(1, [7, 8], np.array([[0, 1, 2], [3, 4, 5]]), 10)
    n = -1
    expected = [
        # 0  1  2  L+1  L+2 .. L+1+F  L+2+F
        [5, 7, 8, 3, 0, 0, 0, 0],
        [n, n, n, n, 0, 1, 2, 10],
        [n, n, n, n, 3, 4, 5, 10],
    ]
    assert grid.dtype == torch.int64
    assert grid.tolist() == expected
    assert td.prompt_grid(1, [7, 8], 2).tolist() == [row[:4] for row in expected]
    with pytest.raises(ValueError):
        td.utterance_grid(0, [7], np.array([[10]]), 10)  # code out of range


def test_token_shards_round_trip(data: Data) -> None:
    meta = td.read_meta(data.shards)
    entries = corpus.read_manifest(data.manifest)
    assert meta["voices"] == VOICES and meta["num_codebooks"] == Q
    assert meta["codebook_size"] == 32 and meta["tokenizer_size"] == 35
    codec = si.Codec.load(data.codec)
    for split in corpus.SPLITS:
        chosen = [e for e in entries if e["split"] == split]
        items = td.load_split(data.shards, split)
        assert meta["splits"][split]["utterances"] == len(items) == len(chosen) > 0
        for entry, item in zip(chosen, items, strict=True):
            assert item.id == f"{entry['id']}:{entry['voice']}"
            assert item.voice == VOICES.index(entry["voice"])
            assert item.text.tolist() == td.char_ids(entry["text"])
            wave, _ = sf.read(data.manifest.parent / entry["path"], dtype="float32")
            alone = codec.encode(wave)[0, :Q]  # batched encoding equals encoding alone
            assert np.array_equal(item.codes, alone)
    # Idempotent: a finished directory is returned untouched.
    stamps = {p: p.stat().st_mtime_ns for p in data.shards.iterdir()}
    assert td.tokenize_corpus(data.manifest, data.codec, data.shards, Q) == data.shards
    assert {p: p.stat().st_mtime_ns for p in data.shards.iterdir()} == stamps
    with pytest.raises(ValueError, match="another corpus"):
        td.tokenize_corpus(data.manifest, data.codec, data.shards, num_codebooks=1)


def test_token_shards_resume(data: Data, monkeypatch: pytest.MonkeyPatch) -> None:
    out = data.root / "shards_resumed"
    monkeypatch.setattr(td, "PART_SIZE", 1)
    real, calls = td._tokenize_chunk, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(td, "_tokenize_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        td.tokenize_corpus(data.manifest, data.codec, out, Q, batch_size=1)
    assert not json.loads((out / td.META_FILE).read_text())["complete"]
    assert len(list((out / td.PARTS_DIR).iterdir())) == 2
    td.tokenize_corpus(data.manifest, data.codec, out, Q, batch_size=1)
    assert len(calls) == 3 + 6 - 2  # the two finished parts were not redone
    for name in ("train.safetensors", "heldout.safetensors", "tokenizer.json", "meta.json"):
        assert (out / name).read_bytes() == (data.shards / name).read_bytes(), name
    assert not (out / td.PARTS_DIR).exists()


def test_resume_equals_uninterrupted(data: Data, trained: Path) -> None:
    out = data.root / "resumed"
    run_tts(data, out, 2, no_export=True)
    run_tts(data, out, 3, resume=True, no_export=True)
    full, resumed = read_log(trained / "log.jsonl"), read_log(out / "log.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for a, b in zip(full, resumed, strict=True):
        assert {k: a[k] for k in LOSS_KEYS[:3]} == {k: b[k] for k in LOSS_KEYS[:3]}
    assert full[-1]["heldout_audio_loss"] == resumed[-1]["heldout_audio_loss"]
    assert math.isfinite(full[-1]["heldout_text_loss"]) and full[-1]["audio_tokens"] > 0
    a = read_checkpoint(trained / "checkpoint.pt")["model"]
    b = read_checkpoint(out / "checkpoint.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_text_lm(data: Data) -> None:
    text_out = data.root / "text_lm"
    text_opts = train_text_lm.TextOptions(out=text_out, manifest=data.manifest, **SIZES)
    model_dir = train_text_lm.train(text_opts, LoopOptions(steps=2, threads=1, **LOOP))
    assert [r["step"] for r in read_log(text_out / "log.jsonl")] == [1, 2]
    assert si.SpeechLM.load(model_dir).tokenize("Ab") == [3, 4]
    text_lm = load_pretrained(model_dir)
    src = text_lm.export_state_dict()
    # steps 0: the export is the initialisation (float32 to compare exactly)
    out = data.root / "twist"
    run_tts(data, out, 0, init_from=model_dir, export_dtype="float32")
    tts = load_pretrained(out / "pipeline" / "lm")
    dst = tts.export_state_dict()
    layers = [k for k in src if k.startswith("layers.")] + ["norm.weight"]
    assert all(torch.equal(src[k], dst[k]) for k in layers)
    offset = 4 + len(VOICES)
    for name in ("embeddings.0.weight", "heads.0.weight"):
        assert torch.equal(dst[name][offset:], src[name][3:])  # every character
        assert torch.equal(dst[name][:3], src[name][:3])  # pad, bos, eos
    torch.manual_seed(0)  # audio tables stay as initialised (the seed train uses)
    scratch = SpeechLM(tts.config)
    assert torch.equal(dst["embeddings.1.weight"], scratch.embeddings[1].weight)
    assert not torch.equal(dst["layers.0.attn.q_proj.weight"], scratch.layers[0].attn.q_proj.weight)
    with pytest.raises(ValueError, match="d_model"):
        train_text_lm.init_from_text_lm(SpeechLM(td.tts_lm_config(VOICES, 32, Q)), model_dir)


def test_torchrun_two_processes(data: Data, trained: Path) -> None:
    out = data.root / "ddp"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SIZES, **LOOP}.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "speechinfer_training.train_tts", "--shards", str(data.shards)]
    command += ["--out", str(out), "--steps", "3", "--threads", "1", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("exported") == 1  # rank 0 alone writes
    ddp, alone = read_log(out / "log.jsonl"), read_log(trained / "log.jsonl")
    assert [r["step"] for r in ddp] == [1, 2, 3]
    for a, b in zip(alone, ddp, strict=True):  # same gradients up to float summation order
        for key in LOSS_KEYS:
            assert (key in a) == (key in b)
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), key
    lm = si.SpeechLM.load(out / "pipeline" / "lm")
    assert lm.num_streams == 1 + Q and lm.has_tokenizer


def test_exported_pipeline_loads_in_the_engine(data: Data, trained: Path) -> None:
    pipe = trained / "pipeline"
    spec = json.loads((pipe / "pipeline.json").read_text())
    assert spec == {
        "model_type": "speechinfer-tts",
        "codec": "codec",
        "lm": "lm",
        "voices": VOICES,
        "max_text_tokens": 64,
        "max_frames": 400,
        "sampling": {"temperature": 0.8, "top_k": 50},
        "seed": 0,
    }
    codec = si.Codec.load(pipe / "codec")
    assert codec.num_codebooks == 3 and codec.codebook_size == 32
    lm = si.SpeechLM.load(pipe / "lm")
    assert lm.has_tokenizer and lm.end_stream == 1 and lm.pattern == "delay"
    assert lm.vocab_sizes == [4 + 2 + 35, 35, 35] and lm.delays == [0, 0, 1]
    offset = 4 + len(VOICES)
    assert lm.tokenize("Hello there!") == [offset + i for i in td.char_ids("Hello there!")]
    for part in ("codec", "lm"):
        with safe_open(str(pipe / part / "model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    # The engine scores an utterance grid like the twin, and the training loss is -score.
    twin = load_pretrained(pipe / "lm")
    item = td.load_split(data.shards, "heldout")[0]
    grid = td.utterance_grid(item.voice, item.text + offset, item.codes, 32)[None]
    engine = lm.score(grid.numpy())[0]
    assert engine == pytest.approx(twin.score(grid)[0].item(), rel=1e-4)
    with torch.no_grad():
        assert -stream_losses(twin, twin, grid).sum().item() == pytest.approx(engine, rel=1e-4)
    # Synthesis as docs/tts.md has it: the prompt is frames 0 .. L + 1, text restricted to pad.
    ids = lm.tokenize("Hi.")
    prompt = td.prompt_grid(0, ids, Q)[None].numpy()
    sampling = [si.Sampling(temperature=0, allowed_tokens=[0])]
    sampling += [si.Sampling(**spec["sampling"])] * Q
    out = lm.generate(prompt, 8, sampling=sampling, seed=0, stop_on_eos=True)
    assert out.shape == (1, 1 + Q, len(ids) + 2 + 8)
    assert np.array_equal(out[:, :, : len(ids) + 2], prompt)
    assert (out[0, 0, len(ids) + 2 :] == 0).all()
    codes = out[0, 1:, len(ids) + 2 :]
    frames = int(np.argmax((codes >= 32).any(0))) if (codes >= 32).any() else codes.shape[1]
    if frames:
        assert codec.decode(codes[None, :, :frames]).shape == (1, frames * codec.hop_length)


def test_float16_pipeline_size(tmp_path: Path) -> None:
    """The default-size pipeline (default codec, default LM over 8 codebooks, 5 voices)."""
    save_pretrained(TwinCodec({}), tmp_path / "codec")
    tokenizer = td.make_char_tokenizer(tmp_path / "tokenizer.json")
    voices = list(corpus.ALL_VOICES)
    lm = SpeechLM(td.tts_lm_config(voices, 1024, 8))
    pipe = save_pipeline(
        tmp_path / "pipe", lm, tmp_path / "codec", voices, tmp_path / "tokenizer.json"
    )
    total = directory_bytes(pipe)
    print(f"float16 pipeline: {total / 1e6:.1f} MB")
    assert total <= 30_000_000
    assert si.SpeechLM.load(pipe / "lm").tokenize("a") == [4 + 5]
    assert tokenizer.get_vocab_size() == 35
    with pytest.raises(ValueError, match="max_context"):
        save_pipeline(
            tmp_path / "p2",
            lm,
            tmp_path / "codec",
            voices,
            tokenizer_path=tmp_path / "tokenizer.json",
            max_frames=4000,
        )


def test_comparison_commands(data: Data, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--shards", str(data.shards), "--steps", "2", "--threads", "1", "--no-export"]
    common += [f"--{k.replace('_', '-')}={v}" for k, v in {**SIZES, **LOOP}.items()]
    out = data.root / "patterns"
    results = compare_patterns.main([*common, "--out", str(out), "--patterns", "delay,parallel"])
    assert set(results) == {"delay", "parallel"}
    assert all(math.isfinite(r["heldout_audio_loss"]) for r in results.values())
    assert (out / "compare_patterns.json").is_file() and "| delay |" in capsys.readouterr().out
    out = data.root / "init"
    runs = compare_init.main([*common, "--out", str(out), "--text-lm-steps", "2"])
    assert set(runs) == {"scratch", "twist"} and len(runs["twist"]) == 2
    assert runs["scratch"][0]["audio_loss"] != runs["twist"][0]["audio_loss"]
    assert (out / "compare_init.csv").read_text().startswith("step,scratch_audio_loss")


def test_text_dropout_feeds_text_less_grids() -> None:
    codes = np.arange(12).reshape(2, 6) % 32
    grid = td.aligned_grid(1, [10, 11], [0, 2], codes, 32)
    drop = td.TextDropout(0.3, seed=3)
    draws = [drop.dropped(step, i) for step in range(100) for i in range(4)]
    assert 80 < sum(draws) < 160  # about 30 % of 400
    assert draws == [
        td.TextDropout(0.3, seed=3).dropped(s, i) for s in range(100) for i in range(4)
    ]
    assert draws != [
        td.TextDropout(0.3, seed=4).dropped(s, i) for s in range(100) for i in range(4)
    ]
    step, index = divmod(draws.index(True), 4)
    inputs, targets = drop(grid, step, index)
    assert inputs[0, 0] == grid[0, 0] and (inputs[0, 1:] == td.TEXT_PAD).all()
    assert (targets[0, 1:] == -1).all() and targets[0, 0] == grid[0, 0]
    assert torch.equal(inputs[1:], grid[1:]) and torch.equal(targets[1:], grid[1:])
    assert torch.equal(td.text_less(grid), inputs)
    assert (grid[0, 1:] != td.TEXT_PAD).any()  # the grid itself is left alone
    step, index = divmod(draws.index(False), 4)
    assert drop(grid, step, index) == (grid, grid)
    # The text of a dropped grid costs nothing; its audio is scored as usual.
    config = td.tts_lm_config(VOICES, 32, 2, layout="aligned", lead=1, **SIZES)
    model = SpeechLM(config)
    full = stream_losses(model, model, grid[None])
    dropped = stream_losses(model, model, inputs[None], targets[None])
    assert full[0] > 0 and dropped[0] == 0 and (dropped[1:] > 0).all()
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="text dropout"):
            td.TextDropout(rate)
    with pytest.raises(ValueError, match="--text-dropout needs --layout aligned"):
        train_tts.TtsOptions(shards=Path("."), out=Path("."), text_dropout=0.2)


def test_finetune_from_starts_at_the_runs_weights(data: Data, trained: Path) -> None:
    out = data.root / "finetune"
    run_tts(data, out, 0, finetune_from=trained, export_dtype="float32")
    want = read_checkpoint(trained / "checkpoint.pt")["model"]
    got = load_pretrained(out / "pipeline" / "lm").state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    with pytest.raises(ValueError, match="LM config differs"):
        run_tts(data, data.root / "other", 0, finetune_from=trained, **{**SIZES, "n_layers": 1})
