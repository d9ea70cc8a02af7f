#!/usr/bin/env bash
# Install everything the tests need, build the engine, then run lints, cargo test and pytest.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PY=${PYTHON:-python3}
# One build cache for every checkout on this machine (CI clones afresh); works from nothing too.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/speechinfer/target}"

# Speech and text sources (flite voices, festival + its slt HTS voice, fortunes text).
APT_PACKAGES="flite festival festvox-us-slt-hts fortunes wamerican"
if ! dpkg -s $APT_PACKAGES >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null) ||
      echo "warning: $APT_PACKAGES not all installed; tests using real speech will skip"
  fi
fi

$PY -m pip install -q maturin "pytest>=8" pytest-benchmark ruff numpy safetensors soundfile scipy torch tokenizers "transformers==4.57.1" "pocketsphinx>=5,<6" pystoi
# Kyutai's PyTorch Mimi (tests/test_mimi.py reference): its metadata pins an older torch, numpy
# and safetensors, but it runs on current ones, so it goes in without its dependencies plus the
# two it imports.
$PY -m pip install -q einops sentencepiece
$PY -m pip install -q --no-deps "moshi==0.2.13"
# Kyutai's Rust Mimi (tests/test_mimi.py cross-check): a prebuilt wheel, not on every platform.
$PY -m pip install -q rustymimi || echo "warning: rustymimi not installed; its test will skip"
$PY -m pip install -q -e ./training
$PY -m pip install -q --no-build-isolation .
$PY -c "import speechinfer" # fail loudly if the build above did not install

cargo fmt --all --check
cargo clippy --workspace --all-targets -q -- -D warnings
ruff check python tests training bench
ruff format --check python tests training bench

cargo test --workspace --exclude speechinfer-py -q

# The `cuda` feature builds with no CUDA toolkit (driver and NVRTC load at run time). Without a
# GPU its tests still compile every kernel through NVRTC, from PyPI (13.0: the GPU machines'
# driver); the GPU tests skip.
NVRTC_DIR="$HOME/.cache/speechinfer/nvrtc-13.0"
if [ ! -f "$NVRTC_DIR/nvidia/cu13/lib/libnvrtc.so.13" ]; then
  $PY -m pip install -q --no-deps --target "$NVRTC_DIR" "nvidia-cuda-nvrtc==13.0.88" ||
    echo "warning: NVRTC not installed; the CUDA kernels will not be compiled"
fi
if [ -f "$NVRTC_DIR/nvidia/cu13/lib/libnvrtc.so.13" ]; then export SPEECHINFER_REQUIRE_NVRTC=1; fi
CUDA_CRATES="-p speechinfer-kernels -p speechinfer-lm -p speechinfer-codec"
CUDA_FEATURES="--features speechinfer-lm/cuda,speechinfer-codec/cuda"
cargo clippy $CUDA_CRATES $CUDA_FEATURES --all-targets -q -- -D warnings
LD_LIBRARY_PATH="$NVRTC_DIR/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  cargo test $CUDA_CRATES $CUDA_FEATURES -q
$PY scripts/gen_stubs.py --check
$PY -m pytest -q "$@"
