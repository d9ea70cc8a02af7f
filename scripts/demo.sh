#!/usr/bin/env bash
# Install speechinfer and run its main job end to end: speech in, codes, speech out.
# Until the embedded default model ships, the codec's weights come from the PyTorch package.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/speechinfer/target}"
PY=${PYTHON:-python3}
OUT=${1:-runs/demo}
mkdir -p "$OUT"

if ! command -v flite >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq flite >/dev/null
fi
$PY -m pip install -q maturin torch
$PY -m pip install -q --no-build-isolation . ./training

flite -voice slt -t "The quick brown fox jumps over the lazy dog." -o "$OUT/input.wav"
$PY - "$OUT" <<'PY'
import sys
import torch
from speechinfer_training.codec import Codec
from speechinfer_training.export import save_pretrained

torch.manual_seed(0)
save_pretrained(Codec({}), f"{sys.argv[1]}/codec")
PY
speechinfer codec encode "$OUT/input.wav" -o "$OUT/codes.npy" --checkpoint "$OUT/codec"
speechinfer codec decode "$OUT/codes.npy" -o "$OUT/output.wav" --checkpoint "$OUT/codec"
speechinfer codec decode "$OUT/codes.npy" -o "$OUT/output_2cb.wav" --checkpoint "$OUT/codec" --num-codebooks 2
echo "demo: $OUT/input.wav -> $OUT/codes.npy -> $OUT/output.wav"
