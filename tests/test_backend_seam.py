"""What crosses the Backend seam is typed: a parsed configuration, parsed filters, immutable batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from retrieval.collection import Collection
from retrieval.config import CollectionConfig, ComponentSpec, HnswConfig
from retrieval.http import wire
from retrieval.query.filters import Comparison, DocumentContains
from retrieval.store.backend import open_embedded_backend
from retrieval.types import RecordBatch


def test_engine_records_carry_the_parsed_configuration():
    backend = open_embedded_backend(None)
    config = CollectionConfig(hnsw=HnswConfig(space="cosine", ef_search=33))
    backend.create_collection("default_tenant", "default_database", "typed", config, None, False)
    record = backend.get_collection("default_tenant", "default_database", "typed")
    assert isinstance(record.config, CollectionConfig)
    assert (record.config.hnsw.space, record.config.hnsw.ef_search) == ("cosine", 33)
    assert not hasattr(record, "configuration_json")  # no JSON string travels with the record


def test_wire_records_carry_the_parsed_configuration_both_ways():
    config = CollectionConfig(hnsw=HnswConfig(space="ip", ef_search=21),
                              embedding_function=ComponentSpec("hash", {"dim": 4}))
    record = wire.collection_from_wire({"id": "0b6a0c44-0d0a-4f5e-9d4e-7d1c9c3f2a11", "name": "w",
                                        "configuration_json": wire.public_configuration(config)})
    assert isinstance(record.config, CollectionConfig)
    assert record.config.persists_as(config)
    assert wire.collection_to_wire(record)["configuration_json"] == wire.public_configuration(config)


def test_persists_as_ignores_what_is_not_stored():
    a = CollectionConfig(hnsw=HnswConfig(num_threads=1), embedding_function=ComponentSpec("hash", {"sizes": (1, 2)}))
    b = CollectionConfig(hnsw=HnswConfig(num_threads=7), embedding_function=ComponentSpec("hash", {"sizes": [1, 2]}))
    assert a.persists_as(b)
    assert not a.persists_as(dataclasses.replace(b, hnsw=HnswConfig(ef_search=5)))


def test_record_batches_are_immutable_and_leave_the_callers_array_alone():
    vectors = np.ones((2, 3), dtype=np.float32)
    batch = RecordBatch(ids=["a", "b"], embeddings=vectors, metadatas=[{"k": 1}, None], documents=["x", None],
                        sparse={"bm25": [None, None]})
    assert batch.ids == ("a", "b") and batch.metadatas == ({"k": 1}, None) and batch.documents == ("x", None)
    with pytest.raises(ValueError, match="read-only"):
        batch.embeddings[0, 0] = 5.0
    vectors[0, 0] = 2.0  # the caller's array stays writable (the batch holds a read-only view)
    with pytest.raises(TypeError):
        batch.sparse["other"] = ()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.ids = ("c",)  # type: ignore[misc]


class _Recording:
    """A backend that records what the handle passes across the seam, delegating the work."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def record(*args, **kwargs):
            self.seen.append((name, args, kwargs))
            return method(*args, **kwargs)

        return record


def test_filters_and_batches_cross_the_seam_parsed():
    backend = open_embedded_backend(None)
    record = backend.create_collection("default_tenant", "default_database", "seam", CollectionConfig(), None, False)
    recording = _Recording(backend)
    col = Collection(recording, record, None, None, None)
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"t": 1}, {"t": 2}],
            documents=["cat", "dog"])
    col.get(where={"t": 1}, where_document={"$contains": "cat"})
    col.query(query_embeddings=[[1.0, 0.0]], n_results=1, where={"t": {"$gte": 1}})
    col.delete(where={"t": 2})
    calls = {name: args for name, args, _ in recording.seen}
    assert isinstance(calls["write"][2], RecordBatch)
    get = calls["get"][1]
    assert isinstance(get.where, Comparison) and isinstance(get.where_document, DocumentContains)
    assert isinstance(calls["query"][1].where, Comparison)
    assert isinstance(calls["delete"][2], Comparison)
    assert col.count() == 1
