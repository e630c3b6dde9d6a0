"""A batch embedding job: embed many image URIs on the GPU (or CPU) with a progress bar, then store
the vectors with their URIs.

    python examples/gpu_batch_embed.py [FOLDER] [--device auto|cuda|cpu] [--batch-size 256]

Decoding runs in a thread pool and overlaps with encoding; on CUDA the model runs under fp16
autocast. The device is a host choice and is never saved with the collection.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import retrieval
from embedders import OpenCLIPEmbeddingFunction, embed_uris
from embedders.assets import gallery_dir
from loaders import ImageLoader

parser = argparse.ArgumentParser()
parser.add_argument("folder", nargs="?", default=str(gallery_dir()))
parser.add_argument("--device", default="auto")
parser.add_argument("--batch-size", type=int, default=256)
parser.add_argument("--model", default="tiny-shapes")
args = parser.parse_args()

files = sorted(str(p) for p in Path(args.folder).rglob("*.png"))
ef = OpenCLIPEmbeddingFunction(model_name=args.model, device=args.device, batch_size=args.batch_size)
loader = ImageLoader()

ef(["warm-up"])  # load the model before timing
start = time.perf_counter()
vectors = embed_uris(ef, files, loader, batch_size=args.batch_size, progress=True)
elapsed = time.perf_counter() - start
print(f"embedded {len(files)} images in {elapsed:.2f}s ({len(files) / elapsed:.0f} images/s)")

# A throwaway store for the demo (removed at the end); point `path` at a folder of your own to keep it.
with tempfile.TemporaryDirectory(prefix="batch-") as path, retrieval.PersistentClient(path=path) as client:
    col = client.create_collection("batch", embedding_function=ef, data_loader=loader)
    step = client.get_max_batch_size()
    for lo in range(0, len(files), step):
        col.add(ids=files[lo : lo + step], embeddings=vectors[lo : lo + step], uris=files[lo : lo + step])
    print(f"stored {col.count()} records; reopen later with get_collection('batch') on any host")
