#!/usr/bin/env bash
# Builds what a GPU session runs (the GPU machine has no Rust): the CUDA test binaries of the
# kernels, lm and codec crates and the cuda_step / cuda_codec benchmarks, copied to .gpu/ (git-ignored; name it in
# the device tool's `carry`). Then, on the GPU machine, from the repository root:
#   bash scripts/run_cuda_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/speechinfer/target}"
rm -rf .gpu && mkdir -p .gpu
cargo build --release -p speechinfer-lm --features cuda --example cuda_step
cargo build --release -p speechinfer-codec --features cuda --example cuda_codec
cp "$CARGO_TARGET_DIR/release/examples/cuda_step" "$CARGO_TARGET_DIR/release/examples/cuda_codec" .gpu/
cargo test --release -p speechinfer-lm -p speechinfer-kernels -p speechinfer-codec \
  --features speechinfer-lm/cuda,speechinfer-codec/cuda \
  --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["kind"] == ["lib"]:
        shutil.copy(exe, ".gpu/test_" + m["target"]["name"])
        print("bundled", exe)
'
ls -la .gpu
