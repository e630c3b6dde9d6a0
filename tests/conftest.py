"""Shared fixtures: one behavioural suite runs against every client kind."""

from __future__ import annotations

import os

# No model may be downloaded in tests: a missing model must fail fast, not hang on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

import retrieval  # noqa: E402


@pytest.fixture(params=["ephemeral", "persistent", "http"])
def client(request, tmp_path):
    """An empty client of each kind; ``http`` talks to an in-process ``retrieval run`` app over
    Chroma's v2 REST API. Clients are closed after the test."""
    if request.param == "http":
        from tests.http_server import in_process_client

        with in_process_client() as c:
            yield c
        return
    if request.param == "ephemeral":
        c = retrieval.EphemeralClient()
    else:
        c = retrieval.PersistentClient(path=str(tmp_path / "db"))
    yield c
    c.close()


@pytest.fixture
def over_http(request) -> bool:
    """Whether this test's ``client`` talks HTTP (where a server-side failure is a bare 500)."""
    callspec = getattr(request.node, "callspec", None)
    return callspec is not None and callspec.params.get("client") == "http"


@pytest.fixture
def persist_dir(tmp_path):
    return str(tmp_path / "db")


@pytest.fixture
def collection(client):
    """A collection that takes embeddings only (no embedding function)."""
    return client.create_collection("test", embedding_function=None)
