"""Reopen a saved collection days later with no arguments: the embedding function and data
loader are rebuilt from the collection's stored configuration.

    python examples/reopen_saved_collection.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap

import retrieval
from embedders import OpenCLIPEmbeddingFunction
from embedders.assets import gallery_dir
from loaders import ImageLoader

files = sorted(gallery_dir().glob("*.png"))
# A throwaway store for the demo, removed at the end; use a folder of your own to keep it.
with tempfile.TemporaryDirectory(prefix="saved-") as path:
    with retrieval.PersistentClient(path=path) as client:
        col = client.create_collection("saved", embedding_function=OpenCLIPEmbeddingFunction(), data_loader=ImageLoader())
        col.add(ids=[p.stem for p in files], uris=[str(p) for p in files])
        print("stored configuration:", col.configuration["embedding_function"], col.configuration["data_loader"])

    # A brand-new process: no embedding function, no loader passed.
    later = textwrap.dedent(
        f"""
        import retrieval
        col = retrieval.PersistentClient(path={path!r}).get_collection("saved")
        print("reopened with", type(col.embedding_function).__name__, "and", type(col.data_loader).__name__)
        print("a purple circle ->", col.query(query_texts=["a purple circle"], n_results=3)["ids"][0])
        """
    )
    subprocess.run([sys.executable, "-c", later], check=True)
