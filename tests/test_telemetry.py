"""OpenTelemetry: off and free by default; when on, a server span per request (continuing the
caller's trace) and spans for the engine's stages, with collection, tenant and record counts."""

from __future__ import annotations

import subprocess
import sys
import timeit

import pytest
from starlette.testclient import TestClient

from retrieval import telemetry
from tests.server_fixtures import ADMIN, bearer, make_world

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


@pytest.fixture()
def spans():
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable(provider)
    yield exporter
    telemetry.disable()


def test_off_by_default_costs_next_to_nothing_and_imports_nothing():
    code = ("import sys, retrieval, retrieval.collection, retrieval.store.engine; "
            "print([m for m in sys.modules if m.startswith('opentelemetry')])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    assert not telemetry.enabled()
    per_call = min(timeit.repeat(lambda: telemetry.span("x", a=1).__enter__(), number=10_000, repeat=3)) / 10_000
    assert per_call < 5e-6  # a dict build and a global read


def test_request_span_and_engine_stage_spans(spans, tmp_path):
    world = make_world()
    try:
        client = TestClient(world.app)
        collection = f"/api/v2/tenants/tenant-a/databases/db-a/collections/{world.ids['alpha']}"
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        headers = {**bearer(ADMIN), "traceparent": parent}
        assert client.post(collection + "/add", headers=headers,
                           json={"ids": ["n1", "n2"], "embeddings": [[1, 1, 0], [0, 1, 1]]}).status_code == 201
        assert client.post(collection + "/query", headers=bearer(ADMIN),
                           json={"query_embeddings": [[1, 0, 0]], "n_results": 2}).status_code == 200
    finally:
        world.backend.close()
    finished = {s.name: s for s in spans.get_finished_spans()}
    add = finished["POST /api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/add"]
    assert add.attributes["retrieval.tenant"] == "tenant-a" and add.attributes["http.response.status_code"] == 201
    assert add.attributes["retrieval.principal"] == "admin"
    assert format(add.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # the caller's trace
    for stage in ("retrieval.validate", "retrieval.commit", "retrieval.index", "retrieval.query"):
        assert stage in finished, (stage, sorted(finished))
    commit = finished["retrieval.commit"]
    assert commit.attributes["collection"] == "alpha" and commit.attributes["records"] == 2
    assert commit.attributes["tenant"] == "tenant-a"
    assert commit.parent is not None and commit.context.trace_id == add.context.trace_id
    assert finished["retrieval.query"].attributes["queries"] == 1


def test_embed_and_checkpoint_spans_in_an_embedded_client(spans, tmp_path):
    import embedders
    import retrieval

    client = retrieval.PersistentClient(str(tmp_path / "db"))
    col = client.create_collection("docs", embedding_function=embedders.build_embedding_function("hash", {"dim": 8}))
    col.add(ids=["a", "b"], documents=["one", "two"])
    client._backend.engine.flush()  # a checkpoint now (close() writes none)
    client.close()
    names = [s.name for s in spans.get_finished_spans()]
    assert "retrieval.embed" in names and "retrieval.checkpoint" in names
    embed = next(s for s in spans.get_finished_spans() if s.name == "retrieval.embed")
    assert embed.attributes["records"] == 2 and embed.attributes["collection"] == "docs"


def test_configure_from_config_and_standard_variables():
    assert telemetry.configure(None, environ={}) is None and not telemetry.enabled()
    provider = telemetry.configure({"endpoint": "http://127.0.0.1:1", "service_name": "svc"}, environ={})
    try:
        assert telemetry.enabled()
        assert provider.resource.attributes["service.name"] == "svc"
    finally:
        telemetry.disable()
        provider.shutdown()
    assert telemetry.wanted(None, environ={"OTEL_TRACES_EXPORTER": "otlp"})
    assert not telemetry.wanted({"endpoint": "http://x:4318"}, environ={"OTEL_SDK_DISABLED": "true"})
    with pytest.raises(ValueError, match="did you mean 'endpoint'"):
        telemetry.wanted({"endpont": "http://x"}, environ={})


def test_client_and_server_spans_form_one_trace(spans):
    from tests.http_server import in_process_client

    with in_process_client() as client:
        col = client.create_collection("traced", embedding_function=None)
        with telemetry.span("app.operation"):
            col.add(ids=["x"], embeddings=[[1.0, 2.0]])
    finished = spans.get_finished_spans()
    outer = next(s for s in finished if s.name == "app.operation")
    server = next(s for s in finished if s.name.endswith("/add") and s.attributes.get("retrieval.verb") == "add")
    assert server.context.trace_id == outer.context.trace_id and server.parent.span_id == outer.context.span_id


def test_retrieval_run_exports_spans_and_writes_a_json_access_log(tmp_path):
    """The standard variables switch tracing on in a real server (console exporter here: OTLP needs a
    collector); the access log is one JSON object per request."""
    import json

    import retrieval
    from tests.http_server import RunningServer

    server = RunningServer(tmp_path / "db", env={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "svc-under-test"})
    try:
        client = retrieval.HttpClient(host="127.0.0.1", port=server.port)
        client.create_collection("traced", embedding_function=None).add(ids=["a"], embeddings=[[1.0, 0.0]])
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "svc-under-test" in log and "retrieval.commit" in log
    assert '"name": "POST /api/v2/tenants/{tenant}/databases/{database}/collections/{collection}/add"' in log
    access = [json.loads(line) for line in log.splitlines() if line.startswith('{"method"')]
    add = next(entry for entry in access if entry["verb"] == "add")
    assert add["status"] == 201 and add["method"] == "POST" and add["ms"] >= 0 and add["tenant"] == "default_tenant"
