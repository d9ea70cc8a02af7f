"""Diagnostic for the ``aligned`` TTS layout: WER of speech generated with the text timing taken
from the real alignment (the text stream teacher-forced) beside free-running ``say`` and the
source recording, on held-out corpus sentences of one voice.

    python scripts/diagnose_forced_timing.py --corpus ~/.cache/speechinfer/corpus --voice rms -n 6

If forced timing is intelligible and free running is not, the pacing is at fault; if neither is,
the acoustic model is. Prints each transcript and the three corpus WERs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import speechinfer as si
from speechinfer._aligned import EOS, PAD
from speechinfer._native import NO_INPUT, SAMPLE
from speechinfer_training import asr
from speechinfer_training.eval import read_audio
from speechinfer_training.tts_data import place_characters


def forced_codes(pipe: si.Pipeline, voice_token: int, text_column: np.ndarray) -> np.ndarray:
    """Codes ``[1, Q, F]`` sampled with the text stream forced to ``text_column`` (frames 1..F)."""
    lm = pipe.lm
    # The aligned layout's audio sampling (no EOS: the length is forced here).
    session = lm.session(1, sampling=list(pipe._aligned_sampling), seed=0)
    first = np.full((1, lm.num_streams), NO_INPUT, dtype=np.int64)
    first[0, 0] = voice_token
    chunks = [session.step(first)]
    for token in text_column[1:]:
        frame = np.full((1, lm.num_streams), SAMPLE, dtype=np.int64)
        frame[0, 0] = token
        chunks.append(session.step(frame))
    chunks.append(session.flush())
    grid = np.concatenate(chunks, -1)[0]
    codes = grid[1:, 1 : len(text_column)][None]
    return np.clip(codes, 0, pipe.codec.codebook_size - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--pipeline", help="pipeline directory (default: the embedded model)")
    parser.add_argument("--voice", default="rms")
    parser.add_argument("-n", type=int, default=6, help="held-out sentences")
    args = parser.parse_args()
    pipe = si.Pipeline.load(args.pipeline)
    if pipe.layout != "aligned":
        raise SystemExit("the pipeline does not use the aligned layout")
    rate, sample_rate = pipe.codec.frame_rate, pipe.codec.sample_rate
    alignments = {}
    for line in (args.corpus / "alignments.jsonl").read_text().splitlines():
        row = json.loads(line)
        alignments[(row["id"], row["voice"])] = row
    entries = [
        json.loads(line) for line in (args.corpus / "manifest.jsonl").read_text().splitlines()
    ]
    held = [e for e in entries if e["split"] == "heldout" and e["voice"] == args.voice]
    pairs: dict[str, list[tuple[str, str]]] = {"forced": [], "free": [], "source": []}
    for entry in held:
        if len(pairs["source"]) == args.n:
            break
        row = alignments.get((entry["id"], entry["voice"]))
        prompt = pipe.prompts(entry["text"], entry["voice"])[0]
        ids = [int(i) for i in prompt[0, 1:-1]]
        if row is None or len(ids) != len(" ".join(row["words"])):
            continue  # no alignment, or the text normalises differently from the corpus
        frames = place_characters(row["words"], [int(s * rate) for s in row["starts"]])
        n_frames = int(entry["duration"] * rate)
        column = np.full(n_frames + 1, PAD, dtype=np.int64)
        column[1 + np.asarray(frames)] = ids
        column[min(frames[-1] + 2, n_frames)] = EOS
        forced = pipe.codec.decode(forced_codes(pipe, int(prompt[0, 0]), column))[0]
        free = pipe.say(entry["text"], voice=entry["voice"], seed=0)
        source = read_audio(args.corpus / entry["path"], sample_rate)
        heard = {
            "forced": asr.transcribe(forced, sample_rate),
            "free": asr.transcribe(free, sample_rate),
            "source": asr.transcribe(source, sample_rate),
        }
        print(
            f"{entry['text']!r}: free {free.size / sample_rate:.2f} s, source "
            f"{entry['duration']:.2f} s"
        )
        for name, text in heard.items():
            print(f"  {name:6s} {text!r}")
            pairs[name].append((entry["text"], text))
    print(", ".join(f"WER {k} {asr.corpus_wer(v):.3f}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
