"""The offline TTS corpus builder: text filter, ordering, split, manifest, resuming."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
from speechinfer_training import corpus
from speechinfer_training.data import list_audio_files

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Never put off until tomorrow what you can do today!",
]
RATE = 24000  # not a voice's own rate (flite 16 kHz, festival slt 32 kHz): resampling runs
HELD_OUT = 0.5


def _available(voice: str) -> str | None:
    """None if the voice can be used (installing it when root), else the reason it cannot."""
    try:
        corpus.ensure_packages(corpus.requirements([voice], use_fortunes=False))
    except corpus.MissingPackageError as error:
        return str(error)
    return None


FLITE_MISSING = _available("slt")
FESTIVAL_MISSING = _available("festival_slt")
needs_flite = pytest.mark.skipif(FLITE_MISSING is not None, reason=f"flite: {FLITE_MISSING}")


@dataclass
class Built:
    out: Path
    manifest: Path
    voices: list[str]
    kwargs: dict


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    if FLITE_MISSING is not None:
        pytest.skip(f"flite unavailable: {FLITE_MISSING}")
    root = tmp_path_factory.mktemp("corpus")
    text = root / "sentences.txt"
    # Junk lines that the filter drops, and a duplicate differing only in case and spacing.
    junk = ["See http://example.com now.", "Call 555 1234 today.", "too short.", ""]
    duplicate = "the quick  brown fox jumps over the lazy dog."
    text.write_text("\n".join([*SENTENCES, *junk, duplicate]) + "\n")
    voices = ["slt", "rms"] + ([] if FESTIVAL_MISSING else ["festival_slt"])
    kwargs = dict(
        voices=voices,
        max_sentences=10,
        sample_rate=RATE,
        held_out_fraction=HELD_OUT,
        seed=3,
        jobs=2,
        text_files=[text],
        use_fortunes=False,
        install=False,
    )
    out = root / "out"
    manifest = corpus.build_corpus(out, **kwargs)
    return Built(out, manifest, voices, kwargs)


def test_clean_sentence_rule() -> None:
    keep = {
        "  Hello   there,\tmy friend!  ": "Hello there, my friend!",
        '"Why not?" she asked.': '"Why not?" she asked.',
        "Mr. Smith's well-known dog can't swim.": "Mr. Smith's well-known dog can't swim.",
        "Is it you?": "Is it you?",
        "'Tis but a scratch, he said.": "'Tis but a scratch, he said.",
    }
    for raw, cleaned in keep.items():
        assert corpus.clean_sentence(raw) == cleaned, raw
    drop = [
        "Two words.",  # fewer than 3 words
        " ".join(["word"] * 20) + " end.",  # more than 20
        "I ate 3 apples today.",  # digit
        "Visit www.example.com for more.",  # dotted token (URL)
        "See https://example.org right now.",  # URL symbols
        "Mail me at bob@example.org please.",  # e-mail
        "Use the e.g. form here.",  # dotted abbreviation
        "Caf\u00e9 au lait is nice.",  # non-ASCII
        "It costs $5 or (so) they say.",  # symbols
        "Wait -- what was that?",  # double dash
        "A - B is not C.",  # letterless token
        "Q: Why is the sky blue?",  # speaker label
        'He said "hello there.',  # unbalanced quotes
        "lowercase start is dropped.",  # no capital start
        "No final punctuation here",  # fragment
        "... ! ?",  # no letters
        "",
    ]
    for raw in drop:
        assert corpus.clean_sentence(raw) is None, raw


def test_split_sentences_and_fortune_entries() -> None:
    text = 'Dr. Who came. "Is it J. R. R. Tolkien?" he asked! Then e.g. nothing. Done'
    assert corpus.split_sentences(text) == [
        "Dr. Who came.",
        '"Is it J. R. R. Tolkien?"',
        "he asked!",
        "Then e.g. nothing.",
        "Done",
    ]
    fortunes = "First entry\n  spans lines.\n\t\t-- Some Author\n%\nSecond one.\n%\n%\n"
    assert list(corpus.fortune_entries(fortunes)) == ["First entry spans lines.", "Second one."]


def test_selection_is_deterministic_and_seeded() -> None:
    pool = [f"Sentence number {word} is here." for word in "abcdefghijklmnop"]
    first = corpus.select_sentences(pool, seed=0)
    assert first == corpus.select_sentences(list(reversed(pool)), seed=0)
    assert sorted(first) == sorted(pool)
    assert first != corpus.select_sentences(pool, seed=1)
    assert corpus.select_sentences(pool, seed=0, max_sentences=5) == first[:5]
    assert corpus.select_sentences([*pool, pool[0].upper()], seed=0) == first  # dedupe


def test_split_is_text_level_and_seeded() -> None:
    pool = [f"Sentence number {i} for the split." for i in range(2000)]
    held = [s for s in pool if corpus.split_of(s, 0, 0.1) == "heldout"]
    assert 120 < len(held) < 280
    assert held == [s for s in pool if corpus.split_of(s, 0, 0.1) == "heldout"]
    assert held != [s for s in pool if corpus.split_of(s, 1, 0.1) == "heldout"]
    assert all(corpus.split_of(s, 0, 0.0) == "train" for s in pool)
    assert all(corpus.split_of(s, 0, 1.0) == "heldout" for s in pool)


@pytest.mark.skipif(not corpus.fortune_files(), reason="Debian fortunes not installed")
def test_fortunes_text() -> None:
    sentences = corpus.collect_sentences(seed=0, max_sentences=50)
    assert len(sentences) == 50
    assert all(corpus.clean_sentence(s) == s for s in sentences)
    assert sentences == corpus.collect_sentences(seed=0, max_sentences=50)


def test_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus.shutil, "which", lambda _name: None)
    with pytest.raises(corpus.MissingPackageError, match="flite"):
        corpus.ensure_packages(corpus.requirements(["rms"], use_fortunes=False), install=False)


def test_manifest_fields(built: Built) -> None:
    entries = corpus.read_manifest(built.manifest)
    assert len(entries) == len(SENTENCES) * len(built.voices)
    assert {e["text"] for e in entries} == set(SENTENCES)
    assert [e["voice"] for e in entries[: len(built.voices)]] == built.voices
    for entry in entries:
        assert set(entry) == {"id", "text", "voice", "path", "duration", "split"}
        assert entry["id"] == corpus.sentence_id(entry["text"])
        assert entry["path"] == f"wavs/{entry['voice']}/{entry['id']}.wav"
        info = sf.info(str(built.out / entry["path"]))
        assert info.samplerate == RATE and info.channels == 1
        assert entry["duration"] == pytest.approx(info.frames / RATE, abs=1e-6)
        assert 0.5 < entry["duration"] < 10
    # The codec trainer reads the manifest as is.
    files = list_audio_files(built.manifest)
    assert files == [built.out / e["path"] for e in entries]


def test_heldout_split(built: Built) -> None:
    entries = corpus.read_manifest(built.out)
    by_text: dict[str, set[str]] = {}
    for entry in entries:
        by_text.setdefault(entry["text"], set()).add(entry["split"])
    assert all(len(splits) == 1 for splits in by_text.values())  # text-level
    expected = {s: corpus.split_of(s, 3, HELD_OUT) for s in SENTENCES}
    assert {text: splits.pop() for text, splits in by_text.items()} == expected
    assert set(expected.values()) == {"train", "heldout"}  # both splits occur with seed 3
    held = corpus.read_manifest(built.manifest, split="heldout")
    assert held == [e for e in entries if e["split"] == "heldout"]
    with pytest.raises(ValueError):
        corpus.read_manifest(built.manifest, split="test")


def test_resume(built: Built) -> None:
    before = built.manifest.read_bytes()
    wavs = sorted(built.out.rglob("*.wav"))
    mtimes = {p: p.stat().st_mtime_ns for p in wavs}
    assert corpus.build_corpus(built.out, **built.kwargs) == built.manifest
    assert built.manifest.read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in wavs} == mtimes
    # A lost wav is re-made, and only that one.
    lost = wavs[0]
    lost.unlink()
    corpus.build_corpus(built.out, **built.kwargs)
    assert built.manifest.read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in wavs if p != lost} == {
        p: t for p, t in mtimes.items() if p != lost
    }
    assert not list(built.out.rglob("*.part"))


def test_festival_voice(built: Built) -> None:
    if FESTIVAL_MISSING is not None:
        pytest.skip(f"festival_slt voice skipped: {FESTIVAL_MISSING}")
    entries = corpus.read_manifest(built.manifest)
    festival = [e for e in entries if e["voice"] == "festival_slt"]
    assert len(festival) == len(SENTENCES)


@needs_flite
def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "t.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--voices", "slt", "--max-sentences", "2", "--text", str(text)]
    argv += ["--no-fortunes", "--no-install", "--held-out-fraction", "0"]
    assert corpus.main(argv) == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert all(json.loads(line)["split"] == "train" for line in lines)
    assert capsys.readouterr().out.strip() == str(out / "manifest.jsonl")
    assert corpus.main(["--out", str(out), "--voices", "nope", "--no-install"]) == 1
