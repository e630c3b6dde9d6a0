"""Record operations with chromadb's semantics, for every client kind."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from retrieval import InvalidArgumentError

TRICKY = ["quote'\"", "percent%_under", "back\\slash", "nul\x00byte", "日本語", "emoji 🎉", "tab\tnew\nline", " "]


def vec(*values):
    return [float(x) for x in values]


def test_add_and_get_roundtrip(collection):
    collection.add(
        ids=["a", "b"],
        embeddings=[vec(1, 2, 3), vec(4, 5, 6)],
        metadatas=[{"s": "x", "i": 1, "f": 1.5, "b": True, "l": [1, 2]}, None],
        documents=["doc a", None],
        uris=["file:///a.png", None],
    )
    got = collection.get(include=["embeddings", "metadatas", "documents", "uris"])
    assert got["ids"] == ["a", "b"]
    np.testing.assert_array_equal(got["embeddings"], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    assert got["metadatas"] == [{"s": "x", "i": 1, "f": 1.5, "b": True, "l": [1, 2]}, None]
    assert got["documents"] == ["doc a", None]
    assert got["uris"] == ["file:///a.png", None]
    assert got["included"] == ["embeddings", "metadatas", "documents", "uris"]
    assert isinstance(got["metadatas"][0]["i"], int) and isinstance(got["metadatas"][0]["b"], bool)


def test_default_include_and_result_keys(collection):
    collection.add(ids=["a"], embeddings=[vec(1, 0)], documents=["d"], metadatas=[{"k": 1}])
    got = collection.get()
    assert set(got) >= {"ids", "embeddings", "documents", "uris", "data", "metadatas", "included"}
    assert got["embeddings"] is None and got["documents"] == ["d"] and got["metadatas"] == [{"k": 1}]
    assert got["included"] == ["documents", "metadatas"]
    res = collection.query(query_embeddings=[vec(1, 0)])
    assert res["included"] == ["documents", "metadatas", "distances"]
    assert res["ids"] == [["a"]] and res["documents"] == [["d"]] and res["embeddings"] is None


def test_numpy_inputs(collection):
    emb = np.arange(12, dtype=np.float64).reshape(4, 3)
    collection.add(ids=[f"i{k}" for k in range(4)], embeddings=emb)
    got = collection.get(ids=["i2"], include=["embeddings"])
    np.testing.assert_array_equal(got["embeddings"][0], emb[2].astype(np.float32))
    res = collection.query(query_embeddings=np.array([6.0, 7.0, 8.0]), n_results=1)
    assert res["ids"] == [["i2"]]
    res = collection.query(query_embeddings=emb[:2], n_results=1)
    assert res["ids"] == [["i0"], ["i1"]]


def test_single_values_are_accepted(collection):
    collection.add(ids="one", embeddings=vec(1, 2), documents="only", metadatas={"k": "v"})
    assert collection.get(ids="one")["documents"] == ["only"]


def test_add_existing_id_is_skipped_with_warning(collection, caplog, client_kind):
    collection.add(ids=["a"], embeddings=[vec(1, 1)], documents=["first"])
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        collection.add(ids=["a", "b"], embeddings=[vec(2, 2), vec(3, 3)], documents=["second", "b"])
    if client_kind != "server":  # a subprocess server logs to its own log
        assert "already exist" in caplog.text
    assert collection.count() == 2
    assert collection.get(ids=["a"])["documents"] == ["first"]


def test_update_semantics(collection, caplog, client_kind):
    collection.add(ids=["a"], embeddings=[vec(1, 0)], documents=["old"], metadatas=[{"keep": 1, "drop": 2, "chg": "x"}])
    collection.update(ids=["a"], metadatas=[{"drop": None, "chg": "y", "new": True}])
    got = collection.get(ids=["a"], include=["metadatas", "documents", "embeddings"])
    assert got["metadatas"] == [{"keep": 1, "chg": "y", "new": True}]
    assert got["documents"] == ["old"]
    np.testing.assert_array_equal(got["embeddings"][0], [1, 0])
    collection.update(ids=["a"], embeddings=[vec(0, 1)], documents=["new"])
    got = collection.get(ids=["a"], include=["documents", "embeddings", "metadatas"])
    assert got["documents"] == ["new"] and got["metadatas"] == [{"keep": 1, "chg": "y", "new": True}]
    assert collection.query(query_embeddings=[vec(0, 1)], n_results=1)["distances"][0][0] == pytest.approx(0, abs=1e-6)
    with caplog.at_level(logging.ERROR, logger="retrieval"):
        collection.update(ids=["missing"], documents=["x"], embeddings=[vec(1, 1)])
    if client_kind != "server":  # a subprocess server logs to its own log
        assert "do not exist" in caplog.text
    assert collection.count() == 1


def test_update_all_keys_to_none_clears_metadata(collection):
    collection.add(ids=["a"], embeddings=[vec(1, 0)], metadatas=[{"k": 1}])
    collection.update(ids=["a"], metadatas=[{"k": None}])
    assert collection.get(ids=["a"])["metadatas"] == [None]
    assert collection.get(where={"k": 1})["ids"] == []


def test_upsert_adds_and_merges(collection):
    collection.add(ids=["a"], embeddings=[vec(1, 0)], metadatas=[{"x": 1, "y": 2}], documents=["a"])
    collection.upsert(ids=["a", "b"], embeddings=[vec(0, 1), vec(1, 1)], metadatas=[{"y": 3}, {"z": 4}])
    got = collection.get(include=["metadatas", "documents"])
    assert got["ids"] == ["a", "b"]
    assert got["metadatas"] == [{"x": 1, "y": 3}, {"z": 4}]
    assert got["documents"] == ["a", None]
    res = collection.query(query_embeddings=[vec(0, 1)], n_results=1)
    assert res["ids"] == [["a"]]


def test_delete_by_ids_where_and_document(collection):
    collection.add(
        ids=["a", "b", "c", "d"],
        embeddings=[vec(i, 1) for i in range(4)],
        metadatas=[{"g": 1}, {"g": 2}, {"g": 1}, {"g": 2}],
        documents=["keep", "drop me", "drop me", "keep"],
    )
    collection.delete(ids=["a"])
    assert collection.count() == 3
    collection.delete(where={"g": 2}, where_document={"$contains": "drop"})
    assert collection.get()["ids"] == ["c", "d"]
    collection.delete(ids=["c", "d"], where={"g": 1})
    assert collection.get()["ids"] == ["d"]
    with pytest.raises(InvalidArgumentError, match="delete needs"):
        collection.delete()
    collection.delete(ids=["nope"])
    assert collection.count() == 1


def test_get_limit_offset_and_order(collection):
    ids = [f"id{i:02d}" for i in range(20)]
    collection.add(ids=ids, embeddings=[vec(i, 0) for i in range(20)], metadatas=[{"even": i % 2 == 0} for i in range(20)])
    assert collection.get(limit=5)["ids"] == ids[:5]
    assert collection.get(limit=5, offset=18)["ids"] == ids[18:]
    assert collection.get(offset=19)["ids"] == ids[19:]
    assert collection.get(where={"even": True}, limit=3, offset=1)["ids"] == ["id02", "id04", "id06"]
    assert collection.get(ids=["id05", "id01", "id09"])["ids"] == ["id05", "id01", "id09"]
    assert collection.get(ids=["id05", "nope", "id01"], limit=1, offset=1)["ids"] == ["id01"]
    assert collection.peek(3)["ids"] == ids[:3]
    assert collection.peek()["embeddings"].shape == (10, 2)


def test_query_n_results_ids_and_filters(collection):
    collection.add(
        ids=[f"p{i}" for i in range(10)],
        embeddings=[vec(i, 0) for i in range(10)],
        metadatas=[{"i": i} for i in range(10)],
        documents=[f"doc {i}" for i in range(10)],
    )
    res = collection.query(query_embeddings=[vec(0, 0)], n_results=3)
    assert res["ids"] == [["p0", "p1", "p2"]]
    assert res["distances"][0] == pytest.approx([0, 1, 4])  # squared l2
    res = collection.query(query_embeddings=[vec(0, 0)], n_results=100)  # clamped
    assert len(res["ids"][0]) == 10
    res = collection.query(query_embeddings=[vec(0, 0)], ids=["p7", "p3"], n_results=5)
    assert res["ids"] == [["p3", "p7"]]
    res = collection.query(query_embeddings=[vec(0, 0)], where={"i": {"$gte": 5}}, n_results=2)
    assert res["ids"] == [["p5", "p6"]]
    res = collection.query(query_embeddings=[vec(0, 0)], where_document={"$contains": "doc 9"})
    assert res["ids"] == [["p9"]]
    res = collection.query(query_embeddings=[vec(0, 0)], where={"i": {"$gt": 100}})
    assert res["ids"] == [[]] and res["distances"] == [[]]


def test_query_include_everything(collection):
    collection.add(ids=["a"], embeddings=[vec(3, 4)], documents=["d"], uris=["u"], metadatas=[{"m": 1}])
    res = collection.query(query_embeddings=[vec(3, 4)], include=["embeddings", "documents", "uris", "metadatas", "distances"])
    np.testing.assert_array_equal(res["embeddings"][0][0], [3, 4])
    assert res["uris"] == [["u"]] and res["metadatas"] == [[{"m": 1}]] and res["documents"] == [["d"]]


def test_query_on_empty_collection(collection):
    res = collection.query(query_embeddings=[vec(1, 2)], n_results=3)
    assert res["ids"] == [[]]


@pytest.mark.parametrize("text", TRICKY)
def test_unicode_roundtrip(collection, text):
    collection.add(ids=[text], embeddings=[vec(1, 2)], documents=[text], metadatas=[{text: text}], uris=[text])
    got = collection.get(ids=[text], include=["documents", "metadatas", "uris"])
    assert got["ids"] == [text] and got["documents"] == [text] and got["metadatas"] == [{text: text}]
    assert got["uris"] == [text]
    assert collection.get(where={text: text})["ids"] == [text]
    assert collection.get(where_document={"$contains": text})["ids"] == [text]


def test_contains_is_literal_and_case_sensitive(collection):
    docs = ["100% sure", "100 percent", "snake_case", "snakeXcase", "Hello", "hello"]
    collection.add(ids=[str(i) for i in range(len(docs))], embeddings=[vec(i, 1) for i in range(len(docs))], documents=docs)
    assert collection.get(where_document={"$contains": "0%"})["documents"] == ["100% sure"]
    assert collection.get(where_document={"$contains": "e_c"})["documents"] == ["snake_case"]
    assert collection.get(where_document={"$contains": "Hello"})["documents"] == ["Hello"]
    assert collection.get(where_document={"$regex": "^h.llo$"})["documents"] == ["hello"]
    got = collection.get(where_document={"$not_contains": "snake"})["documents"]
    assert got == ["100% sure", "100 percent", "Hello", "hello"]


def test_list_metadata_contains(collection):
    collection.add(
        ids=["a", "b", "c"],
        embeddings=[vec(1, 0), vec(0, 1), vec(1, 1)],
        metadatas=[{"tags": ["red", "big"]}, {"tags": ["blue"]}, {"other": 1}],
    )
    assert collection.get(where={"tags": {"$contains": "red"}})["ids"] == ["a"]
    assert collection.get(where={"tags": {"$not_contains": "red"}})["ids"] == ["b", "c"]
    assert collection.get(ids=["a"])["metadatas"] == [{"tags": ["red", "big"]}]


def test_ne_and_nin_match_missing_keys(collection):
    collection.add(ids=["a", "b", "c"], embeddings=[vec(1, 0), vec(0, 1), vec(1, 1)], metadatas=[{"k": 1}, {"k": 2}, None])
    assert collection.get(where={"k": {"$ne": 1}})["ids"] == ["b", "c"]
    assert collection.get(where={"k": {"$nin": [1, 2]}})["ids"] == ["c"]
    assert collection.get(where={"$or": [{"k": 1}, {"k": 2}]})["ids"] == ["a", "b"]
    assert collection.get(where={"$and": [{"k": {"$gte": 1}}, {"k": {"$lt": 2}}]})["ids"] == ["a"]


def test_repeated_filters_stay_correct_across_writes_and_types(collection):
    """Filtered queries reuse label sets until the next write; bool and int filters never mix."""
    collection.add(ids=["zero", "false"], embeddings=[vec(1, 0), vec(0, 1)], metadatas=[{"a": 0}, {"a": False}])
    q = [vec(1, 1)]
    assert collection.query(query_embeddings=q, where={"a": 0})["ids"] == [["zero"]]
    assert collection.query(query_embeddings=q, where={"a": False})["ids"] == [["false"]]
    collection.add(ids=["zero2"], embeddings=[vec(1, 1)], metadatas=[{"a": 0}])
    assert sorted(collection.query(query_embeddings=q, where={"a": 0})["ids"][0]) == ["zero", "zero2"]
    collection.delete(ids=["zero"])
    assert collection.query(query_embeddings=q, where={"a": 0})["ids"] == [["zero2"]]
    collection.update(ids=["zero2"], metadatas=[{"a": 5}])
    assert collection.query(query_embeddings=q, where={"a": 0})["ids"] == [[]]


def test_get_pages_in_insertion_order_whichever_plan_reads_them(monkeypatch):
    """A collection holding most of the database is paged by walking the records table in label
    order (no sort of the collection); a small one beside it by sorting its own records. Both give
    insertion order, with records of the two collections interleaved in the table."""
    import retrieval
    from retrieval.query.filter_sql import collection_filter
    from retrieval.store import reads

    walked = {}

    def spy(collection_id, *args, **kwargs):
        walked[collection_id] = kwargs.get("walk_labels", False)
        return collection_filter(collection_id, *args, **kwargs)

    monkeypatch.setattr(reads, "collection_filter", spy)

    client = retrieval.EphemeralClient()
    big = client.create_collection("most_of_it", embedding_function=None)
    small = client.create_collection("a_little", embedding_function=None)
    big_ids, small_ids = [], []
    for batch in range(20):
        ids = [f"b{batch:02d}-{i:02d}" for i in range(30)][::-1]  # ids not in insertion order
        big.add(ids=ids, embeddings=[vec(i, batch, 1) for i in range(30)])
        big_ids += ids
        if batch % 5 == 0:
            small.add(ids=[f"s{batch:02d}"], embeddings=[vec(batch, 0, 1)])
            small_ids.append(f"s{batch:02d}")
    big.delete(ids=big_ids[40:45])
    del big_ids[40:45]
    for limit, offset in [(1, 0), (10, 0), (7, 33), (50, 550), (1, len(big_ids) - 1)]:
        assert big.get(limit=limit, offset=offset)["ids"] == big_ids[offset : offset + limit]
        assert small.get(limit=limit, offset=offset)["ids"] == small_ids[offset : offset + limit]
    assert big.peek(3)["ids"] == big_ids[:3] and small.peek(3)["ids"] == small_ids[:3]
    assert walked == {big.id: True, small.id: False}
    walk, args = collection_filter(big.id, None, None, walk_labels=True)
    conn = client._backend.engine.db
    with conn.reading() as c:
        plan = " | ".join(r[3] for r in c.execute(f"EXPLAIN QUERY PLAN SELECT r.id FROM records r WHERE {walk} ORDER BY r.label LIMIT 5", args))
    assert "TEMP B-TREE" not in plan and "autoindex" not in plan, plan
