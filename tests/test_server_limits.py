"""Hostile input and limits: malformed JSON, wrong types, NaN, unicode, 1,000-level nesting, a 50 MB
body, huge $in lists, ``(a+)+$``, slow bodies, batch and n_results limits; 500s carry no stack
trace or path; config keys, environment and CORS."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from starlette.testclient import TestClient

from retrieval.errors import InvalidArgumentError
from retrieval.server.config import ServerConfig
from retrieval.server.main import check_exposure
from tests.server_fixtures import ADMIN, bearer, make_world

H = {**bearer(ADMIN), "Content-Type": "application/json"}


@pytest.fixture()
def world():
    world = make_world({"max_batch_size": 10, "max_n_results": 50, "request_timeout_s": 2, "max_body_bytes": 16 * 1024 * 1024,
                        "cors_origins": ["https://app.example.com"]})
    yield world
    world.backend.close()


def _col(world, name="alpha"):
    tenant, db = ("tenant-a", "db-a") if name == "alpha" else ("tenant-b", "db-b")
    return f"/api/v2/tenants/{tenant}/databases/{db}/collections/{world.ids[name]}"


@pytest.mark.parametrize("raw", [
    b"{", b"not json", b'{"ids": ["x"], "embeddings": [[NaN, 1, 2]]}', b'{"ids": ["x"], "embeddings": [[Infinity, 1, 2]]}',
    b'{"ids": 5, "embeddings": [[1, 2, 3]]}', b'{"ids": ["x"], "embeddings": "abc"}', b'{"ids": ["x"], "embeddings": [[1, "a", 3]]}',
    b'{"ids": ["x"], "embeddings": [[1e400, 1, 2]]}', b'{"ids": [null], "embeddings": [[1, 2, 3]]}',
    b'{"ids": ["x"], "embeddings": [[1, 2, 3]], "metadatas": [{"k": {"nested": 1}}]}',
    b'{"ids": ["x"], "embeddings": [[1, 2, 3]], "metadatas": "m"}', b'[1, 2, 3]', b'"a string"', b"null",
    b'{"ids": ["\\ud800"], "embeddings": [[1, 2, 3]]}', b"\xff\xfe\x00garbage",
    b'{"ids": ["x"], "embeddings": [[1, 2]]}',  # wrong dimension
], ids=lambda raw: raw[:40].decode("latin-1"))
def test_malformed_bodies_are_400_and_write_nothing(world, raw):
    client = TestClient(world.app)
    before = client.get(_col(world) + "/count", headers=H).json()
    response = client.post(_col(world) + "/add", content=raw, headers=H)
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("InvalidArgumentError", "ChromaError")
    assert "Traceback" not in response.text
    assert client.get(_col(world) + "/count", headers=H).json() == before


@pytest.mark.parametrize("verb,body", [
    ("query", {"query_embeddings": [[1, 0, 0]], "n_results": "ten"}),
    ("query", {"query_embeddings": [[1, 0, 0]], "n_results": -1}),
    ("query", {"query_embeddings": [[1, 0, 0]], "include": "documents"}),
    ("query", {"query_embeddings": [[1, 0, 0]], "where": {"$bogus": 1}}),
    ("get", {"limit": "5"}), ("get", {"where": "year > 3"}), ("get", {"where_document": {"$contains": 5}}),
    ("delete", {}), ("search", {"searches": "all"}), ("search", {"searches": [{"rank": {"$nope": 1}}]}),
])
def test_wrong_types_are_400(world, verb, body):
    response = TestClient(world.app).post(_col(world) + f"/{verb}", json=body, headers=H)
    assert response.status_code == 400, response.text


def test_unicode_ids_documents_and_metadata_round_trip(world):
    client = TestClient(world.app)
    body = {"ids": ["ключ-🔑", "鍵"], "embeddings": [[1, 1, 1], [2, 2, 2]], "documents": ["naïve café ✓", "日本語"],
            "metadatas": [{"ü": "ß"}, {"emoji": "😀"}]}
    assert client.post(_col(world) + "/add", json=body, headers=H).status_code == 201
    got = client.post(_col(world) + "/get", json={"ids": ["ключ-🔑", "鍵"]}, headers=H).json()
    assert got["documents"] == ["naïve café ✓", "日本語"] and got["metadatas"] == [{"ü": "ß"}, {"emoji": "😀"}]


def test_thousand_level_filter_is_refused_not_a_crash(world):
    client = TestClient(world.app)
    for levels in (100, 1000):  # 100: past our depth bound; 1000: past the JSON parser's too
        where = '{"$and": [' * levels + '{"a": 1}' + ', {"b": 1}]}' * levels  # json.dumps would recurse too deep
        for verb in ("get", "query", "delete"):
            extra = ', "query_embeddings": [[1, 0, 0]]' if verb == "query" else ""
            response = client.post(_col(world) + f"/{verb}", content='{"where": ' + where + extra + "}", headers=H)
            message = response.json()["message"]
            assert response.status_code == 400 and ("nested deeper" in message or "depth" in message), response.text
    assert client.get(_col(world) + "/count", headers=H).json() == 3


def test_deeply_nested_vectors_are_refused_not_a_crash(world):
    """Vectors skip the depth walk (it would visit every float on the event loop); the handler's
    numeric-array check refuses any nesting in them."""
    client = TestClient(world.app)
    for levels in (100, 1000):
        nested = "[" * levels + "1" + "]" * levels
        for verb, body in (("add", '{"ids": ["deep"], "embeddings": %s}'), ("query", '{"query_embeddings": %s}')):
            response = client.post(_col(world) + f"/{verb}", content=body % nested, headers=H)
            assert response.status_code == 400, response.text
    assert client.get(_col(world) + "/count", headers=H).json() == 3


def test_huge_in_list_is_bounded(world):
    response = TestClient(world.app).post(_col(world) + "/get", json={"where": {"k": {"$in": list(range(200_000))}}}, headers=H)
    assert response.status_code == 400 and "more than 100000 values" in response.json()["message"]


def test_pathological_regex_runs_in_linear_time(world):
    client = TestClient(world.app)
    doc = "a" * 50_000 + "!"
    assert client.post(_col(world) + "/add", json={"ids": ["re"], "embeddings": [[1, 2, 3]], "documents": [doc]},
                       headers=H).status_code == 201
    started = time.perf_counter()
    response = client.post(_col(world) + "/get", json={"where_document": {"$regex": "(a+)+$"}}, headers=H)
    assert response.status_code == 200 and response.json()["ids"] == []
    assert time.perf_counter() - started < 5


def test_fifty_megabyte_body_gets_413_fast_without_being_read(world):
    client = TestClient(world.app)
    started = time.perf_counter()
    response = client.post(_col(world) + "/add", content=b"x" * (50 * 1024 * 1024), headers=H)
    assert response.status_code == 413 and "max_body_bytes" in response.json()["message"]
    assert time.perf_counter() - started < 5


def test_chunked_body_over_the_limit_is_cut_off_as_it_arrives():
    world = make_world({"max_body_bytes": 64 * 1024})
    chunks_read = []

    async def scenario():
        async def receive():  # a chunked body (no Content-Length) of 64 MB if all of it were read
            chunks_read.append(1)
            return {"type": "http.request", "body": b"x" * 65536, "more_body": len(chunks_read) < 1000}

        sent = []

        async def send(message):
            sent.append(message)

        path = _col(world) + "/add"
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {ADMIN}".encode()), (b"content-type", b"application/json")],
                 "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": ""}
        await asyncio.wait_for(world.app(scope, receive, send), 10)
        return sent

    try:
        sent = asyncio.run(scenario())
        assert sent[0]["status"] == 413
        assert len(chunks_read) <= 2  # refused the moment the count passed the limit
    finally:
        world.backend.close()


def test_slow_body_gets_408_and_pins_no_worker(world):
    async def scenario():
        async def receive():
            await asyncio.sleep(0.2)
            return {"type": "http.request", "body": b"{", "more_body": True}  # never finishes

        sent = []

        async def send(message):
            sent.append(message)

        path = _col(world) + "/add"
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {ADMIN}".encode()), (b"content-type", b"application/json")],
                 "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": ""}
        await asyncio.wait_for(world.app(scope, receive, send), 10)
        return sent

    started = time.perf_counter()
    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 408 and time.perf_counter() - started < 5


def test_batch_and_n_results_limits_and_preflight(world):
    client = TestClient(world.app)
    assert client.get("/api/v2/pre-flight-checks", headers=H).json()["max_batch_size"] == 10
    eleven = {"ids": [f"x{i}" for i in range(11)], "embeddings": [[1, 2, 3]] * 11}
    response = client.post(_col(world) + "/add", json=eleven, headers=H)
    assert response.status_code == 400 and "max_batch_size 10" in response.json()["message"]
    response = client.post(_col(world) + "/query", json={"query_embeddings": [[1, 0, 0]], "n_results": 51}, headers=H)
    assert response.status_code == 400 and "max_n_results 50" in response.json()["message"]
    assert client.get(_col(world) + "/count", headers=H).json() == 3


def test_internal_errors_are_500_without_stack_trace_or_path(world, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in /srv/secret/path/engine.py line 12")

    monkeypatch.setattr(world.backend, "count", broken)
    response = TestClient(world.app, raise_server_exceptions=False).get(_col(world) + "/count", headers=H)
    assert response.status_code == 500
    assert response.json()["error"] == "InternalError"
    assert "secret" not in response.text and "Traceback" not in response.text and ".py" not in response.text


def test_cors_allows_only_configured_origins(world):
    client = TestClient(world.app)
    ok = client.options(_col(world) + "/count", headers={"Origin": "https://app.example.com",
                                                          "Access-Control-Request-Method": "GET"})
    assert ok.headers.get("access-control-allow-origin") == "https://app.example.com"
    bad = client.get("/api/v2/heartbeat", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_metrics_count_requests_by_verb_and_status(world):
    client = TestClient(world.app)
    client.get(_col(world) + "/count", headers=H)
    client.get(_col(world) + "/count")
    text = client.get("/metrics", headers=H).text
    assert 'retrieval_requests_total{verb="count",status="200"} 1' in text
    assert 'retrieval_requests_total{verb="count",status="401"} 1' in text
    assert 'retrieval_request_duration_seconds_count{verb="count"} 2' in text


def test_config_keys_environment_and_exposure(tmp_path, monkeypatch):
    with pytest.raises(InvalidArgumentError, match="did you mean 'max_n_results'"):
        ServerConfig.from_dict({"max_nresults": 5}, environ={})
    with pytest.raises(InvalidArgumentError, match="max_body_bytes must be a positive integer"):
        ServerConfig.from_dict({"max_body_bytes": "big"}, environ={})
    with pytest.raises(InvalidArgumentError, match="log_level"):
        ServerConfig.from_dict({"log_level": "loud"}, environ={})
    env = {"RETRIEVAL_PORT": "9100", "RETRIEVAL_MAX_BATCH_SIZE": "7", "RETRIEVAL_AUTH_TOKEN": "env-token-123",
           "RETRIEVAL_CORS_ORIGINS": "https://a.example, https://b.example", "RETRIEVAL_REQUEST_TIMEOUT_S": "2.5"}
    config = ServerConfig.from_dict({"port": 9000, "max_batch_size": 100}, environ=env, overrides={"port": 9200})
    assert (config.port, config.limits.max_batch_size) == (9200, 7)  # flags > environment > file
    assert config.cors_origins == ("https://a.example", "https://b.example") and config.limits.request_timeout_s == 2.5
    path = tmp_path / "server.yaml"
    path.write_text("auth:\n  tokens:\n    - {name: ci, token_env: CI_TOKEN, actions: [read]}\nrequest_timeout_s: 1.5\n")
    monkeypatch.setenv("CI_TOKEN", "ci-token-value")
    config = ServerConfig.from_file(path)
    assert config.limits.request_timeout_s == 1.5 and config.sections["auth"]["tokens"][0]["token_env"] == "CI_TOKEN"
    monkeypatch.delenv("CI_TOKEN")
    with pytest.raises(InvalidArgumentError, match="'CI_TOKEN'"):
        ServerConfig.from_file(path)
    # Beyond loopback, auth or an explicit flag.
    with pytest.raises(InvalidArgumentError, match="--allow-unauthenticated"):
        check_exposure(ServerConfig(host="0.0.0.0"))
    check_exposure(ServerConfig(host="0.0.0.0"), allow_unauthenticated=True)
    check_exposure(ServerConfig(host="::1"))
    check_exposure(ServerConfig(host="0.0.0.0", sections={"auth": {"tokens": [{"token": "t" * 12, "actions": ["read"]}]}}))


def test_a_read_that_outlives_the_timeout_answers_503_at_the_deadline(monkeypatch):
    world = make_world({"request_timeout_s": 0.5})
    try:
        real = world.backend.count

        def slow(record):
            time.sleep(2)
            return real(record)

        monkeypatch.setattr(world.backend, "count", slow)
        started = time.perf_counter()
        response = TestClient(world.app).get(_col(world) + "/count", headers=H)
        assert response.status_code == 503 and "request_timeout_s" in response.json()["message"]
        assert time.perf_counter() - started < 1.8  # answered at the deadline, not when the thread finished
    finally:
        time.sleep(2)  # let the abandoned read finish before the engine closes
        world.backend.close()
