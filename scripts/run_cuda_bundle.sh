#!/usr/bin/env bash
# On the GPU machine: the CUDA tests (decoder vs reference step, device sampling vs the CPU
# sampler, graphs, codec decode vs the reference and the CPU codec) and the step and codec
# benchmarks, from the binaries scripts/build_cuda_bundle.sh made.
set -uo pipefail
cd "$(dirname "$0")/.."
NVRTC=$(find / -name 'libnvrtc.so.13' -not -path '*/proc/*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$(dirname "${NVRTC:-/x/x}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SPEECHINFER_REQUIRE_GPU=1 SPEECHINFER_REQUIRE_NVRTC=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in .gpu/test_*; do echo "== $t"; "$t" --test-threads 1 cuda; done
for b in 1 8; do .gpu/cuda_step batch=$b steps=128; done
.gpu/cuda_step model=python/speechinfer/models/default/lm batch=1 steps=128
for b in 1 8; do .gpu/cuda_codec seconds=10 batch=$b repeat=5; done
.gpu/cuda_codec model=python/speechinfer/models/default/codec seconds=10 batch=1 repeat=5
