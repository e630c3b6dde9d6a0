"""Text and images in one CLIP space: query the same collection by text, by image file and by URI.

    python examples/image_and_text_search.py
"""

from __future__ import annotations

import retrieval
from embedders import OpenCLIPEmbeddingFunction
from embedders.assets import gallery_dir
from loaders import ImageLoader

files = sorted(gallery_dir().glob("*.png"))
client = retrieval.EphemeralClient()
shapes = client.create_collection(
    "shapes", embedding_function=OpenCLIPEmbeddingFunction(), data_loader=ImageLoader()
)
shapes.add(ids=[p.stem for p in files], uris=[str(p) for p in files])
# Text records share the space: a caption can be found by an image and vice versa.
shapes.add(ids=["note-1", "note-2"], documents=["a yellow star", "a black cross"])

for text in ["a red circle", "purple square", "a photo of a blue star"]:
    print(f"{text!r:28} ->", shapes.query(query_texts=[text], n_results=3)["ids"][0])

probe = str(files[0])
print(f"image {files[0].name!r:20} ->", shapes.query(query_uris=[probe], n_results=3)["ids"][0])

# include=["data"] loads images back from their URIs (text records get None).
got = shapes.get(ids=[files[0].stem, "note-1"], include=["data", "documents"])
print("data shapes:", [None if d is None else d.shape for d in got["data"]], "documents:", got["documents"])
