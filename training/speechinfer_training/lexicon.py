"""The pronunciation lexicon a phone-reading pipeline carries (``speechinfer.phonemes``).

Each word's phones are flite's (``t2p``, stress dropped): the corpus voices speak the same
phones, so what the TTS LM learnt from their timings and what it reads at synthesis agree. The
words are those of Debian ``wamerican`` (lower-cased, letters and apostrophes) and of the corpus
texts. ``t2p`` reads many words per call: they are separated by full stops, each of which it
answers with a pause, so a batch is one process.

``python -m speechinfer_training.lexicon --out LEXICON.txt.gz [--manifest CORPUS/manifest.jsonl]
[--words /usr/share/dict/words] [--max-words N] [--jobs 2]``
"""

import argparse
import concurrent.futures
import gzip
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from speechinfer.phonemes import PAUSE, PHONES, WORD_CHARACTERS, lexicon_words

from .corpus import read_manifest
from .tts_data import normalize_text

DEFAULT_WORDS = Path("/usr/share/dict/words")
BATCH = 400
TIMEOUT_S = 120


def words_of(texts: Iterable[str]) -> set[str]:
    """Return the words of ``texts`` as the phonemizer looks them up (punctuation stripped)."""
    return {
        word
        for text in texts
        for word in lexicon_words(normalize_text(text))
        if set(word) <= WORD_CHARACTERS
    }


def dictionary_words(path: Path, limit: int | None = None) -> set[str]:
    """Lower-cased entries of a word list made of letters and apostrophes only."""
    words = {w.strip().lower() for w in path.read_text(errors="replace").splitlines()}
    words = {w for w in words if re.fullmatch(r"[a-z]+('[a-z]+)?", w)}
    return set(sorted(words)[:limit]) if limit is not None else words


def t2p_batch(words: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Return flite's phones of each of ``words``, from one ``t2p`` call.

    Words whose phones cannot be told apart from their neighbours' are looked up one by one.
    """
    result = subprocess.run(
        ["t2p", " . ".join(words) + " ."],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    groups: list[list[str]] = [[]]
    for phone in result.stdout.split():
        phone = re.sub(r"\d", "", phone)
        if phone == PAUSE:
            if groups[-1]:
                groups.append([])
        else:
            groups[-1].append(phone)
    groups = [g for g in groups if g]
    if len(groups) != len(words):
        if len(words) == 1:
            return {words[0]: tuple(groups[0])} if len(groups) == 1 else {}
        out: dict[str, tuple[str, ...]] = {}
        for word in words:
            out.update(t2p_batch([word]))
        return out
    return {w: tuple(g) for w, g in zip(words, groups, strict=True)}


def build_lexicon(words: Iterable[str], jobs: int = 2) -> dict[str, tuple[str, ...]]:
    """Flite's phones of every word (words whose phones fall outside PHONES are left out)."""
    ordered = sorted(set(words))
    batches = [ordered[i : i + BATCH] for i in range(0, len(ordered), BATCH)]
    known = frozenset(PHONES)
    lexicon: dict[str, tuple[str, ...]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(t2p_batch, batches):
            lexicon.update({w: p for w, p in part.items() if p and known.issuperset(p)})
    return lexicon


def write_lexicon(path: Path, lexicon: dict[str, tuple[str, ...]]) -> Path:
    """Write ``lexicon`` as gzip text, one ``word phone ...`` line per word, sorted."""
    text = "".join(f"{w} {' '.join(p)}\n" for w, p in sorted(lexicon.items()))
    part = path.with_name(path.name + ".part")
    part.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    part.replace(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m speechinfer_training.lexicon", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="lexicon.txt.gz to write")
    parser.add_argument("--manifest", type=Path, help="corpus manifest: its words are added")
    parser.add_argument("--words", type=Path, default=DEFAULT_WORDS, help="word list")
    parser.add_argument("--max-words", type=int, help="at most this many word-list entries")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    words = dictionary_words(args.words, args.max_words) if args.words.exists() else set()
    if args.manifest is not None:
        words |= words_of(row["text"] for row in read_manifest(args.manifest))
    lexicon = build_lexicon(words, args.jobs)
    write_lexicon(args.out, lexicon)
    print(f"{len(lexicon)} words -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
