"""Shared fixtures: one behavioural suite runs against every client kind."""

from __future__ import annotations

import os

# No model may be downloaded in tests: a missing model must fail fast, not hang on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

import retrieval  # noqa: E402


# Every test that takes ``client`` runs against each kind: embedded (in memory, on disk) and over
# HTTP (an in-process server: fast). The core behavioural files also run against one real
# ``retrieval run`` subprocess shared by the session (each test in its own tenant).
CLIENT_KINDS = ("ephemeral", "persistent", "http")
SERVER_MODULES = {"test_client", "test_records", "test_validation"}


def pytest_generate_tests(metafunc):
    # A module that defines its own ``client`` fixture (e.g. chromadb's client) is not parametrized.
    if "client" in metafunc.fixturenames and not hasattr(metafunc.module, "client"):
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        kinds = CLIENT_KINDS + (("server",) if module in SERVER_MODULES else ())
        metafunc.parametrize("client", kinds, indirect=True)


@pytest.fixture(scope="session")
def running_server(tmp_path_factory):
    """One ``retrieval run`` on 127.0.0.1 for the session, stopped by PID (SIGTERM) at the end."""
    from tests.http_server import RunningServer

    server = RunningServer(tmp_path_factory.mktemp("session-server") / "db")
    yield server
    assert server.stop() == 0, server.log.read_text()


@pytest.fixture
def client(request, tmp_path):
    """An empty client of the test's kind (see ``CLIENT_KINDS``); closed after the test."""
    kind = request.param
    if kind == "http":
        from tests.http_server import in_process_client

        with in_process_client() as c:
            yield c
        return
    if kind == "server":
        import uuid

        server = request.getfixturevalue("running_server")
        tenant = f"t-{uuid.uuid4().hex[:12]}"
        with retrieval.AdminClient(retrieval.Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
            chroma_server_http_port=server.port,
        )) as admin:
            admin.create_tenant(tenant)
            admin.create_database("db0", tenant=tenant)
        c = retrieval.HttpClient(host="127.0.0.1", port=server.port, tenant=tenant, database="db0")
    elif kind == "ephemeral":
        c = retrieval.EphemeralClient()
    else:
        c = retrieval.PersistentClient(path=str(tmp_path / "db"))
    yield c
    c.close()


@pytest.fixture
def client_kind(request) -> str | None:
    """The kind of this test's ``client`` (None when it takes none)."""
    callspec = getattr(request.node, "callspec", None)
    return None if callspec is None else callspec.params.get("client")


@pytest.fixture
def over_http(client_kind) -> bool:
    """Whether this test's ``client`` talks HTTP (where a server-side failure is a bare 500)."""
    return client_kind in ("http", "server")


@pytest.fixture
def in_this_process(client_kind) -> None:
    """Skip for a server in another process: the test patches the engine, or reads the engine's log,
    in this one."""
    if client_kind == "server":
        pytest.skip("inspects the engine in this process; the subprocess server has its own (and its own log)")


@pytest.fixture
def persist_dir(tmp_path):
    return str(tmp_path / "db")


@pytest.fixture
def collection(client):
    """A collection that takes embeddings only (no embedding function)."""
    return client.create_collection("test", embedding_function=None)
