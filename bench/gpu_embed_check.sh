#!/usr/bin/env bash
# The GPU measurement of issue 11, as one prepared run on the GPU host (../shared/device/README.md):
# wheels fetched here into .whl/ (bash ../shared/device/fetch-wheels.sh .whl), then, there:
#     bash bench/gpu_embed_check.sh [N]
# Prints one JSON line: nvJPEG / model ceilings, add(uris) and numpy images/s, cosine vs open_clip.
set -euo pipefail
N=${1:-4096}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/hnswlib-0.8.0.tar.gz
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 bench/embed_throughput.py --n "$N" --models ViT-B-32 --batch-size 256 --device cuda --loop-n 256
