"""Query with a numpy image: render one in memory (or take a camera frame) and search with it.

    python examples/query_with_numpy_image.py
"""

from __future__ import annotations

import numpy as np

import retrieval
from embedders import OpenCLIPEmbeddingFunction
from embedders.assets import gallery_dir
from embedders.shapes import render_shape
from loaders import ImageLoader

files = sorted(gallery_dir().glob("*.png"))
client = retrieval.EphemeralClient()
gallery = client.create_collection("gallery", embedding_function=OpenCLIPEmbeddingFunction(), data_loader=ImageLoader())
gallery.add(ids=[p.stem for p in files], uris=[str(p) for p in files])

# Any HxW, HxWx3 or HxWx4 array (uint8 or float in [0, 1]) or a PIL image works.
image = np.asarray(render_shape("orange", "star", size=200, rng=np.random.default_rng(1)))
result = gallery.query(query_images=[image], n_results=3, include=["distances"])
print("an orange star looks most like:", result["ids"][0])
