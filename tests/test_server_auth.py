"""Authentication and per-tenant authorization: every route x (no token, wrong token, another
tenant's token, a read-only token on a write) gets the right status and reads or writes nothing;
a collection id from another tenant answers exactly like a missing one (GHSA-2wm9-hf6c-p5cr);
401 comes before the body is read; chromadb's client auth settings work unchanged."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from starlette.testclient import TestClient

from retrieval.errors import AuthenticationError, InvalidArgumentError
from retrieval.http.wire import ROUTES
from retrieval.server.auth import Authenticator, Principal
from tests.server_fixtures import (
    ADMIN,
    READER_A,
    USER_A,
    bearer,
    make_world,
    permitted,
    random_id,
    requests_for,
    snapshot,
)

PUBLIC = {verb for verb, route in ROUTES.items() if route.action == "public"}


@pytest.fixture()
def world():
    world = make_world()
    yield world
    world.backend.close()


def _send(client: TestClient, request, headers):
    method, path, body = request
    return client.request(method, path, headers=headers, content=None if body is None else json.dumps(body))


def _order(requests: dict) -> list:
    # Destructive calls last, so every other call meets the collection still there.
    last = ("delete_collection", "delete_database", "reset")
    return [v for v in requests if v not in last] + [v for v in last if v in requests]


def test_every_route_in_the_table_has_a_known_action():
    assert {route.action for route in ROUTES.values()} <= {"public", "authenticated", "read", "write", "admin"}
    assert PUBLIC == {"heartbeat", "get_version"}


@pytest.mark.parametrize("headers", [{}, bearer("wrong-token-xyz"), {"X-Chroma-Token": "wrong-token-xyz"},
                                     {"Authorization": "Basic " + base64.b64encode(b"admin:admin-token-0001").decode()},
                                     {"Authorization": "Bearer"}, {"Authorization": "Token " + ADMIN}],
                         ids=["none", "wrong-bearer", "wrong-x-chroma", "basic-for-a-token", "empty-bearer", "bad-scheme"])
def test_no_or_wrong_credentials_get_401_on_every_route_but_heartbeat_and_version(world, headers):
    before = snapshot(world.backend)
    client = TestClient(world.app)
    requests = requests_for("tenant-b", "db-b", "beta", world.ids["beta"])
    for verb in _order(requests):
        response = _send(client, requests[verb], headers)
        if verb in PUBLIC:
            assert response.status_code == 200, verb
        else:
            assert response.status_code == 401, (verb, response.text)
            assert response.json()["error"] == "AuthorizationError"  # chromadb's name for a 401
            assert "tenant-b" not in response.text and "doc" not in response.text
    for path in ("/metrics", "/openapi.json", "/ui/api/collections?tenant=tenant-b&database=db-b",
                 "/ui/api/collections/beta/thumbnail?id=b0&tenant=tenant-b&database=db-b"):
        assert client.get(path, headers=headers).status_code == 401, path
    assert snapshot(world.backend) == before


def test_another_tenants_token_is_refused_on_every_route_and_reads_or_writes_nothing(world):
    before = snapshot(world.backend)
    client = TestClient(world.app)
    real = requests_for("tenant-b", "db-b", "beta", world.ids["beta"])
    missing = requests_for("tenant-b", "db-b", "nothere", random_id())
    for verb in _order(real):
        response = _send(client, real[verb], bearer(USER_A))
        if verb in PUBLIC or ROUTES[verb].action == "authenticated":
            assert response.status_code == 200, verb
            assert "tenant-b" not in response.text, verb
            continue
        assert response.status_code == 403, (verb, response.text)
        leaked = response.text.replace(world.ids["beta"], "<id>")  # a random uuid may itself contain "b0"
        assert "beta" not in leaked and "b0" not in leaked and "tenant-b doc" not in leaked
        # The same answer whether tenant B's collection exists or not: no oracle.
        other = _send(client, missing[verb], bearer(USER_A))
        assert (other.status_code, other.json()) == (response.status_code, response.json()), verb
    assert snapshot(world.backend) == before
    assert client.get("/api/v2/auth/identity", headers=bearer(USER_A)).json() == {
        "user_id": "user-a", "tenant": "tenant-a", "databases": ["db-a"]}


def test_a_foreign_collection_id_in_ones_own_tenant_answers_like_a_missing_one(world):
    """GHSA-2wm9-hf6c-p5cr: the path names tenant A, the id is tenant B's collection."""
    before = snapshot(world.backend)
    client = TestClient(world.app)
    foreign = requests_for("tenant-a", "db-a", "beta", world.ids["beta"])
    missing_id = random_id()
    missing = requests_for("tenant-a", "db-a", "nothere", missing_id)
    by_id = [v for v, r in ROUTES.items() if "{collection}" in r.path]
    for verb in by_id:
        got = _send(client, foreign[verb], bearer(USER_A))
        assert got.status_code == 404, (verb, got.text)
        other = _send(client, missing[verb], bearer(USER_A))
        if verb in ("get_collection", "delete_collection"):  # by name: messages name what was asked
            assert other.status_code == 404 and other.json()["error"] == got.json()["error"]
        else:
            # Same status, same body, the id aside (each message names the id that was asked for).
            strip = lambda r, cid: r.json()["message"].replace(cid, "<id>")  # noqa: E731
            assert strip(got, world.ids["beta"]) == strip(other, missing_id), verb
        leaked = got.text.replace(world.ids["beta"], "<id>")  # a random uuid may itself contain "b0"
        assert "tenant-b" not in leaked and "b0" not in leaked
        if verb not in ("get_collection", "delete_collection"):
            assert "beta" not in got.text.replace(world.ids["beta"], "")
    assert snapshot(world.backend) == before


def test_read_only_token_is_refused_every_write_and_admin_route(world):
    before = snapshot(world.backend)
    client = TestClient(world.app)
    requests = requests_for("tenant-a", "db-a", "alpha", world.ids["alpha"])
    for verb in _order(requests):
        response = _send(client, requests[verb], {"X-Chroma-Token": READER_A})
        if ROUTES[verb].action in ("write", "admin"):
            assert response.status_code == 403, (verb, response.text)
        else:
            assert permitted(verb, response.status_code), (verb, response.text)
    after = snapshot(world.backend)
    assert after == before


def test_the_matrix_requests_do_work_with_a_sufficient_token(world):
    """The refusals above are refusals of requests that would otherwise succeed."""
    client = TestClient(world.app)
    requests = requests_for("tenant-a", "db-a", "alpha", world.ids["alpha"])
    for verb in _order(requests):
        token = USER_A if verb not in ("create_tenant", "create_database", "reset") else ADMIN
        response = _send(client, requests[verb], bearer(token))
        assert permitted(verb, response.status_code), (verb, response.text)


def test_scopes_apply_to_names_in_the_body_and_to_listings(world):
    client = TestClient(world.app)
    # user-a is an admin of tenant-a / db-a only: no other database, no other tenant, no reset.
    assert client.post("/api/v2/tenants/tenant-a/databases", json={"name": "db-z"}, headers=bearer(USER_A)).status_code == 403
    assert client.post("/api/v2/tenants", json={"name": "tenant-a"}, headers=bearer(USER_A)).status_code in (403, 409)
    assert client.post("/api/v2/tenants", json={"name": "tenant-z"}, headers=bearer(USER_A)).status_code == 403
    assert client.post("/api/v2/reset", headers=bearer(USER_A)).status_code == 403
    client.post("/api/v2/tenants/tenant-a/databases", json={"name": "db-other"}, headers=bearer(ADMIN))
    listed = client.get("/api/v2/tenants/tenant-a/databases", headers=bearer(READER_A)).json()
    assert [d["name"] for d in listed] == ["db-a"]  # db-other exists but is outside the scope
    assert len(client.get("/api/v2/tenants/tenant-a/databases", headers=bearer(ADMIN)).json()) == 2


def test_401_is_answered_before_the_body_is_read(world):
    received = []

    async def receive():
        received.append(True)
        await asyncio.sleep(3600)  # a client that never sends its body

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v2/tenants/tenant-a/databases/db-a/collections",
             "raw_path": b"/api/v2/tenants/tenant-a/databases/db-a/collections", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
             "http_version": "1.1", "scheme": "http", "server": ("testserver", 80), "client": ("c", 1), "root_path": ""}
    asyncio.run(asyncio.wait_for(world.app(scope, receive, send), 10))
    assert sent[0]["status"] == 401 and not received


def test_unauthenticated_page_api_and_scopes(world):
    client = TestClient(world.app)
    url = "/ui/api/collections?tenant=tenant-b&database=db-b"
    assert client.get(url, headers=bearer(USER_A)).status_code == 403
    got = client.get("/ui/api/collections?tenant=tenant-a&database=db-a", headers=bearer(READER_A))
    assert got.status_code == 200 and "alpha" in got.text and "beta" not in got.text


def test_basic_auth_users_and_token_env(monkeypatch):
    auth = Authenticator.from_config(
        {"users": [{"username": "alice", "password_env": "ALICE_PW", "tenant": "t1", "actions": ["read"]}],
         "tokens": [{"name": "ci", "token_env": "CI_TOKEN", "actions": ["read", "write"]}]},
        environ={"ALICE_PW": "correct horse", "CI_TOKEN": "ci-token-123456"},
    )
    basic = "Basic " + base64.b64encode(b"alice:correct horse").decode()
    assert auth.authenticate({"authorization": basic}) == Principal("alice", "t1", ("*",), frozenset({"read"}))
    assert auth.authenticate({"authorization": "Bearer ci-token-123456"}).name == "ci"
    with pytest.raises(AuthenticationError, match="invalid credentials"):
        auth.authenticate({"authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()})
    with pytest.raises(InvalidArgumentError, match="'CI_TOKEN'"):
        Authenticator.from_config({"tokens": [{"token_env": "CI_TOKEN", "actions": ["read"]}]}, environ={})
    with pytest.raises(InvalidArgumentError, match="did you mean 'tenant'"):
        Authenticator.from_config({"tokens": [{"token": "x" * 10, "tenants": "a", "actions": ["read"]}]}, environ={})
    with pytest.raises(InvalidArgumentError, match="actions must be"):
        Authenticator.from_config({"tokens": [{"token": "x" * 10, "actions": ["delete"]}]}, environ={})
    # The shorthand variables give one all-powerful token, so a config file need hold no secret.
    only = Authenticator.from_config(None, environ={"RETRIEVAL_AUTH_TOKEN": "from-env-token"})
    assert only.authenticate({"x-chroma-token": "from-env-token"}).allows("admin", None, None)
    assert Authenticator.from_config(None, environ={}) is None
