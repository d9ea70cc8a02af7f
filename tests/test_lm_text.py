"""Text in the LM: the engine reads the model directory's ``tokenizer.json`` (written here by the
Python ``tokenizers`` package) and places tokenizer ids in a stream's vocabulary at its
``text_offset``. Ids and text equal the Python tokenizer's, in the three hybrid layouts: a text
stream beside audio (Moshi / Mini-Omni), text then speech in one stream (SpeechGPT / Spectron) and
word-level interleaving of text and speech in one stream (SpiritLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
from conftest import random_lm
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import small_config
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "speech and text share one model",
    "hello world",
]
TEXTS = ["the cat ran in the park", "hello world", "a model of speech", ""]


def word_level() -> Tokenizer:
    """A small word-level tokenizer: ``[UNK]`` = 0, then the words of ``SENTENCES``."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    return tok


def byte_bpe() -> Tokenizer:
    """A byte-level BPE (GPT-2 style: its pre-tokenizer regex needs look-ahead) with one added
    special token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
    )
    tok.train_from_iterator(SENTENCES, trainer)
    return tok


WORDS = word_level()
N_WORDS = WORDS.get_vocab_size()


def stream(name: str, vocab: int, role: str = "audio", delay: int = 0, **ids: int) -> dict:
    specials = {"pad_id": vocab - 3, "eos_id": vocab - 2, "bos_id": vocab - 1} | ids
    return {"name": name, "role": role, "vocab_size": vocab, "delay": delay, **specials}


def export(tmp_path: Path, config: dict, tokenizer: Tokenizer | Path | None, seed: int = 0) -> Path:
    path = tmp_path / f"lm{len(list(tmp_path.iterdir()))}"
    return save_pretrained(random_lm(config, seed), path, tokenizer=tokenizer)


def twin_ids(tok: Tokenizer, text: str, offset: int = 0) -> list[int]:
    return [i + offset for i in tok.encode(text, add_special_tokens=False).ids]


def test_round_trip_equals_python_tokenizers(tmp_path: Path) -> None:
    bpe = byte_bpe()
    offset = 5
    vocab = offset + bpe.get_vocab_size() + 3
    config = small_config(
        pattern="parallel", streams=[stream("text", vocab, role="text") | {"text_offset": offset}]
    )
    path = export(tmp_path, config, bpe)
    assert json.loads((path / "config.json").read_text())["streams"][0]["text_offset"] == offset
    lm = si.SpeechLM.load(path)
    assert lm.has_tokenizer
    texts = [*TEXTS, "  Spaces  and\ttabs\n", "naïve café 日本語 🙂", "x<|endoftext|>y"]
    for text in texts:
        ids = lm.tokenize(text)
        assert ids == twin_ids(bpe, text, offset), text
        plain = [i - offset for i in ids]
        assert lm.detokenize(ids) == bpe.decode(plain), text
        assert lm.detokenize(np.array(ids, dtype=np.int32)) == bpe.decode(plain)
    # Byte-level BPE decodes back to the text exactly (the special token is left out, as in
    # Python's decode).
    assert lm.detokenize(lm.tokenize("naïve café 日本語 🙂")) == "naïve café 日本語 🙂"
    assert lm.detokenize(lm.tokenize("x<|endoftext|>y")) == "xy"


def test_text_stream_beside_audio(tmp_path: Path) -> None:
    """Moshi's inner monologue / Mini-Omni: a text stream of its own, padded while speech goes on,
    with the audio codebooks delayed after it. Here the text stream's specials come first and
    its words start at text_offset 3."""
    offset = 3
    text = {
        "name": "text",
        "role": "text",
        "vocab_size": offset + N_WORDS,
        "pad_id": 0,
        "eos_id": 1,
        "bos_id": 2,
        "delay": 0,
        "text_offset": offset,
    }
    config = small_config(
        pattern="delay", streams=[text, stream("a0", 30, delay=1), stream("a1", 18, delay=2)]
    )
    lm = si.SpeechLM.load(export(tmp_path, config, WORDS, seed=4))
    words = lm.tokenize("the cat sat on the mat")
    assert words == twin_ids(WORDS, "the cat sat on the mat", offset)
    t = len(words) + 2
    rng = np.random.default_rng(0)
    prompt = np.stack(
        [np.array([*words, 0, 0]), rng.integers(0, 27, size=t), rng.integers(0, 15, size=t)]
    ).astype(np.int64)[None]
    assert lm.detokenize(prompt[0, 0]) == "the cat sat on the mat"  # pads skipped
    out = lm.generate(prompt, max_frames=12, stop_on_eos=False)
    np.testing.assert_array_equal(out[:, :, :t], prompt)
    row = out[0, 0]
    generated_text = [int(i) - offset for i in row if i >= offset]
    assert lm.detokenize(row) == WORDS.decode(generated_text)
    assert lm.detokenize([0, 1, 2, -1]) == ""  # pad, eos, bos, no input: not text


def test_text_then_speech_in_one_stream(tmp_path: Path) -> None:
    """SpeechGPT / Spectron: one stream whose vocabulary is text ids, then unit ids, then a
    start-of-speech marker and the specials; the prompt is the text, the model continues with
    speech units."""
    units = 30
    speech_start = N_WORDS + units
    vocab = speech_start + 4
    one = stream("text+units", vocab, role="text") | {"text_offset": 0}
    config = small_config(pattern="parallel", streams=[one])
    lm = si.SpeechLM.load(export(tmp_path, config, WORDS, seed=5))
    words = lm.tokenize("speech and text share one model")
    assert words == twin_ids(WORDS, "speech and text share one model")
    prompt = np.array([[[*words, speech_start]]], dtype=np.int64)
    out = lm.generate(prompt, max_frames=16, stop_on_eos=False)
    np.testing.assert_array_equal(out[:, :, : prompt.shape[2]], prompt)
    row = out[0, 0]
    assert lm.detokenize(row[: prompt.shape[2]]) == "speech and text share one model"
    assert lm.detokenize(row) == WORDS.decode([int(i) for i in row if i < N_WORDS])
    # Unit ids, the marker and the specials are not text.
    assert lm.detokenize(list(range(N_WORDS, vocab))) == ""


def test_word_level_interleaving(tmp_path: Path) -> None:
    """SpiritLM: one stream where [TEXT] and [SPEECH] markers switch between words and speech
    units at word boundaries. Vocabulary: the two markers, the text ids (text_offset 2), the
    units, the specials."""
    text_mark, speech_mark, offset, units = 0, 1, 2, 25
    vocab = offset + N_WORDS + units + 3
    one = stream("interleaved", vocab, role="text") | {"text_offset": offset}
    config = small_config(pattern="delay", streams=[one])
    lm = si.SpeechLM.load(export(tmp_path, config, WORDS, seed=2))
    unit = offset + N_WORDS  # first unit id

    row = [text_mark, *lm.tokenize("a dog"), speech_mark, unit + 3, unit + 7, unit + 7]
    row += [text_mark, *lm.tokenize("ran in"), speech_mark, unit + 1]
    text_ids = [i - offset for i in row if offset <= i < unit]
    assert text_ids == twin_ids(WORDS, "a dog ran in")
    assert lm.detokenize(row) == "a dog ran in" == WORDS.decode(text_ids)
    prompt = np.array([[row]], dtype=np.int64)
    out = lm.generate(prompt, max_frames=16, stop_on_eos=False)
    np.testing.assert_array_equal(out[:, :, : len(row)], prompt)
    generated = out[0, 0]
    want = WORDS.decode([int(i) - offset for i in generated if offset <= i < unit])
    assert lm.detokenize(generated) == want


def test_session_frames_carry_text(tmp_path: Path) -> None:
    """Duplex use: the text stream is forced word by word through a session while the audio
    stream is generated; the forced words come back unchanged."""
    config = small_config(
        pattern="delay",
        streams=[stream("text", N_WORDS + 3, role="text"), stream("a0", 30, delay=1)],
    )
    lm = si.SpeechLM.load(export(tmp_path, config, WORDS))
    words = lm.tokenize("hello world")
    session = lm.session(batch_size=1)
    frames = [session.step(np.array([[w, si.SAMPLE]], dtype=np.int64)) for w in words]
    frames.append(session.flush())
    grid = np.concatenate(frames, axis=2)
    assert grid.shape == (1, 2, len(words))
    assert grid[0, 0].tolist() == words
    assert lm.detokenize(grid[0, 0]) == "hello world"


def test_export_copies_a_tokenizer_file_and_old_configs_load(tmp_path: Path) -> None:
    file = tmp_path / "words.json"
    WORDS.save(str(file))
    config = small_config(pattern="parallel", streams=[stream("text", N_WORDS + 3, role="text")])
    path = export(tmp_path, config, file)
    assert (path / "tokenizer.json").read_text() == file.read_text()
    save_pretrained(random_lm(config), path, tokenizer=path / "tokenizer.json")  # same file: kept
    # A config written before text_offset existed loads with offset 0.
    cfg = json.loads((path / "config.json").read_text())
    for s in cfg["streams"]:
        del s["text_offset"]
    (path / "config.json").write_text(json.dumps(cfg))
    lm = si.SpeechLM.load(path)
    assert lm.tokenize("hello world") == twin_ids(WORDS, "hello world")
    assert json.loads(lm.config_json)["streams"][0]["text_offset"] == 0


def test_errors(tmp_path: Path) -> None:
    config = small_config()  # two audio streams, vocab 40 and 24
    plain = si.SpeechLM.load(export(tmp_path, config, None))
    assert not plain.has_tokenizer
    with pytest.raises(si.InputError, match=r"this model has no tokenizer\.json"):
        plain.tokenize("hello")
    with pytest.raises(si.InputError, match=r"this model has no tokenizer\.json"):
        plain.detokenize([1, 2])

    path = export(tmp_path, config, WORDS)
    (path / "tokenizer.json").write_text('{"model": {"type": "WordLevel", "vocab": ')
    with pytest.raises(si.CheckpointError, match=r"tokenizer\.json"):
        si.SpeechLM.load(path)

    # Stream 1 (vocab 24) with its text at 20: only the 4 first tokenizer ids fit.
    offset = 20
    streams = [config["streams"][0], config["streams"][1] | {"text_offset": offset}]
    lm = si.SpeechLM.load(export(tmp_path, small_config(streams=streams), WORDS))
    fitting = [w for w, i in WORDS.get_vocab().items() if 0 < i < 24 - offset]
    assert lm.tokenize(fitting[0], stream=1) == twin_ids(WORDS, fitting[0], offset)
    big = next(w for w, i in WORDS.get_vocab().items() if i >= 24 - offset)
    big_id = WORDS.token_to_id(big) + offset
    with pytest.raises(si.InputError, match=rf"text token {big_id} .* stream 1 .*\[0, 24\)"):
        lm.tokenize(big, stream=1)
    assert lm.tokenize(big, stream=0) == twin_ids(WORDS, big)  # stream 0: offset 0, vocab 40
    with pytest.raises(si.InputError, match="stream 2 does not exist"):
        lm.tokenize("hello", stream=2)
    with pytest.raises(si.InputError, match="stream must be >= 0"):
        lm.detokenize([1], stream=-1)
    with pytest.raises(si.InputError, match="1-D"):
        lm.detokenize(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(si.InputError, match="integer"):
        lm.detokenize(np.zeros(3, dtype=np.float32))
    with pytest.raises(si.InputError, match="list of ints"):
        lm.detokenize([1, "two"])

    bad = small_config(streams=[config["streams"][0] | {"text_offset": 40}])
    bad_path = export(tmp_path, small_config(), WORDS)
    cfg = json.loads((bad_path / "config.json").read_text())
    cfg["streams"][0]["text_offset"] = 40
    (bad_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(si.ConfigError, match="text_offset 40 is outside"):
        si.SpeechLM.load(bad_path)
    with pytest.raises(ValueError, match="text_offset"):
        random_lm(bad)


def test_tokenize_from_threads(tmp_path: Path) -> None:
    """One model, many threads: tokenize/detokenize are pure functions of their input."""
    from concurrent.futures import ThreadPoolExecutor

    config = small_config(pattern="parallel", streams=[stream("text", N_WORDS + 3, role="text")])
    lm = si.SpeechLM.load(export(tmp_path, config, WORDS))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda s: lm.detokenize(lm.tokenize(s)), TEXTS * 8))
    assert got == [WORDS.decode(WORDS.encode(s).ids) for s in TEXTS * 8]
