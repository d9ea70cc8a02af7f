"""Text to speech (docs/tts.md): ``si.Pipeline`` and ``speechinfer say`` on a tiny pipeline of
random-weight twins: a codec, an LM with a text stream and two audio streams (biased so that it
ends its speech after a few frames) and a character-level tokenizer. Each ``say`` must equal the
grid the contract describes, generated and decoded by the engine directly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
import speechinfer as si
import torch
from conftest import SMALL_CODEC, random_codec, random_lm
from speechinfer.models import default_pipeline_path
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import small_config
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

CHARS = " abcdefghijklmnopqrstuvwxyz',.!?-;:"
VOICES = ["rms", "slt", "awb"]
C = SMALL_CODEC["codebook_size"]
HOP = 8  # SMALL_CODEC ratios [4, 2]
RATE = 16000
TEXT_OFFSET = 4 + len(VOICES)
SPEC = {
    "model_type": "speechinfer-tts",
    "codec": "codec",
    "lm": "lm",
    "voices": VOICES,
    "max_text_tokens": 16,
    "max_frames": 40,
    "sampling": {"temperature": 1.0, "top_k": 40},
    "seed": 0,
}


def char_tokenizer(unknown: bool = False) -> Tokenizer:
    """Character level, lower-casing, one id per character of ``CHARS`` (with ``unknown``:
    ``[UNK]`` = 0 first, BPE without merges; else WordLevel without an unknown token, which
    fails on any other character)."""
    if unknown:
        vocab = {"[UNK]": 0} | {ch: i + 1 for i, ch in enumerate(CHARS)}
        return Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer = Tokenizer(models.WordLevel(vocab={ch: i for i, ch in enumerate(CHARS)}))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def stream(name: str, role: str, vocab: int, pad: int, eos: int, bos: int, delay: int) -> dict:
    ids = {"pad_id": pad, "eos_id": eos, "bos_id": bos}
    return {"name": name, "role": role, "vocab_size": vocab, "delay": delay, **ids}


def tts_lm_config(
    n_voices: int = len(VOICES), codebook: int = C, q: int = 2, tokenizer_size: int = len(CHARS)
) -> dict:
    offset = 4 + n_voices
    text = stream("text", "text", offset + tokenizer_size, 0, 2, 1, 0) | {"text_offset": offset}
    audio = [
        stream(f"audio{i}", "audio", codebook + 3, codebook + 1, codebook, codebook + 2, i + 1)
        for i in range(q)
    ]
    return small_config(pattern="delay", end_stream=1, streams=[text, *audio])


def export_lm(
    path: Path, config: dict, eos_bias: float = 0.3, tokenizer: Tokenizer | None = None
) -> Path:
    """A random LM whose audio0 head favours EOS by ``eos_bias``: the text stream's pad input
    puts a large constant in residual dimension 0, which only the EOS row of audio0's head
    reads."""
    model = random_lm(config, seed=3)
    codebook = config["streams"][1]["eos_id"]
    with torch.no_grad():
        model.embeddings[0].weight[0, 0] += 30.0
        head = model.heads[1].weight
        head[:, 0] = 0.0
        head[codebook] = 0.0
        head[codebook, 0] = eos_bias
    return save_pretrained(model, path, tokenizer=tokenizer or char_tokenizer())


def write_spec(directory: Path, **changes: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {key: value for key, value in (SPEC | changes).items() if value is not None}
    (directory / "pipeline.json").write_text(json.dumps(spec))
    return directory


@pytest.fixture(scope="module")
def tts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tts")
    save_pretrained(random_codec(SMALL_CODEC), root / "codec")
    export_lm(root / "lm", tts_lm_config())
    return write_spec(root)


@pytest.fixture(scope="module")
def pipe(tts_dir: Path) -> si.Pipeline:
    return si.Pipeline.load(tts_dir)


def variant(tts_dir: Path, where: Path, **changes: object) -> Path:
    """A pipeline directory using the fixture's codec and LM with ``pipeline.json`` changed."""
    links = {"codec": str(tts_dir / "codec"), "lm": str(tts_dir / "lm")}
    return write_spec(where, **(links | changes))


def contract_audio(
    tts_dir: Path, text: str, voice: int, seed: int, max_frames: int = 40
) -> tuple[np.ndarray, int]:
    """docs/tts.md by hand: the prompt grid, the engine's generation, the codes before EOS and
    the codec's audio; returns (audio, frames)."""
    lm = si.SpeechLM.load(tts_dir / "lm")
    codec = si.Codec.load(tts_dir / "codec")
    ids = [i + TEXT_OFFSET for i in char_tokenizer().encode(text, add_special_tokens=False).ids]
    prompt = np.full((1, 3, len(ids) + 2), -1, dtype=np.int64)
    prompt[0, 0] = [4 + voice, *ids, 3]
    audio_sampling = dict(temperature=1.0, top_k=40)
    sampling = [
        si.Sampling(allowed_tokens=[0], temperature=0),
        si.Sampling(**audio_sampling, allowed_tokens=list(range(C + 1))),
        si.Sampling(**audio_sampling, allowed_tokens=list(range(C))),
    ]
    grid = lm.generate(prompt, max_frames, sampling=sampling, seed=seed, stop_on_eos=True)
    generated = grid[0, :, prompt.shape[-1] :]
    assert (generated[0] == 0).all()  # the text stream only pads
    eos = np.flatnonzero(generated[1] == C)
    frames = int(eos[0]) if eos.size else max_frames
    codes = generated[1:, :frames]
    assert ((codes >= 0) & (codes < C)).all()
    if frames == 0:
        return np.zeros(0, dtype=np.float32), 0
    return codec.decode(codes[None])[0], frames


def test_load(pipe: si.Pipeline, tts_dir: Path) -> None:
    assert pipe.voices == VOICES
    assert pipe.sample_rate == RATE
    assert pipe.max_text_tokens == 16 and pipe.max_frames == 40
    assert pipe.path == tts_dir
    assert pipe.codec.num_codebooks == 4 and pipe.lm.num_streams == 3
    assert "rms" in repr(pipe)


@pytest.mark.parametrize("voice", [None, "slt"])
def test_say_is_the_contract_grid(pipe: si.Pipeline, tts_dir: Path, voice: str | None) -> None:
    text = "hello there."
    frames_seen = set()
    for seed in range(6):
        audio = pipe.say("  Hello\tTHERE. ", voice=voice, seed=seed)
        expected, frames = contract_audio(tts_dir, text, VOICES.index(voice or "rms"), seed)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.isfinite(audio).all()
        assert audio.shape == (frames * HOP,)
        np.testing.assert_array_equal(audio, expected)
        frames_seen.add(frames)
    assert 0 < min(frames_seen) < 40 and len(frames_seen) > 2  # speech ended at EOS


def test_max_frames_bounds_a_piece(tts_dir: Path, tmp_path: Path) -> None:
    pipe = si.Pipeline.load(variant(tts_dir, tmp_path / "short", max_frames=3))
    lengths = {pipe.say("hello there.", seed=seed).shape[0] for seed in range(6)}
    assert max(lengths) == 3 * HOP
    for seed in range(3):
        expected, _ = contract_audio(tts_dir, "hello there.", 0, seed, max_frames=3)
        np.testing.assert_array_equal(pipe.say("hello there.", seed=seed), expected)
    # The longest prompt (max_text_tokens) plus max_frames just fits max_context.
    widest = si.Pipeline.load(variant(tts_dir, tmp_path / "widest", max_frames=236))
    assert widest.say("sixteen letters.", seed=0).dtype == np.float32


DEPTH = {"d_model": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 32}


@pytest.mark.parametrize(
    ("pattern", "needed"), [("parallel", 58), ("flatten", 3 * 58), ("delay", 60), ("depth", 60)]
)
def test_every_pattern(tts_dir: Path, tmp_path: Path, pattern: str, needed: int) -> None:
    """The pattern is the LM's choice; a 16-token prompt (18 frames) + 40 frames must fit its
    max_context."""
    config = tts_lm_config()
    if pattern in ("parallel", "flatten"):
        for s in config["streams"]:
            s["delay"] = 0
    config["pattern"] = pattern
    if pattern == "depth":
        config |= {"depth": DEPTH | {"per_position_proj": True}, "tie_embeddings": False}
    for max_context in (needed, needed - 1):
        lm = save_pretrained(
            random_lm(config | {"max_context": max_context}),
            tmp_path / f"lm{max_context}",
            tokenizer=char_tokenizer(),
        )
        where = variant(tts_dir, tmp_path / f"p{max_context}", lm=str(lm))
        if max_context < needed:
            with pytest.raises(si.ConfigError, match=f"need {needed} LM steps"):
                si.Pipeline.load(where)
        else:
            pipe = si.Pipeline.load(where)
            audio = pipe.say("hello there. how are you?", seed=1, progress=lambda d, t: None)
            np.testing.assert_array_equal(audio, pipe.say("hello there. how are you?", seed=1))
            assert audio.dtype == np.float32 and audio.shape[0] >= round(0.15 * RATE)


def test_seeds(pipe: si.Pipeline, tts_dir: Path, tmp_path: Path) -> None:
    text = "the quick brown fox"
    runs = {seed: pipe.say(text, seed=seed) for seed in range(4)}
    np.testing.assert_array_equal(pipe.say(text, seed=2), runs[2])
    distinct = {runs[seed].tobytes() for seed in runs}
    assert len(distinct) == len(runs)
    # seed=None is pipeline.json's seed.
    np.testing.assert_array_equal(pipe.say(text), runs[0])
    seeded = si.Pipeline.load(variant(tts_dir, tmp_path / "seed3", seed=3))
    np.testing.assert_array_equal(seeded.say(text), runs[3])


def test_voices_differ(pipe: si.Pipeline) -> None:
    text = "good morning"
    audio = [pipe.say(text, voice=voice, seed=1) for voice in VOICES]
    assert len({a.tobytes() for a in audio}) == len(VOICES)
    np.testing.assert_array_equal(pipe.say(text, voice=None, seed=1), audio[0])


def test_progress_reports_frames(pipe: si.Pipeline) -> None:
    text = "one two three. four five six."
    calls: list[tuple[int, int]] = []
    audio = pipe.say(text, seed=5, progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(audio, pipe.say(text, seed=5))  # stream() == generate()
    done, total = zip(*calls, strict=True)
    assert list(done) == sorted(done) and list(total) == sorted(total, reverse=True)
    assert total[0] == 2 * 40 and done[-1] == total[-1]
    silence = round(0.15 * RATE)
    assert done[-1] * HOP == audio.shape[0] - silence


def test_long_text_is_split_into_sentences(pipe: si.Pipeline) -> None:
    first, second = "one two three.", "four five six."
    assert len(first) <= 16 and len(second) <= 16 < len(f"{first} {second}")
    whole = pipe.say(f"{first}  {second}", seed=7)
    parts = [pipe.say(first, seed=7), pipe.say(second, seed=7)]
    silence = np.zeros(round(0.15 * RATE), dtype=np.float32)
    np.testing.assert_array_equal(whole, np.concatenate([parts[0], silence, parts[1]]))


def text_of(ids: list[int]) -> str:
    return "".join(CHARS[i - TEXT_OFFSET] for i in ids)


def test_long_sentence_is_cut_at_spaces(pipe: si.Pipeline) -> None:
    text = "a very long sentence without any stop that goes on and on and on"
    pieces = [text_of(ids) for ids in pipe._pieces(text)]
    assert " ".join(pieces) == text
    assert all(len(p) <= 16 for p in pieces) and len(pieces) > 3
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in pieces)
    # A word longer than max_text_tokens is cut between characters.
    word = "supercalifragilisticexpialidocious"
    pieces = [text_of(ids) for ids in pipe._pieces(f"say {word}!")]
    assert pieces == ["say", word[:16], word[16:32], word[32:] + "!"]
    # Pieces without letters are left out; the audio grows with the text.
    assert [text_of(ids) for ids in pipe._pieces("hello there. ... ok.")] == [
        "hello there.",
        "ok.",
    ]
    short = pipe.say("on and on", seed=0)
    long = pipe.say(text, seed=0)
    assert long.shape[0] > short.shape[0] + 3 * round(0.15 * RATE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the text is empty"),
        (" \n\t ", "the text is empty"),
        ("!!!", "no letters"),
        ("price: 5 €", r"unsupported character '€'"),
        ("ten €", r"unsupported character '€' \(U\+20AC\)"),
        ("café", "unsupported character 'é'"),
    ],
)
def test_bad_text(pipe: si.Pipeline, text: str, message: str) -> None:
    with pytest.raises(si.InputError, match=message):
        pipe.say(text)


def test_tokenizer_with_an_unknown_token(tts_dir: Path, tmp_path: Path) -> None:
    """A tokenizer that maps unknown characters to ``[UNK]`` instead of failing: ``say``
    refuses them all the same."""
    config = tts_lm_config(tokenizer_size=len(CHARS) + 1)
    lm = export_lm(tmp_path / "lm_unk", config, tokenizer=char_tokenizer(unknown=True))
    pipe = si.Pipeline.load(variant(tts_dir, tmp_path / "unk", lm=str(lm)))
    assert pipe.say("hello there.").shape[0] % HOP == 0
    for text, char in (("ten €", "€"), ("Café", "é"), ("?!", None)):
        with pytest.raises(
            si.InputError, match=f"unsupported character '{char}'" if char else "no letters"
        ):
            pipe.say(text)


def test_numbers_are_spoken_like_in_training(pipe: si.Pipeline) -> None:
    from speechinfer.textnorm import spoken_form

    assert (
        spoken_form("He paid 3.5 dollars, “twice”.") == "he paid three point five dollars, twice."
    )
    assert pipe.say("3 cats", seed=1).shape == pipe.say("three cats", seed=1).shape


def test_bad_voice_and_types(pipe: si.Pipeline) -> None:
    with pytest.raises(si.InputError, match="unknown voice 'bob'; available voices: rms, slt, awb"):
        pipe.say("hello", voice="bob")
    with pytest.raises(si.InputError, match="text must be a str"):
        pipe.say(b"hello")  # type: ignore[arg-type]
    with pytest.raises(si.InputError, match="seed"):
        pipe.say("hello", seed=-1)
    # Typographic apostrophes and dashes read as the plain ones.
    np.testing.assert_array_equal(pipe.say("it\u2019s ok", seed=0), pipe.say("it's ok", seed=0))


def test_threads_share_a_pipeline(pipe: si.Pipeline) -> None:
    texts = [("hello there.", s) for s in range(3)] + [("one two three. four five six.", 4)]
    expected = [pipe.say(text, seed=seed) for text, seed in texts]
    results: list[np.ndarray | None] = [None] * len(texts)

    def run(i: int) -> None:
        text, seed = texts[i]
        results[i] = pipe.say(text, seed=seed, progress=lambda done, total: None)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_missing_or_broken_pipeline_json(tts_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(si.ConfigError, match="is not a pipeline directory"):
        si.Pipeline.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(si.ConfigError, match=r"cannot read .*pipeline\.json"):
        si.Pipeline.load(tmp_path / "empty")
    (tmp_path / "empty" / "pipeline.json").write_text("{not json")
    with pytest.raises(si.ConfigError, match="not valid JSON"):
        si.Pipeline.load(tmp_path / "empty")
    cases = {
        "model_type": ({"model_type": "speechinfer-lm"}, "model_type must be"),
        "voices": ({"voices": []}, "voices must be a non-empty list"),
        "twice": ({"voices": ["a", "a", "b"]}, "voices holds a name twice"),
        "frames": ({"max_frames": 0}, "max_frames must be an int >= 1"),
        "tokens": ({"max_text_tokens": "16"}, "max_text_tokens must be an int"),
        "missing": ({"seed": None}, "missing key.*seed"),
        "unknown": ({"speed": 1.0}, "unknown key.*speed"),
        "sampling": ({"sampling": {"temprature": 1.0}}, "sampling.*temprature"),
        "sampling value": ({"sampling": {"temperature": -1.0}}, "sampling.*temperature"),
        # 16 + 2 + 237 frames, delays up to 2: 257 steps fed, one more than max_context.
        "context": ({"max_frames": 237}, "need 257 LM steps but the LM's max_context is 256"),
        "codec dir": ({"codec": str(tmp_path / "no_codec")}, "not a model directory"),
    }
    for name, (changes, message) in cases.items():
        with pytest.raises(si.ConfigError, match=message):
            si.Pipeline.load(variant(tts_dir, tmp_path / name.replace(" ", "_"), **changes))


def test_codec_and_lm_must_match(tts_dir: Path, tmp_path: Path) -> None:
    # One voice more than the LM's text stream has room for.
    with pytest.raises(si.ConfigError, match=r"stream 0 \('text'\) vocab_size is 42.*needs 43"):
        si.Pipeline.load(variant(tts_dir, tmp_path / "voices", voices=[*VOICES, "kal"]))
    # A codec of another codebook size.
    save_pretrained(random_codec(SMALL_CODEC | {"codebook_size": 32}), tmp_path / "codec32")
    with pytest.raises(si.ConfigError, match=r"stream 1 \('audio0'\) vocab_size is 67.*needs 35"):
        si.Pipeline.load(variant(tts_dir, tmp_path / "c32", codec=str(tmp_path / "codec32")))
    # More audio streams than the codec has codebooks.
    export_lm(tmp_path / "lm5", tts_lm_config(q=5))
    with pytest.raises(si.ConfigError, match="5 audio streams but the codec 4 codebooks"):
        si.Pipeline.load(variant(tts_dir, tmp_path / "q5", lm=str(tmp_path / "lm5")))
    # An LM that ends on its text stream.
    config = tts_lm_config() | {"end_stream": 0}
    export_lm(tmp_path / "lm_end0", config)
    with pytest.raises(si.ConfigError, match="end_stream must be 1"):
        si.Pipeline.load(variant(tts_dir, tmp_path / "end0", lm=str(tmp_path / "lm_end0")))
    # An LM without tokenizer.json.
    save_pretrained(random_lm(tts_lm_config()), tmp_path / "lm_notok")
    with pytest.raises(si.ConfigError, match=r"holds no tokenizer\.json"):
        si.Pipeline.load(variant(tts_dir, tmp_path / "notok", lm=str(tmp_path / "lm_notok")))


def test_default_pipeline() -> None:
    path = default_pipeline_path()
    if path is None:
        with pytest.raises(si.CheckpointError, match="embeds no default TTS pipeline"):
            si.Pipeline.load()
    else:
        pipe = si.Pipeline.load()
        assert pipe.path == path and pipe.voices
        audio = pipe.say("Hello.")
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "speechinfer.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_say(pipe: si.Pipeline, tts_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    text = "Hello there. How are you?"
    res = run_cli(
        "say", text, "-o", str(out), "--voice", "slt", "--seed", "3", "--pipeline", str(tts_dir)
    )
    assert res.returncode == 0, res.stderr
    # The progress bar (redrawn in place with \r, which text mode reads as a newline) ends full.
    assert re.search(r"\[#{30}\] (\d+)/\1 frames\n$", res.stderr), res.stderr
    assert str(out) in res.stdout and "voice slt" in res.stdout
    wave, rate = soundfile.read(out, dtype="float32")
    assert rate == RATE
    expected = np.clip(pipe.say(text, voice="slt", seed=3), -1, 1)
    assert wave.shape == expected.shape
    np.testing.assert_allclose(wave, expected, atol=1.5 / 32768)


def test_cli_voices_and_errors(tts_dir: Path, tmp_path: Path) -> None:
    res = run_cli("voices", "--pipeline", str(tts_dir))
    assert res.returncode == 0 and res.stdout.split() == VOICES
    out = str(tmp_path / "x.wav")
    here = ["--pipeline", str(tts_dir)]
    bad = {
        "unsupported character '€'": ["say", "ten €", "-o", out, *here],
        "unknown voice 'bob'; available voices: rms, slt, awb": [
            "say",
            "hi",
            "-o",
            out,
            "--voice",
            "bob",
            *here,
        ],
        "no letters": ["say", "!!!", "-o", out, *here],
        "is not a pipeline directory": ["say", "hi", "-o", out, "--pipeline", str(tmp_path / "n")],
        "directory does not exist": ["say", "hi", "-o", str(tmp_path / "no" / "x.wav"), *here],
    }
    if default_pipeline_path() is None:
        bad["no --pipeline given and this install embeds no default pipeline"] = [
            "say",
            "hi",
            "-o",
            out,
        ]
    for message, args in bad.items():
        res = run_cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        [line] = res.stderr.strip().splitlines()
        assert line.startswith("speechinfer: error: ") and message in line, res.stderr
        assert "Traceback" not in res.stderr
        assert not Path(out).exists()
