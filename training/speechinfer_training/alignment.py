"""When each word of a corpus utterance starts, read from the synthesizer that spoke it.

The TTS LM's ``aligned`` layout (``docs/tts.md``) places the characters of each word in the text
stream at the frame where the word's audio starts, so the model learns speech as a local function
of nearby text instead of learning an alignment from scratch. Times come from the synthesizer,
not from an ASR model:

* flite voices: phone end times (``flite -psdur``), the words (``flite -pw``) and each word's
  phones (``t2p``), matched in order (difflib), so a word starts where its first phone does;
* festival voices: the words' first-segment start times from festival's utterance structure,
  synthesised utterance by utterance exactly as ``text2wave`` does (its wave is their
  concatenation), so the times fit the corpus wav.

Words are then matched to the words of ``normalize_text`` (numbers spelled out, ...); a word the
synthesizer does not report (a number it reads differently, a clitic) gets a time interpolated
between its neighbours.

``python -m speechinfer_training.alignment --manifest CORPUS/manifest.jsonl [--jobs 2]`` writes
``CORPUS/alignments.jsonl``: one line per utterance, ``{"id", "voice", "words", "starts",
"phones"}`` with ``words`` = ``normalize_text(text).split(" ")``, ``starts`` their start times
in seconds and ``phones`` every phone the synthesizer spoke (pauses ``pau`` included) as
``[phone, start]``. It resumes: lines already written (with phones) are kept.
"""

import argparse
import concurrent.futures
import difflib
import functools
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .corpus import FESTIVAL_VOICES, FLITE_VOICES, read_manifest, write_atomic

ALIGNMENTS_FILE = "alignments.jsonl"
TIMEOUT_S = 60
SECONDS_PER_WORD = 0.3
"""Spacing used to extrapolate start times before the first or after the last timed word."""

_FESTIVAL_SCRIPT = """
({voice})
(define (si_align_hook utt)
  (format t "UTT %d %d\\n"
    (get_param 'num_samples (wave.info (utt.wave utt)) 0)
    (get_param 'sample_rate (wave.info (utt.wave utt)) 0))
  (mapcar
    (lambda (w)
      (format t "W %s %s\\n" (item.name w)
        (item.feat w "R:SylStructure.daughter1.daughter1.segment_start")))
    (utt.relation.items utt 'Word))
  (mapcar
    (lambda (s) (format t "S %s %s\\n" (item.name s) (item.feat s "segment_start")))
    (utt.relation.items utt 'Segment))
  utt)
(set! tts_hooks (list utt.synth si_align_hook))
(tts_file "{text_file}" nil)
"""


def _run(command: list[str], stdin: str | None = None) -> str:
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stderr.strip()[-300:]}")
    return result.stdout


@functools.lru_cache(maxsize=65536)
def word_phones(word: str) -> tuple[str, ...]:
    """Flite's phones of ``word`` alone (``t2p``), stress marks and pauses dropped."""
    phones = _run(["t2p", word]).split()
    return tuple(re.sub(r"\d", "", p) for p in phones if p != "pau")


def flite_phones(voice: str, text: str) -> list[tuple[str, float]]:
    """Every phone flite speaks for ``text`` (pauses included) and its start time in seconds."""
    phones = []
    start = 0.0
    for item in _run(["flite", "-voice", voice, "-psdur", "-t", text, "-o", "none"]).split():
        phone, _, end = item.rpartition(":")
        phones.append((phone, start))
        start = float(end)
    return phones


def flite_word_starts(
    voice: str, text: str, phones: Sequence[tuple[str, float]] | None = None
) -> list[tuple[str, float | None]]:
    """Flite's words of ``text`` and their start times (``None``: not found among the phones)."""
    words = _run(["flite", "-voice", voice, "-pw", "-t", text, "-o", "none"]).split()
    phones = flite_phones(voice, text) if phones is None else phones
    segments = [(phone, start) for phone, start in phones if phone != "pau"]
    expected: list[str] = []
    owner: list[tuple[int, int]] = []  # (word index, phone index within the word)
    for w, word in enumerate(words):
        for j, phone in enumerate(word_phones(word)):
            expected.append(phone)
            owner.append((w, j))
    starts: list[float | None] = [None] * len(words)
    matcher = difflib.SequenceMatcher(None, expected, [p for p, _ in segments], autojunk=False)
    for block in matcher.get_matching_blocks():
        for i in range(block.size):
            w, j = owner[block.a + i]
            segment = block.b + i - j
            if starts[w] is None and 0 <= segment < len(segments):
                starts[w] = segments[segment][1]
    return list(zip(words, starts, strict=True))


def festival_timing(
    voice: str, text: str
) -> tuple[list[tuple[str, float | None]], list[tuple[str, float]]]:
    """Festival's words and phones of ``text`` with their start times.

    The utterances are those ``text2wave`` would speak, their times offset as it concatenates them.
    """
    with tempfile.TemporaryDirectory(prefix="speechinfer-align-") as tmp:
        text_file = Path(tmp) / "text.txt"
        text_file.write_text(text + "\n")
        script = Path(tmp) / "align.scm"
        script.write_text(
            _FESTIVAL_SCRIPT.format(voice=FESTIVAL_VOICES[voice], text_file=text_file)
        )
        out = _run(["festival", "-b", str(script)])
    words: list[tuple[str, float | None]] = []
    phones: list[tuple[str, float]] = []
    offset = pending = 0.0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "UTT":
            offset += pending
            pending = int(parts[1]) / int(parts[2])
        elif len(parts) >= 3 and parts[0] == "W":
            time = float(parts[-1])
            words.append((" ".join(parts[1:-1]).lower(), offset + time if time > 0 else None))
        elif len(parts) == 3 and parts[0] == "S":
            phones.append((parts[1], offset + float(parts[2])))
    return words, phones


def _clean(word: str) -> str:
    return re.sub(r"[^a-z]", "", word.lower())


def match_starts(
    words: Sequence[str], timed: Sequence[tuple[str, float | None]], duration: float
) -> list[float]:
    """Start time of each of ``words`` from the synthesizer's ``timed`` words.

    The letters of both word lists are matched in order (so ``armor's`` finds flite's
    ``armor`` + ``'s``); a word whose first letter lands on a timed word's first letter takes
    its time. Other words get a time interpolated linearly between the nearest timed neighbours
    (``SECONDS_PER_WORD`` apart beyond the ends), clipped to ``[0, duration]`` and made
    non-decreasing.
    """
    ours, theirs = [_clean(w) for w in words], [_clean(w) for w, _ in timed]
    first_letter: dict[int, float] = {}  # letter position in "".join(theirs) -> start time
    position = 0
    for letters, (_, time) in zip(theirs, timed, strict=True):
        if letters and time is not None:
            first_letter[position] = time
        position += len(letters)
    matched: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, "".join(ours), "".join(theirs), autojunk=False)
    for block in matcher.get_matching_blocks():
        for i in range(block.size):
            matched[block.a + i] = block.b + i
    known: list[float | None] = []
    position = 0
    for letters in ours:
        there = matched.get(position) if letters else None
        known.append(first_letter.get(there) if there is not None else None)
        position += len(letters)
    anchors = [(i, t) for i, t in enumerate(known) if t is not None]
    out: list[float] = []
    for i, time in enumerate(known):
        if time is None:
            before = [(j, t) for j, t in anchors if j < i]
            after = [(j, t) for j, t in anchors if j > i]
            if before and after:
                (j0, t0), (j1, t1) = before[-1], after[0]
                time = t0 + (t1 - t0) * (i - j0) / (j1 - j0)
            elif before:
                time = before[-1][1] + SECONDS_PER_WORD * (i - before[-1][0])
            elif after:
                time = after[0][1] - SECONDS_PER_WORD * (after[0][0] - i)
            else:
                time = duration * i / max(len(words), 1)
        out.append(min(max(time, out[-1] if out else 0.0), duration))
    return out


def align_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """Return the alignment line of a manifest entry (``id``, ``voice``, ``text``, ``duration``)."""
    from .tts_data import normalize_text

    voice, text = entry["voice"], entry["text"]
    if voice in FLITE_VOICES:
        phones = flite_phones(voice, text)
        timed = flite_word_starts(voice, text, phones)
    elif voice in FESTIVAL_VOICES:
        timed, phones = festival_timing(voice, text)
    else:
        raise ValueError(f"no aligner for voice {voice!r}")
    words = normalize_text(text).split(" ")
    starts = match_starts(words, timed, float(entry["duration"]))
    return {
        "id": entry["id"],
        "voice": voice,
        "words": words,
        "starts": starts,
        "phones": [[phone, round(start, 4)] for phone, start in phones],
    }


def read_alignments(path: str | Path) -> dict[str, dict[str, Any]]:
    """Alignment lines of ``path`` keyed ``"id:voice"`` (the shard utterance id)."""
    path = Path(path)
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[f"{row['id']}:{row['voice']}"] = row
    return out


def align_corpus(
    manifest: str | Path, jobs: int = 2, out: str | Path | None = None, verbose: bool = False
) -> Path:
    """Write (or complete) the alignments of every utterance of ``manifest``; return the file."""
    manifest = Path(manifest)
    manifest = manifest / "manifest.jsonl" if manifest.is_dir() else manifest
    path = Path(out) if out is not None else manifest.parent / ALIGNMENTS_FILE
    done = read_alignments(path)
    entries = read_manifest(manifest)
    todo = [e for e in entries if "phones" not in done.get(f"{e['id']}:{e['voice']}", {})]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for i, row in enumerate(pool.map(align_entry, todo), start=1):
            done[f"{row['id']}:{row['voice']}"] = row
            if i % 200 == 0 or i == len(todo):
                write_atomic(path, "".join(json.dumps(r) + "\n" for r in done.values()))
                if verbose:
                    print(f"aligned {i}/{len(todo)}", file=sys.stderr)
    if not todo:
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in done.values()))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of :func:`align_corpus`."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.alignment", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--manifest", type=Path, required=True, help="corpus manifest.jsonl")
    parser.add_argument(
        "--out", type=Path, help=f"default: next to the manifest, {ALIGNMENTS_FILE}"
    )
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    print(align_corpus(args.manifest, args.jobs, args.out, verbose=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
