"""Diagnostic: how intelligible is the codec with fewer codebooks? Held-out fortune sentences
spoken by flite voices, encoded by a codec and decoded with the first q codebooks, q = 1 .. Q;
pocketsphinx WER of each beside the source's. It says how many codebooks a TTS LM must model
well for a given intelligibility (needs flite and pocketsphinx; no corpus build).

    python scripts/codebook_sweep.py [-n 24] [--codec DIR] [--voices slt,rms]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import speechinfer as si
from speechinfer.models import default_pipeline_path
from speechinfer_training import asr, corpus
from speechinfer_training.eval import synthesize_audio, tts_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=24, help="sentences")
    parser.add_argument("--codec", type=Path, default=None, help="default: the embedded codec")
    parser.add_argument("--voices", default="slt,rms", help="flite voices, used in turn")
    args = parser.parse_args()
    default = default_pipeline_path()
    if args.codec is None and default is None:
        raise SystemExit("no embedded pipeline: pass --codec DIR")
    codec = si.Codec.load(args.codec or default / "codec")
    voices = args.voices.split(",")
    sentences = [
        s for s in corpus.sentences_from_fortunes() if corpus.split_of(s, 0, 0.05) == "heldout"
    ]
    random.Random(0).shuffle(sentences)
    pairs: dict[str, list[tuple[str, str]]] = {"source": []}
    pairs.update({f"q={q}": [] for q in range(1, codec.num_codebooks + 1)})
    for i, text in enumerate(sentences[: args.n]):
        wave = synthesize_audio(voices[i % len(voices)], text, codec.sample_rate)
        reference = tts_text(text)
        pairs["source"].append((reference, asr.transcribe(wave, codec.sample_rate)))
        codes = codec.encode(wave)
        for q in range(1, codec.num_codebooks + 1):
            audio = codec.decode(codes[:, :q])[0][: len(wave)]
            pairs[f"q={q}"].append((reference, asr.transcribe(audio, codec.sample_rate)))
    print(f"{args.n} held-out sentences, voices {', '.join(voices)}; pocketsphinx corpus WER:")
    for name, rows in pairs.items():
        print(f"  {name:<8} {asr.corpus_wer(rows):.3f}")


if __name__ == "__main__":
    main()
