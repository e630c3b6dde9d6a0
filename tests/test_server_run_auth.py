"""Auth against a real ``retrieval run``: chromadb-client 1.5.9 configured the chromadb way (token
in Authorization: Bearer or X-Chroma-Token, basic auth), retrieval's clients with the same settings
or plain ``headers=``; tokens from environment variables; no binding beyond loopback without auth;
and a collection config naming an unknown or remote-code embedding function loads nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import retrieval
from retrieval import NotAllowedError, Settings
from retrieval.errors import AuthenticationError
from tests.http_server import RunningServer, free_port

ADMIN, READER = "admin-secret-token", "reader-secret-token"
CONFIG = """
auth:
  tokens:
    - {name: admin, token_env: TEST_ADMIN_TOKEN, tenant: "*", databases: ["*"], actions: [read, write, admin]}
    - {name: reader-a, token_env: TEST_READER_TOKEN, tenant: tenant-a, databases: [db-a], actions: [read]}
  users:
    - {username: alice, password_env: TEST_ALICE_PASSWORD, tenant: tenant-a, databases: ["*"], actions: [read, write]}
"""
TOKEN_PROVIDER = "chromadb.auth.token_authn.TokenAuthClientProvider"
BASIC_PROVIDER = "chromadb.auth.basic_authn.BasicAuthClientProvider"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    config = root / "server.yaml"
    config.write_text(CONFIG)  # the file holds no secret: the tokens come from the environment
    env = {"TEST_ADMIN_TOKEN": ADMIN, "TEST_READER_TOKEN": READER, "TEST_ALICE_PASSWORD": "alice-password"}
    server = RunningServer(root / "db", env=env, config=config)
    admin = retrieval.AdminClient(Settings(chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host="127.0.0.1",
                                           chroma_server_http_port=server.port, chroma_client_auth_provider=TOKEN_PROVIDER,
                                           chroma_client_auth_credentials=ADMIN))
    admin.create_tenant("tenant-a")
    admin.create_database("db-a", tenant="tenant-a")
    client = retrieval.HttpClient(host="127.0.0.1", port=server.port, headers={"Authorization": f"Bearer {ADMIN}"},
                                  tenant="tenant-a", database="db-a")
    col = client.create_collection("docs", embedding_function=None)
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["alpha", "beta"])
    yield server
    assert server.stop() == 0


def _chroma(server, credentials, header=None, provider=TOKEN_PROVIDER, **kwargs):
    chromadb = pytest.importorskip("chromadb")
    settings = chromadb.config.Settings(chroma_client_auth_provider=provider, chroma_client_auth_credentials=credentials,
                                        **({"chroma_auth_token_transport_header": header} if header else {}))
    return chromadb.HttpClient(host="127.0.0.1", port=server.port, settings=settings, **kwargs)


@pytest.mark.parametrize("header", [None, "Authorization", "X-Chroma-Token"])
def test_chromadb_client_token_auth_works_unchanged(server, header):
    client = _chroma(server, ADMIN, header, tenant="tenant-a", database="db-a")
    col = client.get_collection("docs")
    assert col.count() == 2
    got = col.query(query_embeddings=[[1.0, 0.1]], n_results=1)
    assert got["ids"] == [["a"]]


def test_chromadb_client_read_only_token_reads_and_cannot_write(server):
    from chromadb import errors

    client = _chroma(server, READER, "X-Chroma-Token", tenant="tenant-a", database="db-a")
    assert client.get_user_identity().tenant == "tenant-a"
    col = client.get_collection("docs")
    assert col.get(ids=["a"])["documents"] == ["alpha"]
    with pytest.raises(errors.ChromaError):
        col.add(ids=["c"], embeddings=[[0.5, 0.5]])
    with pytest.raises(errors.ChromaError):
        client.create_collection("other")
    assert col.count() == 2


def test_chromadb_client_picks_the_tenant_and_database_its_token_is_scoped_to(server):
    chromadb = pytest.importorskip("chromadb")
    settings = chromadb.config.Settings(chroma_client_auth_provider=TOKEN_PROVIDER, chroma_client_auth_credentials=READER,
                                        chroma_overwrite_singleton_tenant_database_access_from_auth=True)
    client = chromadb.HttpClient(host="127.0.0.1", port=server.port, settings=settings)
    assert (client.tenant, client.database) == ("tenant-a", "db-a")  # from /auth/identity
    assert client.get_collection("docs").count() == 2


def test_chromadb_client_without_or_with_wrong_credentials_is_refused(server):
    chromadb = pytest.importorskip("chromadb")
    from chromadb import errors

    with pytest.raises(errors.ChromaError):  # 401 on the client's first call (identity)
        chromadb.HttpClient(host="127.0.0.1", port=server.port, tenant="tenant-a", database="db-a")
    with pytest.raises(errors.ChromaError):
        _chroma(server, "not-the-token", tenant="tenant-a", database="db-a")


def test_basic_auth_chromadb_and_retrieval_clients(server):
    client = retrieval.HttpClient(
        host="127.0.0.1", port=server.port, tenant="tenant-a", database="db-a",
        settings=Settings(chroma_client_auth_provider=BASIC_PROVIDER, chroma_client_auth_credentials="alice:alice-password"),
    )
    assert client.get_collection("docs").count() == 2
    with pytest.raises(AuthenticationError):
        retrieval.HttpClient(host="127.0.0.1", port=server.port, tenant="tenant-a", database="db-a", settings=Settings(
            chroma_client_auth_provider=BASIC_PROVIDER, chroma_client_auth_credentials="alice:wrong")).list_collections()
    pytest.importorskip("bcrypt")  # chromadb's basic provider module imports it
    chromadb_client = _chroma(server, "alice:alice-password", provider=BASIC_PROVIDER, tenant="tenant-a", database="db-a")
    assert chromadb_client.get_collection("docs").count() == 2


def test_retrieval_clients_take_the_same_settings_and_plain_headers(server):
    by_settings = retrieval.HttpClient(
        host="127.0.0.1", port=server.port, tenant="tenant-a", database="db-a",
        settings=Settings(chroma_client_auth_provider=TOKEN_PROVIDER, chroma_client_auth_credentials=READER,
                          chroma_auth_token_transport_header="X-Chroma-Token"),
    )
    assert by_settings.get_collection("docs").count() == 2
    by_headers = retrieval.HttpClient(host="127.0.0.1", port=server.port, tenant="tenant-a", database="db-a",
                                      headers={"X-Chroma-Token": READER})
    col = by_headers.get_collection("docs")
    with pytest.raises(NotAllowedError, match="may not write"):
        col.add(ids=["z"], embeddings=[[1.0, 1.0]])
    with pytest.raises(AuthenticationError):
        retrieval.HttpClient(host="127.0.0.1", port=server.port, headers={"X-Chroma-Token": "nope-nope-nope"}).list_collections()
    assert col.count() == 2


def test_run_refuses_to_bind_beyond_loopback_without_auth(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: even if the refusal broke, nothing would
    # listen beyond loopback (the bind itself would fail, with another message than the one asserted).
    result = subprocess.run(
        [sys.executable, "-m", "retrieval.cli", "run", "--path", str(tmp_path / "db"), "--host", "192.0.2.1",
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "--allow-unauthenticated" in result.stderr
    assert not (tmp_path / "db").exists()  # refused before the path was opened


def test_collection_configs_naming_unknown_or_remote_code_functions_load_nothing():
    """CVE-2026-45829: chromadb loaded a model named by a collection config before auth. Here the
    server stores configurations and never builds them, authenticated or not."""
    script = textwrap.dedent('''
        import json, sys
        from starlette.testclient import TestClient
        from retrieval.server.app import create_app
        from retrieval.server.config import ServerConfig
        from retrieval.store.backend import open_embedded_backend
        config = ServerConfig.from_dict({"auth": {"tokens": [{"name": "a", "token": "admin-token-0001",
                                                                "actions": ["read", "write", "admin"]}]}}, environ={})
        client = TestClient(create_app(open_embedded_backend(None), config))
        H = {"Authorization": "Bearer admin-token-0001"}
        url = "/api/v2/tenants/default_tenant/databases/default_database/collections"
        functions = [
            {"name": "sentence_transformer", "type": "known", "config": {"model_name": "evil/m", "trust_remote_code": True}},
            {"name": "no_such_function", "type": "known", "config": {"module": "os", "cmd": "touch /tmp/pwned"}},
            {"name": "open_clip", "type": "known", "config": {"model_name": "ViT-B-32", "checkpoint": "laion2b_s34b_b79k"}},
            {"name": "evil_module.EvilFunction", "type": "known", "config": {}},
        ]
        status = []
        for i, ef in enumerate(functions):
            body = {"name": f"col{i}x", "configuration": {"embedding_function": ef}}
            status.append(client.post(url, json=body).status_code)  # no credentials
            status.append(client.post(url, json=body, headers=H).status_code)
            status.append(client.get(f"{url}/col{i}x", headers=H).status_code)
        heavy = ("torch", "transformers", "sentence_transformers", "open_clip", "evil_module",
                 "embedders.sentence_transformer", "embedders.open_clip")
        print(json.dumps({"status": status, "loaded": sorted(m for m in sys.modules if m in heavy)}))
    ''')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["status"][0::3] == [401] * 4  # refused before the body was read
    assert all(s in (200, 400) for s in result["status"][1::3])
