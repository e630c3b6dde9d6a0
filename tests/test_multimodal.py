"""Multimodal collections through the public API: persisted embedding functions and loaders,
text / image / URI records and queries in one CLIP space, and retrieval quality on held-out shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embedders
import embedders.shapes
import retrieval
from embedders import HashEmbeddingFunction, OpenCLIPEmbeddingFunction
from loaders import ImageLoader
from retrieval import ConfigurationConflictError, InvalidArgumentError

try:
    from tests.alt_shapes import alt_dataset
except ImportError:  # tests/ not a package
    from alt_shapes import alt_dataset

ROOT = Path(__file__).resolve().parents[1]
K = 5


@pytest.fixture(scope="module")
def clip():
    return OpenCLIPEmbeddingFunction(model_name="tiny-shapes", device="cpu")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """320 pictures from an independent renderer, saved as PNG files."""
    images, labels = alt_dataset(per_class=8, seed=2024)
    folder = tmp_path_factory.mktemp("held_out")
    uris = []
    for i, image in enumerate(images):
        path = folder / f"{i:04d}.png"
        Image.fromarray(image).save(path)
        uris.append(str(path))
    return images, labels, uris


def precision_at_k(result_ids, wanted, label_of):
    hits = [sum(label_of[i] == want for i in ids[:K]) / K for ids, want in zip(result_ids, wanted)]
    return float(np.mean(hits))


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quality_on_held_out_shapes_through_the_collection(tmp_path, clip, held_out):
    images, labels, uris = held_out
    path = str(tmp_path / "db")
    client = retrieval.PersistentClient(path)
    col = client.create_collection("shapes", embedding_function=clip, data_loader=ImageLoader())
    ids = [f"img{i}" for i in range(len(uris))]
    col.add(ids=ids, uris=uris)
    label_of = dict(zip(ids, labels))
    classes = sorted(set(labels))

    texts = [f"a photo of a {c} {s}" for c, s in classes]
    text_p = precision_at_k(col.query(query_texts=texts, n_results=K)["ids"], classes, label_of)
    probe = list(range(0, len(images), 4))  # 80 image probes; the probe itself is excluded below
    by_image = col.query(query_images=[images[i] for i in probe], n_results=K + 1)["ids"]
    by_uri = col.query(query_uris=[uris[i] for i in probe], n_results=K + 1)["ids"]
    strip = lambda rows: [[x for x in row if x != ids[i]][:K] for row, i in zip(rows, probe)]  # noqa: E731
    image_p = precision_at_k(strip(by_image), [labels[i] for i in probe], label_of)
    uri_p = precision_at_k(strip(by_uri), [labels[i] for i in probe], label_of)
    print(f"\nheld-out precision@5: text->image {text_p:.3f}, image->image {image_p:.3f}, uri->image {uri_p:.3f}")
    assert text_p >= 0.9 and image_p >= 0.95 and uri_p >= 0.95
    client.close()

    # A new process rebuilds the embedding function and loader from the stored configuration.
    out = run_python(
        f"""
        import json, retrieval
        col = retrieval.PersistentClient({path!r}).get_collection("shapes")
        texts = {json.dumps(texts)}
        res = col.query(query_texts=texts, n_results={K}, include=["uris", "data"])
        print(json.dumps({{"ids": res["ids"], "shape": list(res["data"][0][0].shape),
                           "ef": type(col.embedding_function).__name__, "loader": type(col.data_loader).__name__}}))
        """
    )
    got = json.loads(out.strip().splitlines()[-1])
    assert precision_at_k(got["ids"], classes, label_of) == pytest.approx(text_p)
    assert got["ef"] == "OpenCLIPEmbeddingFunction" and got["loader"] == "ImageLoader"
    assert len(got["shape"]) == 3 and got["shape"][2] == 3


def test_records_of_each_modality_share_one_space(clip):
    col = retrieval.EphemeralClient().create_collection("mixed", embedding_function=clip, data_loader=ImageLoader())
    red = np.asarray(embedders.shapes.render_shape("red", "circle", size=120, rng=np.random.default_rng(0)))
    blue = np.asarray(embedders.shapes.render_shape("blue", "star", size=120, rng=np.random.default_rng(1)))
    col.add(ids=["red-img", "blue-img"], images=[red, blue])
    col.add(ids=["red-txt", "blue-txt"], documents=["a red circle", "a blue star"])
    got = col.get(include=["documents", "uris", "embeddings"])
    assert got["documents"] == [None, None, "a red circle", "a blue star"]  # pixels are never stored
    assert got["uris"] == [None, None, None, None]
    assert col.query(query_texts=["a blue star"], n_results=2)["ids"][0][0] in {"blue-img", "blue-txt"}
    res = col.query(query_images=[red], n_results=2, where={"$or": [{"k": 1}, {"k": {"$ne": 1}}]})
    assert set(res["ids"][0]) == {"red-img", "red-txt"}


def test_update_switches_modality_and_re_embeds(tmp_path, clip):
    red = embedders.shapes.render_shape("red", "circle", size=100, rng=np.random.default_rng(3))
    green_path = tmp_path / "green.png"
    embedders.shapes.render_shape("green", "triangle", size=100, rng=np.random.default_rng(4)).save(green_path)
    col = retrieval.EphemeralClient().create_collection("switch", embedding_function=clip, data_loader=ImageLoader())
    col.add(ids=["r"], documents=["a red circle"])
    before = col.get(ids=["r"], include=["embeddings"])["embeddings"][0]
    col.update(ids=["r"], uris=[str(green_path)])  # chromadb stores such uris but never re-embeds them
    after = col.get(ids=["r"], include=["embeddings", "documents", "uris", "data"])
    assert after["documents"] == [None] and after["uris"] == [str(green_path)]
    assert after["data"][0].shape == (100, 100, 3)
    assert not np.allclose(before, after["embeddings"][0])
    assert col.query(query_texts=["a green triangle"], n_results=1)["ids"] == [["r"]]
    col.upsert(ids=["r", "new"], images=[np.asarray(red), np.asarray(red)])
    got = col.get(ids=["r", "new"], include=["uris", "documents", "data"])
    assert got["uris"] == [None, None] and got["data"] == [None, None]
    np.testing.assert_allclose(*col.get(ids=["r", "new"], include=["embeddings"])["embeddings"], atol=1e-6)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((40, 50), dtype=np.uint8),
        np.zeros((40, 50, 3), dtype=np.uint8),
        np.zeros((40, 50, 4), dtype=np.uint8),
        np.random.default_rng(0).random((40, 50, 3)),
        np.random.default_rng(0).random((40, 50, 3)).astype(np.float32) * 255,
        Image.new("RGB", (30, 20), "red"),
        Image.new("L", (30, 20)),
    ],
    ids=["gray-u8", "rgb-u8", "rgba-u8", "float01", "float255", "pil-rgb", "pil-l"],
)
def test_accepted_image_inputs(image):
    col = retrieval.EphemeralClient().create_collection("imgs", embedding_function=HashEmbeddingFunction())
    col.add(ids=["x"], images=[image])
    assert col.count() == 1
    assert len(col.query(query_images=[image], n_results=1)["ids"][0]) == 1


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((4, 4, 2), dtype=np.uint8), "shape|channels"),
        (np.zeros((2, 3, 4, 5), dtype=np.uint8), "shape|dimension"),
        (np.array([["a"]]), "dtype"),
        ("not an image", "image"),
    ],
)
def test_rejected_image_inputs_write_nothing(image, message):
    col = retrieval.EphemeralClient().create_collection("imgs", embedding_function=HashEmbeddingFunction())
    with pytest.raises(InvalidArgumentError, match=message):
        col.add(ids=["x"], images=[image])
    assert col.count() == 0


def test_exactly_one_modality_without_embeddings():
    col = retrieval.EphemeralClient().create_collection("one", embedding_function=HashEmbeddingFunction(), data_loader=ImageLoader())
    with pytest.raises(InvalidArgumentError, match="exactly one of documents, images or uris"):
        col.add(ids=["a"], documents=["x"], uris=["memory://x.png"])
    with pytest.raises(InvalidArgumentError, match="exactly one of query_embeddings"):
        col.query(query_texts=["x"], query_uris=["memory://x.png"])
    col.add(ids=["a"], embeddings=[[0.0] * 64], documents=["kept"], uris=["memory://x.png"])  # explicit: stored as given
    assert col.get(ids=["a"], include=["documents", "uris"])["uris"] == ["memory://x.png"]
    assert col.count() == 1


def test_missing_data_loader_is_a_clear_error():
    col = retrieval.EphemeralClient().create_collection("noload", embedding_function=HashEmbeddingFunction())
    with pytest.raises(InvalidArgumentError, match="no data loader"):
        col.add(ids=["a"], uris=["memory://a.png"])
    with pytest.raises(InvalidArgumentError, match="no data loader"):
        col.get(include=["data"])
    assert col.count() == 0


def test_bad_uri_names_the_uri_and_writes_nothing():
    col = retrieval.EphemeralClient().create_collection("baduri", embedding_function=HashEmbeddingFunction(), data_loader=ImageLoader())
    with pytest.raises(InvalidArgumentError, match="memory://does/not/exist.png"):  # a LoadError, mapped
        col.add(ids=["a"], uris=["memory://does/not/exist.png"])
    assert col.count() == 0


def test_stored_embedding_function_conflicts_and_opt_outs(tmp_path):
    client = retrieval.PersistentClient(str(tmp_path / "db"))
    client.create_collection("hashy", embedding_function=HashEmbeddingFunction(dim=32))
    assert client.get_collection("hashy").embedding_function.get_config()["dim"] == 32
    client.get_collection("hashy", embedding_function=HashEmbeddingFunction(dim=32))  # same: fine
    with pytest.raises(ConfigurationConflictError, match="'hash'"):
        client.get_collection("hashy", embedding_function=HashEmbeddingFunction(dim=16))

    class Custom:  # chromadb's legacy protocol: callable, no name/config
        def __call__(self, input):
            return [np.ones(3, dtype=np.float32) for _ in input]

    # chromadb accepts it (stored as {"type": "legacy"}); retrieval says so once, in a warning.
    with pytest.warns(UserWarning, match="cannot be saved with the collection"):
        client.create_collection("custom", embedding_function=Custom())
    assert client.count_collections() == 2
    col = client.create_collection("opted-out", embedding_function=Custom(), persist_embedding_function=False)
    col.add(ids=["a"], documents=["text"])
    assert client.get_collection("opted-out").configuration["embedding_function"] == {"type": "legacy"}
    with pytest.raises(InvalidArgumentError, match="Pass the same function again"):  # nothing stored to rebuild
        client.get_collection("opted-out").query(query_texts=["x"])
    assert client.get_collection("opted-out", embedding_function=Custom()).query(query_texts=["x"])["ids"] == [["a"]]
    client.close()


def test_stored_config_cannot_import_or_trust_remote_code(tmp_path):
    from retrieval.config import CollectionConfig, ComponentSpec

    client = retrieval.PersistentClient(str(tmp_path / "db"))
    for spec, message in [
        (ComponentSpec("os:system", {}), "os:system"),
        (ComponentSpec("sentence_transformer", {"trust_remote_code": True}), "trust_remote_code"),
    ]:
        record, _ = client._backend.engine.create_collection(f"evil-{len(message)}", CollectionConfig(embedding_function=spec), None)
        with pytest.raises(InvalidArgumentError, match=message):
            client.get_collection(record.name)
    client.close()


def test_embedding_function_is_built_once_and_host_options_are_not_persisted(tmp_path, monkeypatch):
    client = retrieval.PersistentClient(str(tmp_path / "db"))
    client.create_collection("clip", embedding_function=OpenCLIPEmbeddingFunction(device="cpu", batch_size=8))
    stored = client.get_collection("clip").configuration["embedding_function"]
    assert stored == {"name": "open_clip", "type": "known", "config": {"model_name": "tiny-shapes"}}
    builds = []
    real_build = embedders.embedding_functions.build
    monkeypatch.setattr(embedders.embedding_functions, "build", lambda *a, **k: builds.append(a) or real_build(*a, **k))
    col = client.get_collection("clip", embedding_function_options={"device": "cpu", "batch_size": 2})
    assert col.embedding_function.batch_size == 2 and col.embedding_function._model is None  # no weights yet
    col.add(ids=["a"], documents=["a red circle"])
    col.query(query_texts=["a red circle"])
    col.add(ids=["b"], documents=["a blue star"])
    client.get_collection("clip", embedding_function_options={"device": "cpu", "batch_size": 2}).count()
    assert len(builds) == 1
    client.close()


def test_default_embedding_function_is_minilm_offline():
    col = retrieval.EphemeralClient().create_collection("defaults")
    assert col.configuration["embedding_function"]["name"] == "default"
    assert col.configuration["hnsw"]["space"] == col.embedding_function.default_space()
    col.add(ids=["cat", "car"], documents=["a small cat sleeps on the sofa", "the car engine needs oil"])
    assert col.query(query_texts=["kitten napping"], n_results=1)["ids"] == [["cat"]]
