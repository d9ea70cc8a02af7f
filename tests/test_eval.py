"""The evaluation harness: WER, resynthesis metrics, the pocketsphinx judge, minimal pairs and the
``speechinfer_training.eval`` CLI on a tiny random-weight TTS pipeline (docs/tts.md)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import speechinfer as si
import torch
from conftest import random_codec, random_lm
from speechinfer_training import asr, corpus, metrics
from speechinfer_training import eval as ev
from speechinfer_training.export import load_pretrained, save_pretrained
from speechinfer_training.lm import small_config
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

pytest.importorskip("pocketsphinx")
pytest.importorskip("pystoi")

FOX = "the quick brown fox jumps over the lazy dog"
SENTENCES = ["The cat sat on the mat.", "It flaps in a storm.", "Real programmers write code."]
CHARS = " abcdefghijklmnopqrstuvwxyz',.!?-;:"
VOICES = ["slt", "rms"]
CODEC = {"n_filters": 8, "ratios": [8, 5, 4, 2], "dimension": 16, "num_codebooks": 2}
C = 64
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
needs_pipeline = pytest.mark.skipif(
    not hasattr(si, "Pipeline"), reason="this build of speechinfer has no si.Pipeline yet"
)


def test_wer_on_crafted_strings() -> None:
    assert asr.wer("The cat, sat!", "the cat sat") == 0.0
    assert asr.wer("a b c d", "a x c d") == 0.25
    assert asr.wer("a b c d", "a c d") == 0.25
    assert asr.wer("a b", "a b c d") == 1.0
    assert asr.wer("", "") == 0.0 and asr.wer("", "word") == 1.0
    assert asr.wer("well-known don't", "well known don't") == 0.0
    errors = asr.word_errors("one two three four", "one too three four five")
    assert (errors.substitutions, errors.deletions, errors.insertions) == (1, 0, 1)
    assert errors.reference_words == 4 and errors.wer == 0.5
    assert asr.corpus_wer([("a b", "a b"), ("c d e f", "")]) == pytest.approx(4 / 6)


def test_resynthesis_metrics() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    noisy = clean + 0.1 * rng.standard_normal(clean.size).astype(np.float32)
    assert metrics.si_sdr(clean, clean) > 80
    assert metrics.si_sdr(clean, 3 * clean) > 80  # scale invariant
    assert 5 < metrics.si_sdr(clean, noisy) < 20
    assert metrics.mel_distance(clean, clean, 16000) == 0.0
    assert metrics.mel_distance(clean, noisy, 16000) > 0.1
    assert metrics.stoi(clean, noisy, 16000) < metrics.stoi(clean, clean, 16000) + 1e-9


@needs_flite
def test_pocketsphinx_judge(tmp_path: Path) -> None:
    audio = ev.synthesize_audio("rms", FOX, 22050)  # resampled to 16 kHz by the judge
    heard = asr.transcribe(audio, 22050)
    assert asr.wer(FOX, heard) < 0.5, heard
    choices = [FOX, "a journey of a thousand miles begins", "never put off until tomorrow"]
    assert asr.transcribe_with_grammar(audio, 22050, choices[::-1]) == FOX
    assert asr.transcribe_with_grammar(np.zeros(8000), 16000, choices) == ""
    with ThreadPoolExecutor(3) as pool:  # one decoder per thread
        heard_by = pool.map(lambda _: asr.transcribe_with_grammar(audio, 22050, choices), range(6))
        assert list(heard_by) == [FOX] * 6


def test_nonword_rule_and_grid() -> None:
    lexicon = {"table", "garden", "window", "wander"}
    assert ev.make_nonword("table", lexicon) == "teble"
    assert ev.make_nonword("window", lexicon) == "wondow"
    assert ev.make_nonword("garden", lexicon) == "gerden"
    assert ev.make_nonword("queue", lexicon) is None  # no single-vowel nucleus
    grid = ev.tts_grid(5, np.array([[7, 8], [9, 10]]), [C, C])
    assert grid.tolist() == [[[5, 3, 0, 0, 0], [-1, -1, 7, 8, C], [-1, -1, 9, 10, C]]]
    aligned = ev.tts_grid(5, np.array([[7, 8], [9, 10]]), [C, C], layout="aligned")
    assert aligned.tolist() == [[[5, 0, 0, 0], [-1, 7, 8, C], [-1, 9, 10, C]]]


def char_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(vocab={ch: i for i, ch in enumerate(CHARS)}))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random codec (50 frames/s, 2 x 64 codes) + random TTS-layout LM + character tokenizer."""
    root = tmp_path_factory.mktemp("pipeline")
    save_pretrained(random_codec(CODEC | {"codebook_size": C}), root / "codec")
    offset = 4 + len(VOICES)
    text = {"name": "text", "role": "text", "vocab_size": offset + len(CHARS), "pad_id": 0}
    text |= {"bos_id": 1, "eos_id": 2, "delay": 0, "text_offset": offset}
    audio = [
        {"name": f"audio{q}", "role": "audio", "vocab_size": C + 3, "pad_id": C + 1}
        | {"bos_id": C + 2, "eos_id": C, "delay": q + 1, "text_offset": 0}
        for q in range(2)
    ]
    lm = random_lm(small_config(end_stream=1, streams=[text, *audio], max_context=512))
    save_pretrained(lm, root / "lm", tokenizer=char_tokenizer())
    spec = {"model_type": "speechinfer-tts", "codec": "codec", "lm": "lm", "voices": VOICES}
    spec |= {"max_text_tokens": 64, "max_frames": 30, "sampling": {"temperature": 1.0}}
    (root / "pipeline.json").write_text(json.dumps(spec | {"seed": 0}))
    return root


@needs_flite
def test_minimal_pair_scorer(pipeline_dir: Path) -> None:
    models_ = ev.Models(pipeline_dir, None, None)
    lexicon = {"table", "garden", "window"}
    pairs = [(w, ev.make_nonword(w, lexicon)) for w in sorted(lexicon)]
    result = ev.score_pairs(models_, pairs, "slt")
    assert result["pairs"] == 3 and 0.0 <= result["accuracy"] <= 1.0
    assert 0.0 <= result["accuracy_per_frame"] <= 1.0
    assert 0.0 <= result["audio_accuracy"] <= 1.0
    for item in result["details"]:
        assert all(np.isfinite(item["logprob"])) and all(f > 5 for f in item["frames"])
        # The text stream's pads cost something: the audio alone is more probable.
        assert all(a > t for a, t in zip(item["audio_logprob"], item["logprob"], strict=True))


def test_resynthesis_codebooks_must_exist(pipeline_dir: Path, tmp_path: Path) -> None:
    models_ = ev.Models(pipeline_dir, None, None)
    with pytest.raises(ValueError, match="the codec has 2 codebooks, not 3"):
        ev.codec_resynthesis(models_, [], ev.Judge([], tmp_path), 3)


def test_audio_logprob_is_the_twins(pipeline_dir: Path) -> None:
    models_ = ev.Models(pipeline_dir, None, None)
    rng = np.random.default_rng(0)
    grid = ev.tts_grid(5, rng.integers(0, C, size=(2, 9)), [C, C], layout="aligned")
    twin = load_pretrained(pipeline_dir / "lm")
    layout = twin.layout(grid.shape[-1])
    steps = layout.apply(torch.from_numpy(grid), twin.special_ids)
    with torch.no_grad():
        logits = twin(steps)
    want = 0.0
    for k in (1, 2):
        logp = torch.log_softmax(logits[k][0].double(), -1)
        for t in range(1, grid.shape[-1]):
            if grid[0, k, t] >= 0:
                want += float(logp[layout.first_step[k, t] - 1, grid[0, k, t]])
    got = models_.audio_logprob(grid)
    assert abs(got - want) <= 1e-4 * abs(want)
    assert float(models_.lm.score(grid)[0]) < got


@needs_flite
@needs_pipeline
def test_eval_cli_end_to_end(pipeline_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    kwargs = dict(voices=["slt"], text_files=[text], use_fortunes=False, install=False)
    manifest = corpus.build_corpus(tmp_path / "corpus", held_out_fraction=1.0, **kwargs)
    out = tmp_path / "results.json"
    argv = ["--corpus", str(manifest), "--pipeline", str(pipeline_dir), "--out", str(out)]
    argv += ["--voices", "slt", "--num-words", "3", "--num-sentence-pairs", "3"]
    argv += ["--resynth-codebooks", "1"]
    try:
        ev.load_lexicon()
    except corpus.MissingPackageError as error:
        pytest.skip(str(error))
    assert ev.main(argv) == 0
    results = json.loads(out.read_text())
    codec = results["codec"]
    assert codec["utterances"] == 3 and codec["num_codebooks"] == 1
    for key in ("mel_distance", "si_sdr", "stoi", "source_wer", "resynth_wer"):
        assert np.isfinite(codec[key]), key
    assert 0.0 <= codec["source_wer"] < 1.0  # slt short sentences: typically 0.3 to 0.7
    assert codec["source_grammar_wer"] == 0.0  # the grammar picks every source sentence
    slt = results["tts"]["per_voice"]["slt"]
    assert slt["sentences"] == 3 and slt["source_sentences"] == 3
    assert slt["wer"] >= 0.0 and slt["source_wer"] == codec["source_wer"]
    assert "wer_ratio" in slt and "grammar_wer" in slt
    assert results["pairs"]["swuggy_corpus"]["pairs"] == 0  # no train sentences here
    for name in ("swuggy", "sblimp"):
        assert results["pairs"][name]["pairs"] == 3
        assert 0.0 <= results["pairs"][name]["accuracy"] <= 1.0
