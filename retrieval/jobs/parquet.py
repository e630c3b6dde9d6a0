"""Embeddings as Parquet shards: what ``retrieval embed`` writes and ``index --from-parquet`` reads.

A folder of ``part-NNNNN.parquet`` files, each with the columns

    id      string                  the record id (stable, see retrieval.jobs.sources)
    uri     string                  where the image is
    vector  fixed_size_list<float>  the embedding (float32)
    model   string                  the model, e.g. "open_clip:ViT-B-32:laion2b_s34b_b79k"

and, in the schema metadata, ``retrieval.embedding_function`` = ``{"name", "config"}`` (the
registry name and config a collection persists), so a collection loaded from the shards
can embed text queries in the same space. Any Parquet with an id/uri and a vector column
(``vector``, ``embedding``, ``img_emb``) can be loaded.

Each shard is written to a temporary name and renamed into place, so a killed job leaves
only whole shards; a rerun reads their ids and skips them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import InvalidArgumentError

__all__ = ["ShardWriter", "read_shards", "shard_paths"]

_EF_KEY = b"retrieval.embedding_function"
_SHARD = re.compile(r"^part-(\d{5,})\.parquet$")
VECTOR_COLUMNS = ("vector", "embedding", "embeddings", "img_emb")
URI_COLUMNS = ("uri", "url", "image_path", "path")


def shard_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """The shards in ``folder``, in order (temporary files of an interrupted write excluded)."""
    folder = Path(folder)
    return sorted((p for p in folder.glob("*.parquet") if not p.name.startswith(".")), key=lambda p: p.name)


def model_label(embedding_function: Any) -> str:
    """``name:model_name[:checkpoint]`` for an embedding function (the ``model`` column)."""
    config = embedding_function.get_config() if hasattr(embedding_function, "get_config") else {}
    parts = [str(embedding_function.name())]
    parts += [str(config[k]) for k in ("model_name", "checkpoint") if config.get(k)]
    return ":".join(parts)


class ShardWriter:
    """Writes embeddings into ``folder`` as numbered shards, atomically.

    Args:
        folder: Output folder (created).
        embedding_function: Recorded in each shard's schema metadata and ``model`` column.

    Example:
        >>> import tempfile
        >>> from embedders import HashEmbeddingFunction
        >>> w = ShardWriter(tempfile.mkdtemp(), HashEmbeddingFunction(dim=4))
        >>> w.write(["a"], ["/x/a.png"], np.ones((1, 4), np.float32)).name
        'part-00000.parquet'
        >>> sorted(w.existing_ids)
        ['a']
    """

    def __init__(self, folder: str | os.PathLike[str], embedding_function: Any) -> None:
        import pyarrow.parquet as pq

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model = model_label(embedding_function)
        self.ef_spec = json.dumps({"name": embedding_function.name(), "config": embedding_function.get_config()})
        self.existing_ids: set[str] = set()
        numbers = [-1]
        for path in shard_paths(self.folder):
            match = _SHARD.match(path.name)
            if match:
                numbers.append(int(match.group(1)))
            self.existing_ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
        self._next = max(numbers) + 1

    def write(self, ids: Sequence[str], uris: Sequence[str], vectors: np.ndarray, *, name: str | None = None) -> Path:
        """Write one shard; returns its path.

        Args:
            name: The shard's file name; default: the next ``part-NNNNN.parquet``. A job whose
                shards finish out of order (``embed --ray``) names each by its content.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
        table = pa.table(
            {"id": pa.array(list(ids), pa.string()), "uri": pa.array(list(uris), pa.string()),
             "vector": column, "model": pa.array([self.model] * len(ids), pa.string())}
        ).replace_schema_metadata({_EF_KEY: self.ef_spec.encode()})
        path = self.folder / (name or f"part-{self._next:05d}.parquet")
        tmp = self.folder / f".{path.name}.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if name is None:
            self._next += 1
        self.existing_ids.update(ids)
        return path


def read_shards(folder: str | os.PathLike[str]) -> Iterator[tuple[list[str], list[str | None], np.ndarray, dict | None]]:
    """Yield ``(ids, uris, vectors, embedding-function spec or None)`` per shard.

    Raises:
        InvalidArgumentError: No shards, or a shard without an id/uri or a vector column.
    """
    import pyarrow.parquet as pq

    paths = shard_paths(folder)
    if not paths:
        raise InvalidArgumentError(f"no .parquet shards in {str(folder)!r} (write some with `retrieval embed`)")
    for path in paths:
        table = pq.read_table(path)
        names = table.column_names
        vec = next((c for c in VECTOR_COLUMNS if c in names), None)
        uri = next((c for c in URI_COLUMNS if c in names), None)
        if vec is None or (uri is None and "id" not in names):
            raise InvalidArgumentError(
                f"shard {str(path)!r} has columns {names}; it needs a vector column ({', '.join(VECTOR_COLUMNS)}) "
                f"and an 'id' or URI column ({', '.join(URI_COLUMNS)})"
            )
        uris = table.column(uri).to_pylist() if uri else [None] * table.num_rows
        ids = [str(i) for i in table.column("id").to_pylist()] if "id" in names else [str(u) for u in uris]
        if table.num_rows:
            flat = table.column(vec).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            vectors = flat.astype(np.float32, copy=False).reshape(table.num_rows, -1)
        else:
            vectors = np.zeros((0, 0), np.float32)
        meta = (table.schema.metadata or {}).get(_EF_KEY)
        yield ids, uris, vectors, (json.loads(meta) if meta else None)
