"""A deterministic, dependency-free embedding function for tests and examples.

Texts: hashed character 3-grams and words (feature hashing with blake2b, never Python's
salted ``hash()``), so strings that share substrings get similar vectors. Images: a 4x4
colour thumbnail plus a coarse colour histogram, hashed the same way, so the same image
(and a resized copy of it) maps to the same or a nearby vector. Text and image vectors share
the dimension but not any meaning: use ``open_clip`` for real cross-modal search.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from embedders.base import MODALITIES, BaseEmbeddingFunction
from embedders.errors import ConfigError

__all__ = ["HashEmbeddingFunction"]

_WORD = re.compile(r"\w+")
_THUMB = 4  # thumbnail side: coarse enough that resizing or re-encoding barely moves it
_BINS = 4  # histogram bins per channel


class HashEmbeddingFunction(BaseEmbeddingFunction):
    """Deterministic feature-hashing embeddings (unit-norm float32).

    Args:
        dim: Vector length.
        modalities: Which inputs it accepts: any non-empty subset of ``("text", "image")``.

    Example:
        >>> ef = HashEmbeddingFunction(dim=32)
        >>> a, b, c = ef(["a red circle", "a red circles", "blue star"])
        >>> bool(a @ b > a @ c)
        True
    """

    CONFIG_KEYS = ("dim", "modalities")

    def __init__(self, dim: int = 64, modalities: Iterable[str] = ("text", "image")) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ConfigError(f"dim must be an integer >= 2; got {dim!r}")
        if isinstance(modalities, str):
            modalities = (modalities,)
        mods = frozenset(modalities)
        if not mods or not mods <= MODALITIES:
            raise ConfigError(
                f"modalities must be a non-empty subset of {sorted(MODALITIES)}; got {modalities!r}"
            )
        self.dim = dim
        self.modalities_ = mods

    @staticmethod
    def name() -> str:
        return "hash"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> HashEmbeddingFunction:
        """Rebuild from :meth:`get_config` output.

        Example:
            >>> HashEmbeddingFunction.build_from_config({"dim": 16}).dim
            16
        """
        return HashEmbeddingFunction._from_config(config)

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim, "modalities": sorted(self.modalities_)}

    def modalities(self) -> frozenset[str]:
        return self.modalities_

    def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        return [self._hash_features(_text_features(t)) for t in texts]

    def _embed_images(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [self._hash_features(_image_features(im)) for im in images]

    def _hash_features(self, features: Iterable[tuple[str, float]]) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float64)
        for key, weight in features:
            digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dim
            sign = 1.0 if digest[4] & 1 else -1.0  # signed hashing keeps collisions unbiased
            vec[bucket] += sign * weight
        norm = np.linalg.norm(vec)
        if norm == 0.0:  # only when every feature cancelled out; pick a fixed direction
            vec[0], norm = 1.0, 1.0
        return (vec / norm).astype(np.float32)


def _text_features(text: str) -> list[tuple[str, float]]:
    norm = " ".join(text.lower().split())
    padded = f"  {norm}  "
    grams = [(f"t3:{padded[i:i + 3]}", 1.0) for i in range(len(padded) - 2)]
    words = [(f"tw:{w}", 1.0) for w in _WORD.findall(norm)]
    return grams + words or [("t:<empty>", 1.0)]


def _image_features(image: np.ndarray) -> list[tuple[str, float]]:
    from PIL import Image  # Pillow is a core dependency; imported here to keep import light

    thumb = np.asarray(
        Image.fromarray(image).resize((_THUMB, _THUMB), Image.Resampling.BOX), dtype=np.float64
    )
    feats = [
        (f"i:px:{y}:{x}:{c}", thumb[y, x, c] / 255.0 - 0.5)
        for y in range(_THUMB)
        for x in range(_THUMB)
        for c in range(3)
    ]
    quant = (image.reshape(-1, 3) // (256 // _BINS)).astype(np.int64)
    codes = quant[:, 0] * _BINS * _BINS + quant[:, 1] * _BINS + quant[:, 2]
    hist = np.bincount(codes, minlength=_BINS**3) / codes.size
    feats += [(f"i:hist:{k}", 2.0 * float(h)) for k, h in enumerate(hist) if h > 0]
    return feats
