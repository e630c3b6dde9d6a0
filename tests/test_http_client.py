"""retrieval's own HTTP client: hybrid search over the wire, retries of idempotent calls only,
timeouts, and chromadb-style settings."""

from __future__ import annotations

import httpx
import pytest

import retrieval
from retrieval.http.transport import HttpBackend
from retrieval.http.wire import dumps
from tests.http_server import in_process_client


def test_hybrid_search_sparse_vectors_travel_from_the_client():
    import embedders
    from embedders.bm25 import BM25EmbeddingFunction
    from retrieval import K, Knn, Rrf, Search

    with in_process_client() as client:
        col = client.create_collection(
            "hybrid",
            embedding_function=embedders.build_embedding_function("hash", {"dim": 16}),
            configuration={"sparse": {"key": "sparse_embedding", "embedding_function": BM25EmbeddingFunction()}},
        )
        col.add(ids=["a", "b", "c"], documents=["the red circle", "blue star shines", "green square box"])
        result = col.search(Search().rank(Knn(query="blue star", key="sparse_embedding")).limit(2).select(K.DOCUMENT))
        assert result["ids"] == [["b"]] and result["documents"] == [["blue star shines"]]
        fused = col.search(Search().rank(Rrf([
            Knn(query="blue star", return_rank=True, default=50, limit=50),
            Knn(query="blue star", key="sparse_embedding", return_rank=True, default=50, limit=50),
        ])).limit(1))
        assert fused["ids"] == [["b"]]
        assert client.get_collection("hybrid").configuration["sparse"]["key"] == "sparse_embedding"


class Flaky:
    """A transport that fails the first ``failures`` requests of each path with ``error``."""

    def __init__(self, failures: int, error: type[Exception]):
        self.failures, self.error, self.seen = failures, error, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        if sum(1 for s in self.seen if s[1] == request.url.path) <= self.failures:
            raise self.error("flaky", request=request)
        if request.url.path.endswith("/count"):
            return httpx.Response(200, content=dumps(7))
        return httpx.Response(201, content=b"{}")


def _backend(flaky: Flaky, retries: int) -> HttpBackend:
    return HttpBackend("testserver", 80, retries=retries, transport=httpx.MockTransport(flaky))


def _record():
    from retrieval.config import CollectionConfig
    from retrieval.types import CollectionRecord

    return CollectionRecord("c0ffee00-0000-4000-8000-000000000000", "docs", "default_tenant", "default_database",
                            CollectionConfig(), None, 2)


def test_idempotent_calls_are_retried_after_a_transport_failure(monkeypatch):
    monkeypatch.setattr("retrieval.http.transport._BACKOFF", 0.0)
    flaky = Flaky(failures=2, error=httpx.ReadTimeout)
    assert _backend(flaky, retries=2).count(_record()) == 7
    assert len(flaky.seen) == 3  # two failures, then the answer


def test_non_idempotent_calls_are_not_retried_once_sent(monkeypatch):
    import numpy as np

    from retrieval.types import RecordBatch

    monkeypatch.setattr("retrieval.http.transport._BACKOFF", 0.0)
    flaky = Flaky(failures=1, error=httpx.ReadTimeout)
    batch = RecordBatch(ids=["a"], embeddings=np.ones((1, 2), np.float32))
    with pytest.raises(retrieval.ServerUnavailableError, match="timed out"):
        _backend(flaky, retries=3).write(_record(), "add", batch)
    assert len(flaky.seen) == 1  # an add that may have landed is not sent twice
    # A connection that was never made sent nothing: that is retried even for add.
    refused = Flaky(failures=1, error=httpx.ConnectError)
    _backend(refused, retries=3).write(_record(), "add", batch)
    assert len(refused.seen) == 2


def test_retries_give_up_with_a_clear_error(monkeypatch):
    monkeypatch.setattr("retrieval.http.transport._BACKOFF", 0.0)
    flaky = Flaky(failures=10, error=httpx.ConnectError)
    with pytest.raises(retrieval.ServerUnavailableError, match="is it running"):
        _backend(flaky, retries=2).count(_record())
    assert len(flaky.seen) == 3


def test_settings_disagreeing_with_arguments_are_refused():
    settings = retrieval.Settings(chroma_server_host="example.org")
    with pytest.raises(retrieval.InvalidArgumentError, match="example.org"):
        retrieval.HttpClient(host="127.0.0.1", settings=settings)


def test_the_direct_transport_times_out_and_retries_idempotent_calls(monkeypatch):
    """Without an httpx client or transport given, requests go over httpcore's pool (_CoreSession):
    the same timeouts and retry rules apply."""
    import socket
    import threading

    monkeypatch.setattr("retrieval.http.transport._BACKOFF", 0.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    try:
        backend = HttpBackend("127.0.0.1", listener.getsockname()[1], timeout=0.3, retries=1)
        with pytest.raises(retrieval.ServerUnavailableError, match="timed out"):
            backend.count(_record())
        assert len(accepted) == 2  # a read is retried once
        backend.close()
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()
