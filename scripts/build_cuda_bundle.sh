#!/usr/bin/env bash
# Builds what a GPU session runs (the GPU machine has no Rust): the CUDA test binaries of the
# kernels and lm crates and the cuda_step benchmark, copied to .gpu/ (git-ignored; name it in
# the device tool's `carry`). Then, on the GPU machine, from the repository root:
#   bash scripts/run_cuda_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/speechinfer/target}"
rm -rf .gpu && mkdir -p .gpu
cargo build --release -p speechinfer-lm --features cuda --example cuda_step
cp "$CARGO_TARGET_DIR/release/examples/cuda_step" .gpu/
cargo test --release -p speechinfer-lm -p speechinfer-kernels --features speechinfer-lm/cuda \
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
