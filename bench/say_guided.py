"""``Pipeline.say`` of the embedded default pipeline with and without classifier-free guidance.

Same model, same sentences, same seeds, one process: seconds of audio per second of compute
(real-time factor = compute / audio), frames per second, peak RSS, and the guided/plain ratio.
Guidance runs an unconditional twin beside every sequence (a batch of 2 in the LM).

``python bench/say_guided.py [--repeat 3] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Never put off until tomorrow what you can do today.",
    "A journey of a thousand miles begins with a single step.",
)


def plain_copy(pipeline_dir: Path, root: Path) -> Path:
    """A pipeline directory using the same codec and LM, its sampling without ``cfg_scale``."""
    spec = json.loads((pipeline_dir / "pipeline.json").read_text())
    spec["sampling"].pop("cfg_scale", None)
    spec["codec"] = str(pipeline_dir / spec["codec"])
    spec["lm"] = str(pipeline_dir / spec["lm"])
    (root / "pipeline.json").write_text(json.dumps(spec))
    lexicon = pipeline_dir / "lexicon.txt.gz"
    if lexicon.exists():
        (root / lexicon.name).symlink_to(lexicon)
    return root


def measure(pipe, repeat: int) -> tuple[float, float]:
    """(compute seconds, audio seconds) over every sentence and seed."""
    compute = audio = 0.0
    for seed in range(repeat):
        for text in SENTENCES:
            started = time.perf_counter()
            out = pipe.say(text, seed=seed)
            compute += time.perf_counter() - started
            audio += out.size / pipe.sample_rate
    return compute, audio


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="seeds per sentence")
    parser.add_argument("--threads", type=int, default=2, help="RAYON_NUM_THREADS")
    args = parser.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    import speechinfer as si

    guided = si.Pipeline.load()
    with tempfile.TemporaryDirectory() as tmp:
        plain = si.Pipeline.load(plain_copy(guided.path, Path(tmp)))
        measure(plain, 1)  # warm-up
        rows = {}
        for name, pipe in (("plain", plain), ("guided", guided)):
            compute, audio = measure(pipe, args.repeat)
            rows[name] = compute / audio
            frames = audio * guided.codec.frame_rate / compute
            print(
                f"{name:7s} RTF {compute / audio:.3f}  ({audio:.1f} s audio in {compute:.1f} s,"
                f" {frames:.0f} frames/s)"
            )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"guided / plain compute per audio second: {rows['guided'] / rows['plain']:.2f}x;"
        f" peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
