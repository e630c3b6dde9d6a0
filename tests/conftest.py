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
# With CHROMA_PEER=/path/to/chroma (chromadb 1.5.9's executable), those files also run our HttpClient
# against `chroma run`: the kind "chroma".
CHROMA_PEER = os.environ.get("CHROMA_PEER")
# Where chroma's server answers otherwise (README: Client/server, Past one machine), the test is an
# expected failure there: strict, so a change on either side shows up.
CHROMA_DIFFERS = {
    "test_heartbeat_and_version": "get_version() is chroma's version, not ours",
    "test_reset_needs_allow_reset": "chroma's refusal has its own wording ('Reset is disabled by config')",
    "test_create_get_list_delete": "chroma's server does not list collections oldest first",
    "test_modify_name_and_metadata": "renaming onto a taken name: chroma answers 500 with SQLite's message, not 409",
    "test_stale_handle_to_deleted_collection_raises": "chroma's not-found message names the id, not the collection",
    "test_add_existing_id_is_skipped_with_warning": "chroma's server skips an existing id without a warning",
    "test_update_semantics": "chroma's server skips a missing id in update without an error message",
    "test_get_limit_offset_and_order": "chroma returns get(ids=...) in insertion order, not in the order of ids",
    "test_bad_writes_are_rejected_and_write_nothing[chroma-add-kwargs6-stores 3-d vectors; got 2-d]":
        "chroma's dimension error has its own wording",
    "test_bad_writes_are_rejected_and_write_nothing[chroma-upsert-kwargs6-stores 3-d vectors; got 2-d]":
        "chroma's dimension error has its own wording",
    "test_bad_query_inputs": "chroma's dimension error has its own wording",
    "test_error_classes_subclass_builtins": "chroma names no dimension error: InvalidArgumentError, not DimensionMismatchError",
    "test_batch_above_max_batch_size": "chroma's server has its own max_batch_size",
    "test_bad_sparse_configuration_raises_and_writes_nothing": "chroma's server drops our 'sparse' configuration",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if getattr(item, "callspec", None) is None or item.callspec.params.get("client") != "chroma":
            continue
        reason = CHROMA_DIFFERS.get(item.name) or CHROMA_DIFFERS.get(item.originalname)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=f"chroma run: {reason}", strict=True))


def pytest_generate_tests(metafunc):
    # A module that defines its own ``client`` fixture (e.g. chromadb's client) is not parametrized.
    if "client" in metafunc.fixturenames and not hasattr(metafunc.module, "client"):
        module = metafunc.module.__name__.rsplit(".", 1)[-1]
        kinds = CLIENT_KINDS + (("server",) if module in SERVER_MODULES else ())
        kinds += ("chroma",) if CHROMA_PEER and module in SERVER_MODULES else ()
        metafunc.parametrize("client", kinds, indirect=True)


@pytest.fixture(scope="session")
def running_server(tmp_path_factory):
    """One ``retrieval run`` on 127.0.0.1 for the session, stopped by PID (SIGTERM) at the end."""
    from tests.http_server import RunningServer

    server = RunningServer(tmp_path_factory.mktemp("session-server") / "db")
    yield server
    assert server.stop() == 0, server.log.read_text()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """One ``chroma run`` (CHROMA_PEER) on 127.0.0.1 for the session, stopped by PID at the end."""
    from tests.http_server import RunningServer

    server = RunningServer(tmp_path_factory.mktemp("chroma-server") / "db", program=[CHROMA_PEER])
    yield server
    server.stop()


@pytest.fixture
def client(request, tmp_path):
    """An empty client of the test's kind (see ``CLIENT_KINDS``); closed after the test."""
    kind = request.param
    if kind == "http":
        from tests.http_server import in_process_client

        with in_process_client() as c:
            yield c
        return
    if kind in ("server", "chroma"):
        import uuid

        server = request.getfixturevalue("running_server" if kind == "server" else "chroma_server")
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
    return client_kind in ("http", "server", "chroma")


@pytest.fixture
def in_this_process(client_kind) -> None:
    """Skip for a server in another process: the test patches the engine, or reads the engine's log,
    in this one."""
    if client_kind in ("server", "chroma"):
        pytest.skip("inspects the engine in this process; the subprocess server has its own (and its own log)")


@pytest.fixture
def persist_dir(tmp_path):
    return str(tmp_path / "db")


@pytest.fixture
def collection(client):
    """A collection that takes embeddings only (no embedding function)."""
    return client.create_collection("test", embedding_function=None)
