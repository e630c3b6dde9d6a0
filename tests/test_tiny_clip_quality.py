"""Retrieval quality of the bundled ``tiny-shapes`` CLIP on pictures it never saw.

The pictures come from ``tests/alt_shapes.py``, a renderer written independently of the
training renderer (numpy rasterisation, other shades and background styles), so passing
means the model learned colours and shapes rather than one renderer's quirks. Run with
``-s`` to see the figures::

    python -m pytest tests/test_tiny_clip_quality.py -s
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from typing import Any

import numpy as np
import pytest

try:  # works whether or not tests/ is a package
    from tests.alt_shapes import alt_dataset
except ImportError:
    from alt_shapes import alt_dataset

from embedders import OpenCLIPEmbeddingFunction
from embedders.shapes import caption

PER_CLASS = 8  # 8 colours x 5 shapes x 8 = 320 held-out pictures
K = 5


@pytest.fixture(scope="module")
def ef() -> Any:
    return OpenCLIPEmbeddingFunction("tiny-shapes", device="cpu")


@pytest.fixture(scope="module")
def held_out(ef: Any) -> dict[str, Any]:
    images, labels = alt_dataset(per_class=PER_CLASS, seed=12345)
    classes = sorted(set(labels))
    return {
        "labels": np.array([classes.index(x) for x in labels]),
        "classes": classes,
        "images": np.stack(ef(images)),
    }


def _precision(order: np.ndarray, relevant: np.ndarray) -> float:
    return float(np.mean(relevant[order[:K]]))


def test_text_to_image_precision_at_5(ef: Any, held_out: dict[str, Any]) -> None:
    images, labels, classes = held_out["images"], held_out["labels"], held_out["classes"]
    texts = np.stack(ef([caption(c, s) for c, s in classes]))
    scores = [_precision(np.argsort(-(images @ t)), labels == i) for i, t in enumerate(texts)]
    p5 = float(np.mean(scores))
    print(f"\ntext->image precision@{K} over {len(classes)} queries, {len(images)} images: {p5:.3f}")
    assert p5 >= 0.9


def test_image_to_image_precision_at_5(held_out: dict[str, Any]) -> None:
    images, labels = held_out["images"], held_out["labels"]
    sims = images @ images.T
    np.fill_diagonal(sims, -np.inf)  # a picture is not its own neighbour
    p5 = float(np.mean([_precision(np.argsort(-row), labels == labels[i]) for i, row in enumerate(sims)]))
    print(f"\nimage->image precision@{K} over {len(images)} queries: {p5:.3f}")
    assert p5 >= 0.95


def test_paraphrased_queries_find_the_right_pictures(ef: Any, held_out: dict[str, Any]) -> None:
    images, labels, classes = held_out["images"], held_out["labels"], held_out["classes"]
    queries = {
        "a photo of a blue star": ("blue", "star"),
        "green triangle": ("green", "triangle"),
        "a small yellow cross on a grey background": ("yellow", "cross"),
        "an image of an orange circle": ("orange", "circle"),
        "the purple square": ("purple", "square"),
        "a white circle": ("white", "circle"),
        "black star": ("black", "star"),
        "a picture of a red cross": ("red", "cross"),
    }
    vectors = ef(list(queries))
    for (query, label), v in zip(queries.items(), vectors):
        top = np.argsort(-(images @ v))[:K]
        hits = int(np.sum(labels[top] == classes.index(label)))
        assert hits >= 4, f"{query!r}: {hits}/{K} of the top {K} are {label}"
