#!/usr/bin/env bash
# Side-by-side store benchmark against chromadb (see bench/README.md). Usage: compare.sh N DIST
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
shared="${SHARED:-$here/../../shared}"
n="${1:-20000}"; dist="${2:-clustered}"
mkdir -p "$here/results"
python "$shared/bench/compare.py" --peer-python "${PEER_PYTHON:-/tmp/chroma-peer/bin/python}" \
    --ours-python "$(command -v python)" --n "$n" --d 512 --dist "$dist" \
    | tee "$here/results/compare-$n-$dist.txt"
