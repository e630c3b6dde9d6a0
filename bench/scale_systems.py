"""The systems the scale benchmark compares, behind one small interface.

Each worker process builds exactly one of these, so each system's imports (and memory) stay in its own
interpreter: ``retrieval`` from whatever PYTHONPATH names, chromadb and lancedb from their own venvs.

Records are ``id{i}`` with metadata ``{"i": i, "tag": "t{i % 100}"}``; results come back as row
numbers ``i`` so they can be scored against exact ground truth.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

COLLECTION = "scale"

# chromadb: no telemetry attempts (there is no internet here).
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def metadata(lo: int, hi: int) -> list[dict]:
    return [{"i": i, "tag": f"t{i % 100}"} for i in range(lo, hi)]


def ids(lo: int, hi: int) -> list[str]:
    return [f"id{i}" for i in range(lo, hi)]


def row_numbers(id_list: list[str]) -> list[int]:
    return [int(s[2:]) for s in id_list]


class ChromaApi:
    """Ours (``import retrieval``) and chromadb 1.5.9: the same Chroma Python API, cosine space.

    Search parameters are each system's defaults (M 16, ef_construction 100, ef_search 100 for both).
    """

    def __init__(self, module: str):
        self.module = importlib.import_module(module)
        self.version = f"{module} {getattr(self.module, '__version__', '?')} ({os.path.dirname(self.module.__file__)})"
        self.client = self.collection = None

    def open(self, path: str, create: bool) -> None:
        self.client = self.module.PersistentClient(path=path)
        if create:
            self.collection = self.client.create_collection(
                COLLECTION, embedding_function=None, metadata={"hnsw:space": "cosine"}
            )
        else:
            self.collection = self.client.get_collection(COLLECTION, embedding_function=None)

    def add(self, lo: int, vectors: np.ndarray) -> None:
        hi = lo + len(vectors)
        self.collection.add(ids=ids(lo, hi), embeddings=vectors, metadatas=metadata(lo, hi))

    def finish_ingest(self) -> None:
        """Nothing to do: both systems index as they add."""

    def query(self, vector: np.ndarray, k: int, window: tuple[int, int] | None = None) -> list[int]:
        where = None if window is None else {"$and": [{"i": {"$gte": int(window[0])}}, {"i": {"$lt": int(window[1])}}]}
        r = self.collection.query(
            query_embeddings=vector[None, :], n_results=k, where=where, include=["metadatas", "distances"]
        )
        return row_numbers(r["ids"][0])

    def set_ef(self, ef: int | None) -> None:
        """Search with this ef (None: the default, 100), as a user would: through the configuration."""
        self.collection.modify(configuration={"hnsw": {"ef_search": ef or 100}})

    def close(self) -> None:
        self.client.close()


class Lance:
    """LanceDB: an IVF_HNSW_SQ index built after ingest (``indexed``), or no index (an exact flat scan).

    Queries use LanceDB's default nprobes (20) and ``ef`` (its default is 1.5 x limit; the benchmark
    passes the same ef as ours unless told otherwise). Rows added after the index was built are
    searched by LanceDB's flat scan of unindexed data, as a user would get.
    """

    def __init__(self, indexed: bool, ef: int | None):
        import lancedb
        import pyarrow as pa

        self.lancedb, self.pa = lancedb, pa
        self.version = f"lancedb {lancedb.__version__}"
        self.indexed, self.ef = indexed, ef
        self.default_ef = ef
        self.db = self.table = None

    def open(self, path: str, create: bool) -> None:
        self.db = self.lancedb.connect(path)
        if not create:
            self.table = self.db.open_table(COLLECTION)

    def _arrow(self, lo: int, vectors: np.ndarray):
        pa = self.pa
        hi = lo + len(vectors)
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
        return pa.table(
            {
                "id": pa.array(ids(lo, hi)),
                "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
                "i": pa.array(np.arange(lo, hi, dtype=np.int64)),
                "tag": pa.array([f"t{i % 100}" for i in range(lo, hi)]),
            }
        )

    def add(self, lo: int, vectors: np.ndarray) -> None:
        batch = self._arrow(lo, vectors)
        if self.table is None:
            self.table = self.db.create_table(COLLECTION, data=batch)
        else:
            self.table.add(batch)

    def finish_ingest(self) -> None:
        if self.indexed:
            from lancedb.index import HnswSq

            self.table.create_index("vector", config=HnswSq(distance_type="cosine"))

    def query(self, vector: np.ndarray, k: int, window: tuple[int, int] | None = None) -> list[int]:
        q = self.table.search(vector, vector_column_name="vector").distance_type("cosine").limit(k)
        if self.indexed and self.ef is not None:
            q = q.ef(self.ef)
        if window is not None:
            q = q.where(f"i >= {int(window[0])} AND i < {int(window[1])}", prefilter=True)
        return row_numbers(q.select(["id", "i", "tag", "_distance"]).to_arrow()["id"].to_pylist())

    def set_ef(self, ef: int | None) -> None:
        self.ef = ef or self.default_ef

    def close(self) -> None:
        # LanceDB 0.40's sync table and connection have no close(): every add() is already a
        # committed version, so there is nothing to flush. Close whatever a later version offers.
        for handle in (self.table, self.db):
            close = getattr(handle, "close", None)
            if close is not None:
                close()


def make(system: str, lance_ef: int | None):
    """The adapter for a system name: ours, chroma, lance (IVF_HNSW_SQ) or lance-flat."""
    if system == "ours":
        return ChromaApi("retrieval")
    if system == "chroma":
        return ChromaApi("chromadb")
    if system in ("lance", "lance-flat"):
        return Lance(indexed=system == "lance", ef=lance_ef)
    raise ValueError(f"unknown system {system!r}; use ours, chroma, lance or lance-flat")
