#!/usr/bin/env bash
# Install speechinfer and run its main job end to end: text in, speech out, with the embedded
# default pipeline (docs/tts.md). A build that embeds none runs a codec round trip instead
# (speech in, codes, speech out) with a codec whose weights the PyTorch package writes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/speechinfer/target}"
PY=${PYTHON:-python3}
OUT=${1:-runs/demo}
mkdir -p "$OUT"

$PY -m pip install -q maturin
$PY -m pip install -q --no-build-isolation .

if $PY -c "import sys; from speechinfer.models import default_pipeline_path as p; sys.exit(p() is None)"; then
  speechinfer say "Hello from speechinfer." -o "$OUT/out.wav"
  echo "demo: \"Hello from speechinfer.\" -> $OUT/out.wav"
  exit 0
fi

echo "demo: this build embeds no default pipeline; running a codec round trip instead"
if ! command -v flite >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq flite >/dev/null
fi
$PY -m pip install -q torch
$PY -m pip install -q --no-build-isolation ./training

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
