"""Index a folder of photos by URI and search it by text.

    python examples/index_photo_folder.py [FOLDER] [QUERY]

Only the URIs are stored; the images stay where they are. Re-running is cheap and idempotent:
ids are the paths relative to the folder, and `upsert` re-embeds only what it is given.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import retrieval
from embedders import OpenCLIPEmbeddingFunction
from embedders.assets import gallery_dir
from loaders import ImageLoader

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else gallery_dir()
query = sys.argv[2] if len(sys.argv) > 2 else "a green triangle"
files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})

# A throwaway store for the demo (removed at the end); point `path` at a folder of your own to keep it.
with tempfile.TemporaryDirectory(prefix="photos-") as path, retrieval.PersistentClient(path=path) as client:
    photos = client.create_collection(
        "photos",
        embedding_function=OpenCLIPEmbeddingFunction(model_name="tiny-shapes"),
        data_loader=ImageLoader(),
        configuration={"hnsw": {"space": "cosine"}},
    )
    photos.upsert(ids=[str(p.relative_to(folder)) for p in files], uris=[str(p) for p in files])
    print(f"indexed {photos.count()} images from {folder}")

    result = photos.query(query_texts=[query], n_results=5, include=["uris", "distances"])
    for id_, distance in zip(result["ids"][0], result["distances"][0]):
        print(f"{distance:.3f}  {id_}")
