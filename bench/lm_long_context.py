"""Greedy generation of the benchmark LM (d512 x 8, 4 delay streams, random weights) at batch B
over a long context: ms per generated frame for 256 frames after an 8-frame prompt (context
8 → 264; attention over the cache grows with it, unlike `lm_vs_twin.py`'s 32 frames). Run:

    OPENBLAS_NUM_THREADS=1 RAYON_NUM_THREADS=2 python bench/lm_long_context.py [--batch 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import speechinfer as si
import torch
from speechinfer_training.export import save_pretrained
from speechinfer_training.lm import SpeechLM, audio_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=256)
    args = parser.parse_args()
    config = {
        "d_model": 512,
        "n_layers": 8,
        "n_heads": 8,
        "n_kv_heads": 4,
        "ffn_dim": 1408,
        "max_context": 1024,
        "pattern": "delay",
        "streams": [audio_stream(k, 1027) for k in range(4)],
    }
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:
        save_pretrained(SpeechLM(config), directory)
        lm = si.SpeechLM.load(directory)
    prompt = np.random.default_rng(0).integers(0, 1024, (args.batch, 4, 8))
    lm.generate(prompt, 64)
    start = time.perf_counter()
    lm.generate(prompt, args.frames)
    per_frame = (time.perf_counter() - start) / args.frames
    print(
        f"batch {args.batch}: {per_frame * 1e3:.2f} ms per frame, "
        f"{args.batch / per_frame:.0f} frames/s over {args.frames} frames"
    )


if __name__ == "__main__":
    main()
