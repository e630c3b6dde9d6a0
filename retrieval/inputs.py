"""Turning a collection's inputs into vectors with its own functions.

``Collection`` validates arguments and calls the backend; this module holds the other half of a
handle's work: embedding documents, images and URIs (through the collection's data loader) for
writes and queries, the sparse vectors of documents for hybrid search, and the text or image
queries of a Search, always with the collection's embedding functions and never on a backend.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from retrieval import validation as v
from retrieval.errors import InvalidArgumentError
from retrieval.telemetry import span
from retrieval.types import RecordBatch


class InputEmbedder:
    """Embeds one collection's inputs.

    Args:
        name: the collection's current name (for messages; a rename changes it).
        part: ``part("embedding_function" | "data_loader" | "sparse")``, the collection's parts,
            built on first use.
    """

    def __init__(self, name: Callable[[], str], part: Callable[[str], Any]):
        self._name = name
        self._part = part

    def batch(self, ids, embeddings, metadatas, documents, images, uris, *, mode: str) -> RecordBatch:
        """Validate one write's columns and embed what needs embedding into a ``RecordBatch``."""
        ids = v.validate_ids(ids)
        n = len(ids)
        metadatas = v.validate_write_metadatas(metadatas, n, mode)
        documents = v.validate_strings(documents, n, "documents")
        uris = v.validate_strings(uris, n, "uris")
        images = validate_images(images, n)
        if embeddings is not None:
            vectors = v.validate_embeddings(embeddings, n)
        else:
            sources = [name for name, value in (("documents", documents), ("images", images), ("uris", uris)) if value is not None]
            if len(sources) > 1:
                raise InvalidArgumentError(
                    f"got {' and '.join(sources)} without embeddings; a record holds one modality, so pass exactly "
                    "one of documents, images or uris to embed (or pass embeddings)"
                )
            if not sources:
                if mode == "update":
                    return RecordBatch(ids=ids, metadatas=metadatas, uris=uris)
                raise InvalidArgumentError(
                    f"{mode} needs embeddings, or documents, images or uris for the embedding function to embed"
                )
            vectors = self._embed_records(sources[0], documents or images or uris)
            # A record holds one modality: embedding from one clears the others.
            if sources[0] != "documents":
                documents = [None] * n
            if sources[0] != "uris":
                uris = [None] * n
        sparse: dict[str, list[Any]] = {}
        if self._part("sparse") is not None and documents is not None:
            key, sparse_ef = self._part("sparse")
            texts = [(p, d) for p, d in enumerate(documents) if d is not None]
            computed = list(sparse_ef([d for _, d in texts])) if texts else []
            column: list[Any] = [None] * n
            for (p, _), vector in zip(texts, computed):
                column[p] = vector
            sparse = {key: column}
        return RecordBatch(ids=ids, embeddings=vectors, metadatas=metadatas, documents=documents, uris=uris,
                           sparse=sparse)

    def _embed_records(self, source: str, values: list) -> np.ndarray:
        ef = self._require_embedding_function(source)
        for position, value in enumerate(values):
            if value is None:
                raise InvalidArgumentError(f"{source}[{position}] is None; every record to embed needs a value")
        with span("retrieval.embed", collection=self._name(), source=source, records=len(values)):
            vectors = self._embed_uris(ef, values) if source == "uris" else ef(values)
        return check_output(vectors, len(values), ef)

    def _embed_uris(self, ef: Any, uris: list[str]) -> list:
        import embedders

        if self._part("data_loader") is None:
            raise InvalidArgumentError(
                f"collection {self._name()!r} has no data loader to read uris; create it with "
                "data_loader=ImageLoader() (from loaders import ImageLoader)"
            )
        # The function's own batch_size (a host option: e.g. 256 on a GPU), not a fixed one.
        return embedders.embed_uris(ef, uris, self._part("data_loader"))

    def queries(self, embeddings, texts, images, uris) -> np.ndarray:
        """The (n, d) query vectors of a ``query`` call: given, or embedded from texts, images or URIs."""
        given = [
            name
            for name, value in (
                ("query_embeddings", embeddings),
                ("query_texts", texts),
                ("query_images", images),
                ("query_uris", uris),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise InvalidArgumentError(
                f"pass exactly one of query_embeddings, query_texts, query_images or query_uris; got {given or 'none'}"
            )
        if embeddings is not None:
            return v.validate_embeddings(embeddings, what="query_embeddings")
        if texts is not None:
            texts = v.one_or_many(texts, "query_texts")
            if not texts or not all(isinstance(t, str) for t in texts):
                raise InvalidArgumentError(f"query_texts must be a non-empty list of strings; got {texts!r}")
            ef = self._require_embedding_function("query_texts")
            embed = getattr(ef, "embed_query", None) or ef
            return check_output(embed(texts), len(texts), ef)
        if images is not None:
            images = validate_images(images, None)
            ef = self._require_embedding_function("query_images")
            return check_output(ef(images), len(images), ef)
        uris = v.one_or_many(uris, "query_uris")
        if not uris or not all(isinstance(u, str) and u for u in uris):
            raise InvalidArgumentError(f"query_uris must be a non-empty list of strings; got {uris!r}")
        ef = self._require_embedding_function("query_uris")
        return check_output(self._embed_uris(ef, uris), len(uris), ef)

    def search_query(self, key: str, query: Any) -> Any:
        """Embed one text or image Knn query: dense with the collection's function, sparse with the key's."""
        if key == "#embedding":
            if isinstance(query, str):
                return self.queries(None, [query], None, None)[0]
            return self.queries(None, None, [query], None)[0]
        if self._part("sparse") is None or key != self._part("sparse")[0] or not isinstance(query, str):
            known = ["#embedding"] + ([self._part("sparse")[0]] if self._part("sparse") is not None else [])
            raise InvalidArgumentError(
                f"cannot embed a {type(query).__name__} Knn query for key {key!r} of collection {self._name()!r}; "
                f"keys: {known} (a sparse key takes text or a SparseVector)"
            )
        sparse_ef = self._part("sparse")[1]
        embed = getattr(sparse_ef, "embed_query", None) or sparse_ef
        return embed([query])[0]

    def _require_embedding_function(self, what: str) -> Any:
        if self._part("embedding_function") is None:
            raise InvalidArgumentError(
                f"collection {self._name()!r} has no embedding function to embed {what}; pass embeddings, or create "
                "the collection with embedding_function=... (e.g. OpenCLIPEmbeddingFunction())"
            )
        return self._part("embedding_function")


def validate_images(images: Any, count: int | None) -> list | None:
    """Image inputs: a list of arrays or PIL images (a single 2-d/3-d array is one image)."""
    if images is None:
        return None
    import embedders

    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object:
        images = [images]
    elif embedders.is_image(images) and not isinstance(images, np.ndarray):
        images = [images]
    images = list(images)
    if not images:
        raise InvalidArgumentError("images must be a non-empty list of image arrays")
    if count is not None and len(images) != count:
        raise InvalidArgumentError(f"got {len(images)} images for {count} ids; give exactly one per id")
    out = []
    for position, image in enumerate(images):
        try:
            out.append(embedders.to_rgb_uint8(image))
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(f"images[{position}]: {e}") from e
    return out


def check_output(vectors: Any, expected: int, ef: Any) -> np.ndarray:
    vectors = list(vectors)
    if len(vectors) != expected:
        raise InvalidArgumentError(
            f"embedding function {type(ef).__name__} returned {len(vectors)} vectors for {expected} inputs"
        )
    return v.validate_embeddings(vectors, expected, what="embedding function output")
