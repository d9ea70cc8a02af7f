"""Build an offline, reproducible speech corpus from packaged text with Debian's TTS voices.

``python -m speechinfer_training.corpus --out DIR [--voices rms,slt,awb,kal,festival_slt]
[--max-sentences N] [--sample-rate 16000] [--held-out-fraction 0.05] [--seed 0] [--jobs 2]
[--text FILE ...] [--no-fortunes] [--no-install]``

Text comes from the Debian ``fortunes`` files (``/usr/share/games/fortunes``) and from any
``--text`` files (one sentence per line; a line holding several sentences is split). Every
selected sentence is spoken by every requested voice: the flite voices ``rms``, ``slt``, ``awb``
and ``kal`` (``flite -voice NAME -t TEXT -o out.wav``) and ``festival_slt`` (festival's
``text2wave`` with the HTS voice of ``festvox-us-slt-hts``, selected by
``(voice_cmu_us_slt_arctic_hts)``). Audio is resampled to ``--sample-rate`` with
``scipy.signal.resample_poly`` and written as mono 16-bit PCM to ``DIR/wavs/<voice>/<id>.wav``,
``<id>`` being a hash of the text alone (so it does not change with the seed or the voices).
Native rates: flite ``kal`` 8 kHz (so it carries nothing above 4 kHz), the other flite voices
16 kHz, ``festival_slt`` 32 kHz.

``DIR/manifest.jsonl`` holds one JSON object per wav, sentences in selection order and voices in
the requested order within a sentence: ``{"id", "text", "voice", "path" (relative to DIR),
"duration" (seconds), "split" ("train" or "heldout")}``. It is what
``speechinfer_training.train_codec --data DIR/manifest.jsonl`` reads.

Reproducibility rules:

* Sentence filter (:func:`clean_sentence`): whitespace is collapsed; a sentence is kept only if it
  is printable ASCII made of letters, spaces and ``. , ! ? ; : ' " -``; contains no digit, URL,
  e-mail address or other symbol (``/ @ # $ % & * ( ) [ ] _ = + < > ~ ` ^ |``, backslash); has no
  dotted token such as ``e.g.`` or ``example.com``; has no ``--`` dash, no token without a
  letter and no ``Speaker:`` label first; has balanced double quotes; starts with a capital
  letter (after an optional quote) and ends with ``.``, ``!`` or ``?`` (before an optional
  closing quote); and has 3 to 20 words. Sentences are deduplicated case-insensitively.
* Order and selection: sentences are sorted by ``sha256(f"{seed}:{text}")`` and the first
  ``--max-sentences`` are taken, so a larger corpus with the same seed contains a smaller one.
* Held-out split: a sentence is held out, for every voice, when
  ``sha256(f"heldout:{seed}:{text}")`` read as a fraction of 2**64 is below
  ``--held-out-fraction``. A sentence's split therefore never depends on which other sentences
  or voices are in the corpus.
* Resuming: an existing wav with the requested sample rate is never synthesised again; wavs are
  written to a temporary name and renamed, so an interrupted run leaves no partial wav. The
  manifest is rewritten atomically every ``MANIFEST_EVERY`` wavs and at the end from the wavs that
  exist, so rerunning with the same arguments yields a byte-identical manifest.

Missing Debian packages (``flite``, ``festival``, ``festvox-us-slt-hts``, ``fortunes``) are
installed with ``apt-get install -y --no-install-recommends`` when running as root, unless
``--no-install``; otherwise the error names the packages to install.
"""

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

FLITE_VOICES = ("rms", "slt", "awb", "kal")
FESTIVAL_VOICES = {"festival_slt": "voice_cmu_us_slt_arctic_hts"}
ALL_VOICES = (*FLITE_VOICES, *FESTIVAL_VOICES)
FORTUNES_DIR = Path("/usr/share/games/fortunes")
FESTIVAL_VOICE_DIRS = {
    "festival_slt": Path("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts"),
}
MANIFEST_NAME = "manifest.jsonl"
WAV_DIR = "wavs"
MANIFEST_EVERY = 200
MANIFEST_SECONDS = 60.0
SYNTH_TIMEOUT_S = 120.0
MIN_WORDS, MAX_WORDS = 3, 20
SPLITS = ("train", "heldout")

_ALLOWED = re.compile(r"[A-Za-z .,!?;:'\"-]+")
_DOTTED = re.compile(r"[A-Za-z]\.[A-Za-z]")
_START = re.compile(r"[\"']?[A-Z]")
_END = re.compile(r"[.!?][\"']?$")
_NO_SPLIT_AFTER = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "prof.", "vs.", "mt.", "rev.", "gen."}
)


class MissingPackageError(RuntimeError):
    """A Debian package the corpus needs is absent and cannot be installed here."""


class SynthesisError(RuntimeError):
    """Some wavs could not be synthesised; the manifest lists those that were."""


# ----------------------------------------------------------------------------------------------
# Text


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace into single spaces and strip the ends."""
    return " ".join(text.split())


def clean_sentence(text: str) -> str | None:
    """Return the whitespace-normalised sentence if it passes the corpus filter, else ``None``.

    The rule is spelled out in the module docstring: ASCII letters, spaces and ``.,!?;:'"-``
    only, no ``--``, dotted tokens, letterless tokens or leading ``Label:``, balanced double
    quotes, capitalised start, ``.!?`` end, 3 to 20 words.
    """
    sentence = normalize_whitespace(text)
    if not sentence or not _ALLOWED.fullmatch(sentence):
        return None
    words = sentence.split(" ")
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if "--" in sentence or _DOTTED.search(sentence) or sentence.count('"') % 2:
        return None
    if any(not any(c.isalpha() for c in word) for word in words) or words[0].endswith(":"):
        return None
    if not _START.match(sentence) or not _END.search(sentence):
        return None
    return sentence


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences at ``.``, ``!`` or ``?`` ending a word.

    No split happens after common abbreviations (``Mr.``, ``Dr.``, ...), single-letter initials
    or dotted tokens (``e.g.``); the pieces are whitespace-normalised but not filtered.
    """
    sentences: list[str] = []
    current: list[str] = []
    for word in text.split():
        current.append(word)
        bare = word.rstrip("\"')").lower()
        if not bare.endswith((".", "!", "?")):
            continue
        if bare.endswith(".") and (
            bare.lstrip("\"'(") in _NO_SPLIT_AFTER
            or re.fullmatch(r"[\"'(]?[a-z]\.", bare)
            or _DOTTED.search(bare)
        ):
            continue
        sentences.append(" ".join(current))
        current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


def fortune_entries(text: str) -> Iterator[str]:
    """Yield the entries of a fortune file, attribution lines (``-- Author``) and after cut."""
    for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
        lines = []
        for line in entry.splitlines():
            if line.strip().startswith("--"):
                break
            lines.append(line)
        body = normalize_whitespace(" ".join(lines))
        if body:
            yield body


def fortune_files(directory: Path | None = None) -> list[Path]:
    """Return the fortune text files (no ``.dat``/``.u8``) of ``directory``, sorted by name.

    ``directory`` defaults to :data:`FORTUNES_DIR`.
    """
    directory = FORTUNES_DIR if directory is None else directory
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix == "" and not p.name.startswith(".")
    )


def sentences_from_fortunes(directory: Path | None = None) -> list[str]:
    """Return every sentence of the fortune files that passes :func:`clean_sentence`."""
    kept = []
    for path in fortune_files(directory):
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in fortune_entries(text):
            kept.extend(s for s in map(clean_sentence, split_sentences(entry)) if s)
    return kept


def sentences_from_text_file(path: str | Path) -> list[str]:
    """Return the sentences of a text file (one per line; longer lines are split) that pass."""
    kept = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        kept.extend(s for s in map(clean_sentence, split_sentences(line)) if s)
    return kept


def _hash_fraction(key: str) -> float:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def sentence_id(text: str) -> str:
    """Stable identifier of a sentence: 16 hex digits of ``sha256(text)``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def split_of(text: str, seed: int, held_out_fraction: float) -> str:
    """Return ``"heldout"`` or ``"train"`` for a sentence (the same for every voice)."""
    return "heldout" if _hash_fraction(f"heldout:{seed}:{text}") < held_out_fraction else "train"


def select_sentences(
    sentences: Iterable[str], seed: int = 0, max_sentences: int | None = None
) -> list[str]:
    """Deduplicate (case-insensitively), order by ``sha256(f"{seed}:{text}")``, truncate."""
    unique: dict[str, str] = {}
    for sentence in sentences:
        unique.setdefault(sentence.lower(), sentence)
    ordered = sorted(
        unique.values(),
        key=lambda s: (hashlib.sha256(f"{seed}:{s}".encode()).digest(), s),
    )
    return ordered if max_sentences is None else ordered[:max_sentences]


def collect_sentences(
    text_files: Sequence[str | Path] = (),
    use_fortunes: bool = True,
    seed: int = 0,
    max_sentences: int | None = None,
    fortunes_dir: Path | None = None,
) -> list[str]:
    """Gather, filter, deduplicate and order the corpus sentences from all text sources."""
    pool: list[str] = []
    if use_fortunes:
        pool.extend(sentences_from_fortunes(fortunes_dir))
    for path in text_files:
        pool.extend(sentences_from_text_file(path))
    return select_sentences(pool, seed=seed, max_sentences=max_sentences)


# ----------------------------------------------------------------------------------------------
# Debian packages


@dataclass(frozen=True)
class Requirement:
    """A Debian package and a check of whether what the corpus needs from it is present."""

    package: str
    purpose: str
    soft: bool = False  # if it cannot be installed, warn and go on with what is there

    def present(self) -> bool:
        """Whether the package's files that the corpus uses are here."""
        if self.package == "flite":
            return shutil.which("flite") is not None
        if self.package == "festival":
            return shutil.which("text2wave") is not None
        if self.package == "festvox-us-slt-hts":
            return (FESTIVAL_VOICE_DIRS["festival_slt"] / "festvox").is_dir()
        if self.package == "fortunes":  # the full collection, not just fortunes-min
            return (FORTUNES_DIR / "wisdom").is_file()
        raise ValueError(f"unknown package {self.package}")


def requirements(voices: Sequence[str], use_fortunes: bool) -> list[Requirement]:
    """Return the packages that ``voices`` and the text sources need."""
    needed = []
    if any(v in FLITE_VOICES for v in voices):
        needed.append(Requirement("flite", "the flite voices"))
    if any(v in FESTIVAL_VOICES for v in voices):
        needed.append(Requirement("festival", "text2wave"))
        needed.append(Requirement("festvox-us-slt-hts", "the festival_slt voice"))
    if use_fortunes:
        # With fortunes-min alone (three files) the corpus still builds, just from less text.
        needed.append(Requirement("fortunes", "the fortunes text", soft=bool(fortune_files())))
    return needed


def _apt_get(*args: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, text=True, check=False
    )
    return result.returncode == 0


def ensure_packages(needed: Sequence[Requirement], install: bool = True) -> None:
    """Install the missing packages with apt-get (as root, if ``install``), or raise.

    ``apt-get update`` runs once, and only when the first install attempt fails.
    """
    missing = [r for r in needed if not r.present()]
    if not missing:
        return
    if all(r.soft for r in missing) and (not install or os.geteuid() != 0):
        for r in missing:
            print(
                f"warning: {r.package} is not installed; {r.purpose} will be partial",
                file=sys.stderr,
            )
        return
    names = [r.package for r in missing]
    listing = ", ".join(f"{r.package} (for {r.purpose})" for r in missing)
    command = f"apt-get install -y --no-install-recommends {' '.join(names)}"
    if not install:
        raise MissingPackageError(f"missing Debian packages: {listing}; install with: {command}")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingPackageError(
            f"missing Debian packages: {listing}; not root (or no apt-get), so run as root: "
            f"{command}"
        )
    print(f"installing {' '.join(names)}", file=sys.stderr)
    install_args = ("install", "-y", "-q", "--no-install-recommends", *names)
    if not _apt_get(*install_args):
        _apt_get("update", "-q")
        _apt_get(*install_args)
    still = [r.package for r in missing if not r.present() and not r.soft]
    if still:
        raise MissingPackageError(f"could not install Debian packages: {', '.join(still)}")


# ----------------------------------------------------------------------------------------------
# Synthesis


def synthesize(voice: str, text: str, wav_path: Path) -> None:
    """Speak ``text`` with ``voice`` into ``wav_path`` at the voice's own sample rate."""
    if voice in FLITE_VOICES:
        command = ["flite", "-voice", voice, "-t", text, "-o", str(wav_path)]
        stdin = None
    elif voice in FESTIVAL_VOICES:
        command = ["text2wave", "-eval", f"({FESTIVAL_VOICES[voice]})", "-o", str(wav_path)]
        stdin = text + "\n"
    else:
        raise ValueError(f"unknown voice {voice!r}; known: {', '.join(ALL_VOICES)}")
    result = subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SYNTH_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 or not wav_path.is_file():
        raise RuntimeError(
            f"{command[0]} failed for voice {voice} (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        )


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample mono float audio from ``rate`` to ``target`` with ``resample_poly``."""
    if rate == target:
        return audio
    divisor = math.gcd(rate, target)
    return resample_poly(audio, target // divisor, rate // divisor)


def render(voice: str, text: str, out_path: Path, sample_rate: int) -> float:
    """Synthesise, resample and atomically write one wav (PCM16 mono); return its duration."""
    with tempfile.TemporaryDirectory(prefix="speechinfer-corpus-") as tmp:
        raw_path = Path(tmp) / "raw.wav"
        synthesize(voice, text, raw_path)
        audio, rate = sf.read(str(raw_path), dtype="float64", always_2d=True)
    audio = resample(audio.mean(axis=1), int(rate), sample_rate)
    if audio.size == 0 or not np.any(audio):
        raise RuntimeError(f"voice {voice} produced silence for {text!r}")
    audio = np.clip(audio, -1.0, 32767 / 32768)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    part = out_path.with_name(out_path.name + ".part")
    sf.write(str(part), audio, sample_rate, subtype="PCM_16", format="WAV")
    part.replace(out_path)
    return audio.size / sample_rate


def existing_duration(path: Path, sample_rate: int) -> float | None:
    """Duration of an existing usable wav (mono, ``sample_rate``, non-empty), else ``None``."""
    if not path.is_file():
        return None
    try:
        info = sf.info(str(path))
    except RuntimeError:  # soundfile's LibsndfileError is a RuntimeError
        return None
    if info.samplerate != sample_rate or info.channels != 1 or info.frames <= 0:
        return None
    return info.frames / info.samplerate


# ----------------------------------------------------------------------------------------------
# Manifest


def wav_relpath(voice: str, text: str) -> str:
    """Path of a wav relative to the corpus directory."""
    return f"{WAV_DIR}/{voice}/{sentence_id(text)}.wav"


def manifest_lines(
    sentences: Sequence[str],
    voices: Sequence[str],
    durations: dict[tuple[str, str], float],
    seed: int,
    held_out_fraction: float,
) -> list[str]:
    """Manifest lines for the (sentence, voice) pairs that have a wav, in corpus order."""
    lines = []
    for text in sentences:
        split = split_of(text, seed, held_out_fraction)
        for voice in voices:
            duration = durations.get((text, voice))
            if duration is None:
                continue
            entry = {
                "id": sentence_id(text),
                "text": text,
                "voice": voice,
                "path": wav_relpath(voice, text),
                "duration": round(duration, 6),
                "split": split,
            }
            lines.append(json.dumps(entry, ensure_ascii=True))
    return lines


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    part.replace(path)


def read_manifest(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Read a corpus manifest (a ``manifest.jsonl`` or its directory); optionally one split.

    Relative ``path`` fields are kept as written (relative to the manifest's directory).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            if split is None or entry.get("split") == split:
                entries.append(entry)
    return entries


# ----------------------------------------------------------------------------------------------
# Build


def parse_voices(voices: str | Sequence[str]) -> list[str]:
    """Validate a voice list (comma-separated string or sequence); keep order, drop repeats."""
    items = voices.split(",") if isinstance(voices, str) else list(voices)
    result: list[str] = []
    for voice in (v.strip() for v in items):
        if voice not in ALL_VOICES:
            raise ValueError(f"unknown voice {voice!r}; known: {', '.join(ALL_VOICES)}")
        if voice not in result:
            result.append(voice)
    if not result:
        raise ValueError("no voices given")
    return result


def build_corpus(
    out: str | Path,
    voices: str | Sequence[str] = ALL_VOICES,
    max_sentences: int | None = None,
    sample_rate: int = 16000,
    held_out_fraction: float = 0.05,
    seed: int = 0,
    jobs: int = 2,
    text_files: Sequence[str | Path] = (),
    use_fortunes: bool = True,
    install: bool = True,
    verbose: bool = False,
) -> Path:
    """Build (or resume) the corpus in ``out``; return the path of its ``manifest.jsonl``.

    Raises :class:`MissingPackageError` when a package is missing and cannot be installed, and
    :class:`SynthesisError` (after writing the manifest of what exists) when some wavs failed.
    """
    voice_list = parse_voices(voices)
    if sample_rate <= 0 or jobs < 1:
        raise ValueError("sample_rate and jobs must be positive")
    if max_sentences is not None and max_sentences < 0:
        raise ValueError("max_sentences must be >= 0")
    if not 0.0 <= held_out_fraction <= 1.0:
        raise ValueError("held_out_fraction must be in [0, 1]")
    if not use_fortunes and not text_files:
        raise ValueError("no text source: enable fortunes or give text files")
    ensure_packages(requirements(voice_list, use_fortunes), install=install)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_NAME
    sentences = collect_sentences(text_files, use_fortunes, seed, max_sentences)
    if not sentences:
        raise ValueError("the text sources yield no sentence that passes the filter")

    durations: dict[tuple[str, str], float] = {}
    todo: list[tuple[str, str]] = []
    for text in sentences:
        for voice in voice_list:
            duration = existing_duration(out / wav_relpath(voice, text), sample_rate)
            if duration is None:
                todo.append((text, voice))
            else:
                durations[(text, voice)] = duration

    def write_manifest() -> None:
        lines = manifest_lines(sentences, voice_list, durations, seed, held_out_fraction)
        write_atomic(manifest, "".join(line + "\n" for line in lines))

    total = len(sentences) * len(voice_list)
    if verbose:
        print(
            f"{len(sentences)} sentences x {len(voice_list)} voices: {total - len(todo)} wavs "
            f"present, {len(todo)} to synthesise with {jobs} jobs",
            file=sys.stderr,
        )
    failures: list[str] = []
    started = last_write = time.monotonic()
    since_write = 0
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {}
            for text, voice in todo:
                path = out / wav_relpath(voice, text)
                futures[pool.submit(render, voice, text, path, sample_rate)] = (text, voice)
            for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                key = futures[future]
                try:
                    durations[key] = future.result()
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                    failures.append(f"{key[1]}: {key[0]!r}: {error}")
                since_write += 1
                now = time.monotonic()
                if since_write >= MANIFEST_EVERY or now - last_write >= MANIFEST_SECONDS:
                    write_manifest()
                    since_write, last_write = 0, now
                    if verbose:
                        rate = done / (now - started)
                        print(f"{done}/{len(todo)} wavs ({rate:.1f}/s)", file=sys.stderr)
    finally:
        write_manifest()
    if failures:
        shown = "\n".join(failures[:10])
        raise SynthesisError(
            f"{len(failures)} of {total} wavs failed (rerun to retry them):\n{shown}"
        )
    if verbose:
        print(f"wrote {manifest} ({total} wavs)", file=sys.stderr)
    return manifest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command-line flags."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.corpus",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--out", type=Path, required=True, help="corpus directory")
    parser.add_argument(
        "--voices",
        default=",".join(ALL_VOICES),
        help=f"comma-separated voices out of {','.join(ALL_VOICES)} (default: all)",
    )
    parser.add_argument(
        "--max-sentences", type=int, default=None, help="at most this many sentences"
    )
    parser.add_argument("--sample-rate", type=int, default=16000, help="output rate in Hz")
    parser.add_argument(
        "--held-out-fraction", type=float, default=0.05, help="share of held-out sentences"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds sentence order and split")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes")
    parser.add_argument(
        "--text",
        type=Path,
        action="append",
        default=[],
        help="extra text file, one sentence per line (repeatable)",
    )
    parser.add_argument("--no-fortunes", action="store_true", help="use only the --text files")
    parser.add_argument(
        "--no-install", action="store_true", help="never run apt-get; fail if packages miss"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        manifest = build_corpus(
            args.out,
            voices=args.voices,
            max_sentences=args.max_sentences,
            sample_rate=args.sample_rate,
            held_out_fraction=args.held_out_fraction,
            seed=args.seed,
            jobs=args.jobs,
            text_files=args.text,
            use_fortunes=not args.no_fortunes,
            install=not args.no_install,
            verbose=True,
        )
    except (MissingPackageError, SynthesisError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
