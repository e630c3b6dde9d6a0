"""The web page's JSON API and thumbnail endpoint, in process (no sockets, no browser).

The thumbnail endpoint serves a record's *stored* URI, and stored URIs are chosen by whoever may
write, so the security tests store hostile URIs and check that every one is refused.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from PIL import Image  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import retrieval  # noqa: E402
from embedders import HashEmbeddingFunction  # noqa: E402
from embedders.assets import gallery_dir  # noqa: E402
from retrieval.errors import InvalidArgumentError, NotAllowedError  # noqa: E402
from retrieval.server.thumbnails import resolve_local_image  # noqa: E402
from retrieval.server.ui_config import UiConfig  # noqa: E402
from retrieval.server.ui_routes import ui_routes  # noqa: E402
from retrieval.store.backend import open_embedded_backend  # noqa: E402


@pytest.fixture
def photos(tmp_path):
    """A photo root with two images, a secret outside it, and a symlink inside pointing at the secret."""
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("red_circle.png", "blue_star.png"):
        shutil.copy(Path(gallery_dir()) / name, root / name)
    secret = tmp_path / "secret.png"
    shutil.copy(Path(gallery_dir()) / "green_square.png", secret)
    (root / "escape.png").symlink_to(secret)
    (root / "sub").mkdir()
    return root


@pytest.fixture
def backend():
    b = open_embedded_backend(None)
    yield b
    b.close()


def _app(backend, **config) -> TestClient:
    return TestClient(Starlette(routes=ui_routes(backend, UiConfig(**config))))


def _hash_collection(backend, name="notes", **kw):
    client = retrieval.Client(backend=backend, **kw)
    return client.create_collection(name, embedding_function=HashEmbeddingFunction(dim=16))


# ------------------------------------------------------------------ thumbnails: the gate itself


def test_resolve_accepts_paths_under_a_root(photos):
    roots = [photos.resolve()]
    assert resolve_local_image(str(photos / "red_circle.png"), roots) == (photos / "red_circle.png").resolve()
    assert resolve_local_image("file://" + str(photos / "blue_star.png"), roots).name == "blue_star.png"


@pytest.mark.parametrize(
    "uri, why",
    [
        ("{root}/../secret.png", "'..' segments"),
        ("{root}/sub/../red_circle.png", "'..' segments"),  # lands inside the root, still refused
        ("{tmp}/secret.png", "outside the allowed folders"),
        ("/etc/passwd", "outside the allowed folders"),
        ("{root}/escape.png", "outside the allowed folders"),  # a symlink out of the root
        ("file://{tmp}/secret.png", "outside the allowed folders"),
        ("file://evil.example/{root}/red_circle.png", "must name a local path"),
        ("http://127.0.0.1/{root}/red_circle.png", "not 'http' URIs"),
        ("https://example.com/x.png", "not 'https' URIs"),
        ("s3://bucket/x.png", "not 's3' URIs"),
        ("memory://x.png", "not 'memory' URIs"),
    ],
)
def test_resolve_refuses_everything_else(photos, uri, why):
    uri = uri.format(root=photos, tmp=photos.parent)
    with pytest.raises(NotAllowedError, match=why):
        resolve_local_image(uri, [photos.resolve()])


def test_resolve_without_roots_refuses_and_nul_is_invalid(photos):
    with pytest.raises(NotAllowedError, match="no ui.thumbnail_roots"):
        resolve_local_image(str(photos / "red_circle.png"), [])
    with pytest.raises(InvalidArgumentError, match="NUL"):
        resolve_local_image(str(photos) + "/a\x00.png", [photos.resolve()])


# ----------------------------------------------------------- thumbnails: through the endpoint


def test_thumbnail_serves_only_stored_uris_under_roots(backend, photos):
    client = retrieval.Client(backend=backend)
    col = client.create_collection("pics", embedding_function=None)
    hostile = {
        "dotdot": f"{photos}/../secret.png",
        "absolute": str(photos.parent / "secret.png"),
        "passwd": "/etc/passwd",
        "symlink": str(photos / "escape.png"),
        "file": f"file://{photos.parent}/secret.png",
        "ssrf": "http://127.0.0.1:9/admin.png",
    }
    ids = ["ok"] + list(hostile)
    col.add(ids=ids, embeddings=[[float(i), 1.0] for i in range(len(ids))], uris=[str(photos / "red_circle.png"), *hostile.values()])
    other = client.create_collection("other", embedding_function=None)
    other.add(ids=["b"], embeddings=[[1.0, 0.0]], uris=[str(photos / "blue_star.png")])
    http = _app(backend, thumbnail_roots=(str(photos),))

    ok = http.get("/ui/api/collections/pics/thumbnail", params={"id": "ok"})
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/webp"
    assert "max-age" in ok.headers["cache-control"] and ok.headers["etag"] and ok.headers["last-modified"]
    img = Image.open(io.BytesIO(ok.content))
    assert max(img.size) <= 256 and img.getpixel((img.width // 2, img.height // 2))[0] > 150  # a red disc
    again = http.get("/ui/api/collections/pics/thumbnail", params={"id": "ok"}, headers={"If-None-Match": ok.headers["etag"]})
    assert again.status_code == 304 and not again.content

    for record_id in hostile:
        r = http.get("/ui/api/collections/pics/thumbnail", params={"id": record_id})
        assert r.status_code == 403, (record_id, r.status_code, r.text)
        assert r.json()["error"] == "NotAllowedError" and "refusing URI" in r.json()["message"]
        assert r.headers["content-type"] == "application/json"
    # A record of another collection is not reachable through this one; an unknown id is a 404.
    assert http.get("/ui/api/collections/pics/thumbnail", params={"id": "b"}).status_code == 404
    assert http.get("/ui/api/collections/other/thumbnail", params={"id": "b"}).status_code == 200
    # Paths are never accepted from the request, only ids.
    assert http.get("/ui/api/collections/pics/thumbnail", params={"uri": "/etc/passwd"}).status_code == 400
    # No roots configured: nothing is read.
    assert _app(backend).get("/ui/api/collections/pics/thumbnail", params={"id": "ok"}).status_code == 403


# -------------------------------------------------------------------------- listing and search


def test_collections_show_count_dimension_and_embedding_function(backend):
    col = _hash_collection(backend)
    col.add(ids=["a", "b"], documents=["alpha apples", "beta bananas"], metadatas=[{"k": 1}, {"k": 2, "tag": "x"}])
    http = _app(backend)
    page = http.get("/")
    assert page.status_code == 200 and "<title>retrieval" in page.text and page.headers["etag"]
    assert http.get("/ui/static/app.js").headers["content-type"].startswith("text/javascript")
    assert http.get("/ui/static/nope.js").status_code == 404
    [summary] = http.get("/ui/api/collections").json()
    assert (summary["name"], summary["count"], summary["dimension"]) == ("notes", 2, 16)
    assert summary["embedding_function"] == {"name": "hash", "config": HashEmbeddingFunction(dim=16).get_config()}
    assert summary["can_embed"] is False and "embed_functions" in summary["embed_hint"]
    keys = {k["key"]: k for k in http.get("/ui/api/collections/notes").json()["metadata_keys"]}
    assert keys["k"]["type"] == "number" and keys["k"]["values"] == [1, 2] and keys["tag"]["values"] == ["x"]
    info = http.get("/ui/api/info").json()
    assert info["embedding"]["enabled"] is False and "embed_functions" in info["embedding"]["hint"]


def test_text_search_needs_the_operator_to_allow_the_function(backend):
    col = _hash_collection(backend)
    col.add(ids=["a", "b", "c"], documents=["alpha apples", "beta bananas", "gamma grapes"])
    off = _app(backend).post("/ui/api/collections/notes/search", json={"text": "beta bananas"})
    assert off.status_code == 403 and "Server-side embedding is off" in off.json()["message"]
    other = _app(backend, embed_functions=("open_clip",)).post("/ui/api/collections/notes/search", json={"text": "x"})
    assert other.status_code == 403 and "'hash', which the server may not run" in other.json()["message"]

    http = _app(backend, embed_functions=("hash",))
    r = http.post("/ui/api/collections/notes/search", json={"text": "beta bananas", "limit": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "text" and body["items"][0]["id"] == "b" and body["items"][0]["distance"] == pytest.approx(0, abs=1e-5)
    assert body["items"][0]["document"] == "beta bananas" and body["has_more"] is True
    more = http.post("/ui/api/collections/notes/search", json={"text": "beta bananas", "offset": 2, "limit": 2}).json()
    assert len(more["items"]) == 1 and more["has_more"] is False
    assert {i["id"] for i in body["items"] + more["items"]} == {"a", "b", "c"}


def test_browse_filter_similar_and_paging(backend):
    col = _hash_collection(backend)
    col.add(ids=[f"r{i}" for i in range(30)], documents=[f"doc {i}" for i in range(30)], metadatas=[{"even": i % 2 == 0, "n": i} for i in range(30)])
    http = _app(backend)
    first = http.post("/ui/api/collections/notes/search", json={"limit": 24}).json()
    assert first["mode"] == "browse" and len(first["items"]) == 24 and first["has_more"] and first["items"][0]["distance"] is None
    rest = http.post("/ui/api/collections/notes/search", json={"offset": 24, "limit": 24}).json()
    assert len(rest["items"]) == 6 and not rest["has_more"]
    narrowed = http.post("/ui/api/collections/notes/search", json={"where": {"even": {"$eq": True}}}).json()
    assert len(narrowed["items"]) == 15 and all(i["metadata"]["even"] for i in narrowed["items"])
    # "Similar" needs no model: it queries with the record's stored embedding.
    similar = http.post("/ui/api/collections/notes/search", json={"like_id": "r7", "where": {"n": {"$lt": 10}}}).json()
    assert similar["mode"] == "similar" and similar["items"][0]["id"] == "r7" and len(similar["items"]) == 10


@pytest.mark.parametrize(
    "body, match",
    [
        ({"text": "a", "uri": "b"}, "one of text, image, uri or like_id"),
        ({"limit": 0}, r"'limit' must be an integer in \[1, 200\]"),
        ({"offset": -1}, "'offset'"),
        ({"where": "color=red"}, "'where' must be a JSON object"),
        ({"where": {"color": {"$near": 1}}}, r"\$near"),
        ({"image": "not base64!"}, "must be base64"),
        ({"colour": "red"}, r"unknown search field\(s\) \['colour'\]"),
    ],
)
def test_bad_searches_are_clear_400s(backend, body, match):
    _hash_collection(backend)
    r = _app(backend, embed_functions=("hash",)).post("/ui/api/collections/notes/search", json=body)
    assert r.status_code == 400, r.text
    assert re.search(match, r.json()["message"]), r.json()


def test_missing_collection_and_bad_body(backend):
    http = _app(backend)
    assert http.get("/ui/api/collections/nope").status_code == 404
    r = http.post("/ui/api/collections/nope/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["message"]


def test_tenants_and_databases_are_query_parameters(backend):
    admin = retrieval.AdminClient(backend=backend)
    admin.create_tenant("acme")
    admin.create_database("docs", tenant="acme")
    _hash_collection(backend, name="acme-notes", tenant="acme", database="docs")
    http = _app(backend)
    assert http.get("/ui/api/collections").json() == []
    ns = {"tenant": "acme", "database": "docs"}
    assert [c["name"] for c in http.get("/ui/api/collections", params=ns).json()] == ["acme-notes"]
    assert http.get("/ui/api/databases", params={"tenant": "acme"}).json() == ["docs"]
    assert http.get("/ui/api/collections", params={"tenant": "nobody"}).status_code == 404


def test_guard_runs_before_every_api_call_but_not_the_page(backend):
    seen = []

    def guard(request):
        seen.append(request.url.path)
        if request.headers.get("authorization") != "Bearer s3cret":
            raise NotAllowedError("missing or wrong token")

    http = TestClient(Starlette(routes=ui_routes(backend, UiConfig(), guard=guard)))
    assert http.get("/").status_code == 200 and http.get("/ui/static/app.css").status_code == 200
    assert http.get("/ui/api/collections").status_code == 403
    assert http.post("/ui/api/collections/x/search", content=b"garbage").status_code == 403  # before the body
    assert http.get("/ui/api/collections", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert seen == ["/ui/api/collections", "/ui/api/collections/x/search", "/ui/api/collections"]


def test_disabled_page_has_no_routes_and_config_errors_are_clear(backend, tmp_path):
    assert ui_routes(backend, UiConfig(enabled=False)) == []
    with pytest.raises(InvalidArgumentError, match="is not a folder"):
        UiConfig(thumbnail_roots=(str(tmp_path / "missing"),))
    with pytest.raises(InvalidArgumentError, match=r"unknown key\(s\) \['embed_function'\]"):
        UiConfig.from_dict({"embed_function": ["open_clip"]})
    with pytest.raises(InvalidArgumentError, match="list of embedding function names"):
        UiConfig.from_dict({"embed_functions": "open_clip"})
    assert UiConfig.from_dict({"thumbnail_roots": [str(tmp_path)]}).thumbnail_roots == (tmp_path.resolve(),)


# ------------------------------------------------------------------ images with the real model


@pytest.fixture
def gallery(backend):
    from embedders import OpenCLIPEmbeddingFunction
    from loaders import ImageLoader

    client = retrieval.Client(backend=backend)
    col = client.create_collection(
        "gallery", embedding_function=OpenCLIPEmbeddingFunction(model_name="tiny-shapes", device="cpu"),
        data_loader=ImageLoader(), configuration={"hnsw": {"space": "cosine"}},
    )
    files = sorted(Path(gallery_dir()).glob("*.png"))
    col.add(ids=[f.name for f in files], uris=[str(f) for f in files], metadatas=[{"color": f.stem.split("_")[0], "shape": f.stem.split("_")[1]} for f in files])
    return col


def test_text_image_and_uri_queries_use_the_stored_function_once(backend, gallery):
    http = _app(backend, embed_functions=("open_clip",), thumbnail_roots=(gallery_dir(),))
    url = "/ui/api/collections/gallery/search"
    text = http.post(url, json={"text": "a red circle", "limit": 5}).json()
    assert text["items"][0]["id"] == "red_circle.png" and text["items"][0]["thumbnail"] is True
    raw = (Path(gallery_dir()) / "blue_star.png").read_bytes()
    image = http.post(url, json={"image": "data:image/png;base64," + base64.b64encode(raw).decode(), "limit": 3}).json()
    assert image["mode"] == "image" and image["items"][0]["id"] == "blue_star.png"
    uri = http.post(url, json={"uri": os.path.join(gallery_dir(), "green_cross.png"), "limit": 1}).json()
    assert uri["items"][0]["id"] == "green_cross.png"
    refused = http.post(url, json={"uri": "http://127.0.0.1/green_cross.png"})
    assert refused.status_code == 403
    red = http.post(url, json={"text": "a red circle", "where": {"color": {"$eq": "red"}}, "limit": 24}).json()
    assert {i["metadata"]["color"] for i in red["items"]} == {"red"} and len(red["items"]) == 5
    summary = http.get("/ui/api/collections/gallery").json()
    assert summary["can_embed"] and summary["embedding_function"]["name"] == "open_clip" and summary["dimension"] == 64
    assert summary["data_loader"] == "image"


def test_retrieval_run_app_mounts_the_page_unless_switched_off(backend, tmp_path):
    from retrieval.server.app import create_app
    from retrieval.server.config import ServerConfig

    on = TestClient(create_app(backend, ServerConfig.from_dict({"ui": {"embed_functions": ["open_clip"]}})))
    assert on.get("/").status_code == 200 and on.get("/ui/api/info").json()["embedding"]["functions"] == ["open_clip"]
    assert on.get("/api/v2/heartbeat").status_code == 200
    off = TestClient(create_app(backend, ServerConfig.from_dict({"ui": {"enabled": False}})))
    assert off.get("/").status_code == 404 and off.get("/ui/api/info").status_code == 404
    # A bad 'ui' section is refused while the config is read, before any persist path is opened.
    with pytest.raises(InvalidArgumentError, match="ui.thumbnail_roots entry"):
        ServerConfig.from_dict({"path": str(tmp_path / "db"), "ui": {"thumbnail_roots": [str(tmp_path / "nope")]}})
    assert not (tmp_path / "db").exists()


def test_scrolling_a_query_stops_at_the_result_cap(backend, monkeypatch):
    import retrieval.server.ui_service as ui_service

    monkeypatch.setattr(ui_service, "MAX_RESULTS", 6)
    col = _hash_collection(backend)
    col.add(ids=[f"r{i}" for i in range(10)], documents=[f"doc {i}" for i in range(10)])
    http = _app(backend, embed_functions=("hash",))
    url = "/ui/api/collections/notes/search"
    pages = [http.post(url, json={"text": "doc 1", "offset": o, "limit": 4}).json() for o in (0, 4)]
    assert [len(p["items"]) for p in pages] == [4, 2] and [p["has_more"] for p in pages] == [True, False]
    assert len({i["id"] for p in pages for i in p["items"]}) == 6
    assert http.post(url, json={"text": "doc 1", "offset": 7}).status_code == 400  # past the cap


def test_a_model_is_built_once_and_a_repeated_query_is_not_embedded_again(backend, monkeypatch):
    from retrieval import embedding

    built, calls = [], []
    real_build = embedding.build

    def counting_build(spec, kind, options=None):
        ef = real_build(spec, kind, options)
        built.append(spec.name)

        def embed(texts):
            calls.append(list(texts))
            return ef(texts)

        return embed

    monkeypatch.setattr(embedding, "build", counting_build)
    for name in ("notes", "more-notes"):  # two collections, the same function and config
        _hash_collection(backend, name=name).add(ids=["a", "b"], documents=["alpha", "beta"])
    http = _app(backend, embed_functions=("hash",))
    for name, text in (("notes", "alpha"), ("more-notes", "beta"), ("notes", "alpha"), ("notes", "alpha")):
        assert http.post(f"/ui/api/collections/{name}/search", json={"text": text}).status_code == 200
    assert built == ["hash"] and calls == [["alpha"], ["beta"]]
