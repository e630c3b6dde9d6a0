"""Images/s embedding from URIs: a collection's `add(uris=...)` against a plain per-image open_clip loop.

    python bench/embed_throughput.py [--n 512] [--size 224] [--device auto]

The baseline is what chromadb's OpenCLIPEmbeddingFunction does: open each image, preprocess it and
encode it alone. Ours goes through the whole collection API (ImageLoader thread pool, batched
encoding overlapped with decoding, storage). Both use the bundled tiny-shapes model and the same
files; the ratio is what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import retrieval  # noqa: E402
from embedders import OpenCLIPEmbeddingFunction  # noqa: E402
from embedders.shapes import COLOURS, SHAPES, render_shape  # noqa: E402
from loaders import ImageLoader  # noqa: E402


def make_images(n: int, size: int, folder: str) -> list[str]:
    rng = np.random.default_rng(0)
    uris = []
    for i in range(n):
        path = os.path.join(folder, f"{i:05d}.jpg")
        render_shape(COLOURS[i % len(COLOURS)], SHAPES[i % len(SHAPES)], size=size, rng=rng).save(path, quality=90)
        uris.append(path)
    return uris


def per_image_loop(uris: list[str], device: str) -> float:
    import open_clip
    import torch
    from PIL import Image

    ef = OpenCLIPEmbeddingFunction(device=device)
    ef(["warm-up"])  # resolve and load the model exactly as ours does
    model, preprocess, dev = ef._model, ef._preprocess, ef._device
    del open_clip
    start = time.perf_counter()
    with torch.inference_mode():
        for uri in uris:
            image = preprocess(Image.open(uri).convert("RGB")).unsqueeze(0).to(dev)
            model.encode_image(image)
    return len(uris) / (time.perf_counter() - start)


def collection_add(uris: list[str], device: str, batch_size: int) -> float:
    client = retrieval.EphemeralClient()
    ef = OpenCLIPEmbeddingFunction(device=device, batch_size=batch_size)
    ef(["warm-up"])
    col = client.create_collection("bench", embedding_function=ef, data_loader=ImageLoader())
    start = time.perf_counter()
    col.add(ids=[str(i) for i in range(len(uris))], uris=uris)
    return len(uris) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    with tempfile.TemporaryDirectory() as folder:
        uris = make_images(args.n, args.size, folder)
        baseline = per_image_loop(uris, device)
        ours = collection_add(uris, device, args.batch_size)
    result = {"device": device, "images": args.n, "size": args.size, "per_image_loop_ips": round(baseline, 1),
              "collection_add_ips": round(ours, 1), "ratio": round(ours / baseline, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
