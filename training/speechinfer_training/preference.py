"""Preference data for DPO: engine-sampled candidates, judged by ASR, paired best vs worst.

Sampling is the slow part (the engine speaks, pocketsphinx listens), so it can run in several
processes (``workers``) and be kept in a cache file that later runs with the same settings read
instead of sampling again. Every candidate's seed depends only on (seed, prompt index, candidate
index), so the candidates do not depend on the number of workers.
"""

import hashlib
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 1


@dataclass
class Candidate:
    """One sampled utterance: its full frame grid ``[K, T]`` and the judge's verdict."""

    grid: np.ndarray
    audio_start: int
    wer: float


def training_items(
    rows: Sequence[dict[str, Any]], voices: Sequence[str], count: int
) -> list[tuple[str, str]]:
    """Return the first ``count`` distinct sentences of ``rows``, voices taken in turn.

    Sentence ``i`` gets ``voices[i % len(voices)]`` when the corpus has it reading that sentence,
    else the first of the pipeline's voices that does; sentences no pipeline voice reads are
    skipped.
    """
    readers: dict[str, set[str]] = {}
    for row in rows:
        if row["voice"] in voices:
            readers.setdefault(row["text"], set()).add(row["voice"])
    items = []
    for text, have in readers.items():
        if len(items) == count:
            break
        wanted = voices[len(items) % len(voices)]
        items.append((text, wanted if wanted in have else next(v for v in voices if v in have)))
    return items


def sample_candidates(
    pipe: Any, text: str, voice: str, count: int, seed: int, judge: Any
) -> list[Candidate]:
    """Sample ``count`` utterances of ``text`` with the engine and judge their WER against it."""
    start = pipe.audio_start(text, voice)
    out = []
    for grid in pipe.generate_grids(text, voice, [seed * 1000 + i for i in range(count)]):
        codes = pipe.audio_codes(grid[None, :, start:])
        wave = pipe.codec.decode(codes)[0] if codes.shape[-1] else np.zeros(1, np.float32)
        hyp = judge.transcribe(np.asarray(wave).reshape(-1), pipe.sample_rate)
        out.append(Candidate(grid, start, judge.wer(text, hyp)))
    return out


def _sample_share(
    pipeline: str, items: list[tuple[int, str, str]], count: int, seed: int
) -> list[list[Candidate]]:
    """Worker body: load the pipeline and the pocketsphinx judge, sample ``items``."""
    import speechinfer as si

    from . import asr

    pipe = si.Pipeline.load(pipeline)
    return [sample_candidates(pipe, text, voice, count, seed + i, asr) for i, text, voice in items]


def sample_all(
    pipeline: str | Path,
    items: Sequence[tuple[str, str]],
    count: int,
    seed: int,
    judge: Any = None,
    workers: int = 1,
) -> list[list[Candidate]]:
    """Candidates for every item, in item order.

    With ``workers > 1`` the items are shared out to that many processes, each with its own
    pipeline and the pocketsphinx judge (``judge`` must then be None); with one worker they are
    sampled here with ``judge`` (default pocketsphinx).
    """
    if not items:
        return []
    indexed = [(i, text, voice) for i, (text, voice) in enumerate(items)]
    if workers <= 1 or len(items) <= 1:
        if judge is None:
            from . import asr as judge
        import speechinfer as si

        pipe = si.Pipeline.load(pipeline)
        return [
            sample_candidates(pipe, text, voice, count, seed + i, judge)
            for i, text, voice in indexed
        ]
    if judge is not None:
        raise ValueError("a custom judge runs in this process only: use workers=1")
    shares = [indexed[w::workers] for w in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        args = ([str(pipeline)] * workers, shares, [count] * workers, [seed] * workers)
        results = list(pool.map(_sample_share, *args))
    ordered: list[list[Candidate]] = [[] for _ in items]
    for share, result in zip(shares, results, strict=True):
        for (i, _, _), candidates in zip(share, result, strict=True):
            ordered[i] = candidates
    return ordered


def best_worst_pairs(
    candidates: Sequence[Sequence[Candidate]], min_margin: float = 0.0
) -> list[tuple[Candidate, Candidate]]:
    """Return (lowest WER, highest WER) of every prompt whose two differ by more than a margin."""
    pairs = []
    for group in candidates:
        if not group:
            continue
        best = min(group, key=lambda c: c.wer)
        worst = max(group, key=lambda c: c.wer)
        if worst.wer - best.wer > min_margin:
            pairs.append((best, worst))
    return pairs


def save_candidates(
    path: Path, key: dict[str, Any], candidates: Sequence[Sequence[Candidate]]
) -> None:
    """Write ``candidates`` with the settings ``key`` they were sampled under (``.npz``)."""
    arrays: dict[str, np.ndarray] = {}
    for i, group in enumerate(candidates):
        for j, c in enumerate(group):
            arrays[f"grid_{i}_{j}"] = c.grid
            arrays[f"meta_{i}_{j}"] = np.array([c.audio_start, c.wer], dtype=np.float64)
    header = {"format": CACHE_FORMAT, "key": key, "sizes": [len(g) for g in candidates]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, header=np.array(json.dumps(header, sort_keys=True)), **arrays)
    tmp.replace(path)


def load_candidates(path: Path, key: dict[str, Any]) -> list[list[Candidate]] | None:
    """Return the candidates cached at ``path`` if sampled under ``key``, else None."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        if header.get("format") != CACHE_FORMAT or header.get("key") != key:
            return None
        out = []
        for i, size in enumerate(header["sizes"]):
            group = []
            for j in range(size):
                start, wer = data[f"meta_{i}_{j}"]
                group.append(Candidate(data[f"grid_{i}_{j}"], int(start), float(wer)))
            out.append(group)
        return out


def pipeline_fingerprint(pipeline: Path) -> str:
    """Hash of a pipeline's files: a cache of its samples is valid only for the same pipeline."""
    digest = hashlib.sha256()
    for path in sorted(p for p in pipeline.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(pipeline)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cached_samples(
    cache: Path | None,
    name: str,
    pipeline: Path,
    items: Sequence[tuple[str, str]],
    count: int,
    seed: int,
    judge: Any,
    workers: int,
) -> list[list[Candidate]]:
    """Sample (or read back from ``cache/name.npz``) ``count`` candidates per item."""
    key = json.loads(
        json.dumps(
            {
                "pipeline": pipeline_fingerprint(pipeline),
                "items": items,
                "count": count,
                "seed": seed,
            }
        )
    )
    path = cache / f"{name}.npz" if cache is not None else None
    if path is not None and (found := load_candidates(path, key)) is not None:
        print(f"{name}: {len(found)} prompts read from {path}", file=sys.stderr)
        return found
    candidates = sample_all(pipeline, items, count, seed, judge, workers)
    if path is not None:
        save_candidates(path, key, candidates)
    return candidates
