#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and torch with CUDA, from a checkout: the GPU reference timings and
# `validate --reference torch` in one go (~10-15 min; a full-size build peaks near 9 GB of RAM).
#   bash bench/gpu_box.sh [WORK_DIR]          then, on any CPU machine:
#   edgeclip bench BUNDLE --compare bench/results/gpu-reference-*.json
# With onnxruntime-gpu installed as well, the bundle's fp16/fp32 graphs on ORT's CUDA provider are timed too.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/edgeclip-gpu}
python -m converters make-checkpoint "$work/ckpt" --size full --overwrite
python -m converters build "$work/ckpt" --out "$work/bundle" --variants int8,fp16 --overwrite
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd '[:alnum:]-' | tr '[:upper:]' '[:lower:]')
python -m bench.gpu_reference --out "bench/results/gpu-reference-$gpu.json" --checkpoint "$work/ckpt" --bundle "$work/bundle"
python -m converters validate "$work/bundle" --reference torch --checkpoint "$work/ckpt" --device auto
