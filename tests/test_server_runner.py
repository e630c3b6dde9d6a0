"""Where the server runs a handler (retrieval.server.runner): a read known to be cheap on the event
loop, everything else in the thread pool, where reads are bounded by the timeout and writes finish."""

from __future__ import annotations

import asyncio
import threading
import time

from starlette.testclient import TestClient

from retrieval.errors import ServerUnavailableError
from retrieval.server import runner as runner_module
from retrieval.server.runner import HandlerRunner
from tests.server_fixtures import ADMIN, bearer, make_world


def _where() -> str:
    return threading.current_thread().name


def test_a_read_runs_on_the_loop_only_after_a_fast_call_of_the_same_verb_and_collection():
    async def scenario() -> list[str]:
        runner, loop_thread = HandlerRunner(timeout_s=5), _where()
        seen = []
        for key in [("query", "c1"), ("query", "c1"), ("query", "c2"), ("get", "c1"), ("get", "c1")]:
            seen.append(await runner.run(_where, key=key, bounded=True, verb=key[0]))
        return [name == loop_thread for name in seen]

    # The first call of each (verb, collection) is timed in the pool; later ones run on the loop.
    assert asyncio.run(scenario()) == [False, True, False, False, True]


def test_a_read_that_was_slow_goes_back_to_the_pool_and_is_bounded_there(monkeypatch):
    monkeypatch.setattr(runner_module, "INLINE_MAX_S", 0.05)

    async def scenario() -> None:
        runner, loop_thread = HandlerRunner(timeout_s=0.3), _where()
        key = ("query", "c1")
        await runner.run(_where, key=key, bounded=True, verb="query")
        # Predicted fast, it runs on the loop, where nothing can cut it off; it takes 0.2 s.
        slow = lambda: (time.sleep(0.2), _where())[1]  # noqa: E731
        assert await runner.run(slow, key=key, bounded=True, verb="query") == loop_thread
        # Now known to be slow: the next call runs in the pool, and the timeout answers 503.
        very_slow = lambda: (time.sleep(1.0), _where())[1]  # noqa: E731
        started = time.perf_counter()
        try:
            await runner.run(very_slow, key=key, bounded=True, verb="query")
            raise AssertionError("expected a 503")
        except ServerUnavailableError as error:
            assert "request_timeout_s" in str(error)
        assert time.perf_counter() - started < 0.8
        await asyncio.sleep(1.0)  # the abandoned call finishes, slow: the next ones go to the pool too
        places = [await runner.run(_where, key=key, bounded=True, verb="query") == loop_thread for _ in range(10)]
        # Fast again: a few calls in the pool bring its running mean back under the bound.
        assert places[0] is False and True in places
        back = places.index(True)
        assert back >= 2 and all(places[back:]), places

    asyncio.run(scenario())


def test_while_a_write_runs_in_the_pool_reads_do_not_run_on_the_loop():
    async def scenario() -> None:
        runner, loop_thread = HandlerRunner(timeout_s=5), _where()
        key = ("get", "c1")
        await runner.run(_where, key=key, bounded=True, verb="get")
        assert runner.runs_inline(key, bounded=True)
        release = threading.Event()
        write = asyncio.ensure_future(runner.run(release.wait, key=("add", "c1"), bounded=False, verb="add"))
        await asyncio.sleep(0.05)
        # The write may hold the locks the read needs: waiting for them on the loop would stall it.
        assert await runner.run(_where, key=key, bounded=True, verb="get") != loop_thread
        # A write whose caller went away still runs, and still counts as running.
        write.cancel()
        await asyncio.sleep(0.05)
        assert not runner.runs_inline(key, bounded=True)
        release.set()
        await asyncio.sleep(0.1)
        assert runner.runs_inline(key, bounded=True)
        assert await runner.run(_where, key=key, bounded=True, verb="get") == loop_thread

    asyncio.run(scenario())


def test_writes_never_run_on_the_loop():
    async def scenario() -> list[bool]:
        runner, loop_thread = HandlerRunner(timeout_s=5), _where()
        return [await runner.run(_where, key=("add", "c1"), bounded=False, verb="add") == loop_thread for _ in range(3)]

    assert asyncio.run(scenario()) == [False, False, False]


def test_one_call_a_little_over_the_bound_does_not_send_a_key_to_the_pool(monkeypatch):
    monkeypatch.setattr(runner_module, "INLINE_MAX_S", 0.1)

    async def scenario() -> list[bool]:
        runner, loop_thread = HandlerRunner(timeout_s=5), _where()
        key = ("query", "c1")
        await runner.run(_where, key=key, bounded=True, verb="query")  # timed in the pool: fast
        a_little_slow = lambda: (time.sleep(0.12), _where())[1]  # noqa: E731
        return [await runner.run(call, key=key, bounded=True, verb="query") == loop_thread
                for call in (a_little_slow, _where, _where)]

    assert asyncio.run(scenario()) == [True, True, True]


def test_the_app_answers_reads_on_its_loop_once_they_are_known_to_be_cheap(monkeypatch):
    monkeypatch.setattr(runner_module, "INLINE_MAX_S", 0.05)  # "cheap" with room for a busy test machine
    world = make_world()
    try:
        threads = []
        real = world.backend.count

        def count(record):
            threads.append(_where())
            return real(record)

        monkeypatch.setattr(world.backend, "count", count)
        path = f"/api/v2/tenants/tenant-a/databases/db-a/collections/{world.ids['alpha']}/count"
        with TestClient(world.app) as client:
            answers = [client.get(path, headers=bearer(ADMIN)).json() for _ in range(3)]
        assert answers == [3, 3, 3]
        assert threads[0].startswith("retrieval-api") and not any(t.startswith("retrieval-api") for t in threads[1:])
    finally:
        world.backend.close()


def test_a_slow_filtered_query_does_not_send_the_plain_queries_of_its_collection_to_the_pool(monkeypatch):
    monkeypatch.setattr(runner_module, "INLINE_MAX_S", 0.05)
    world = make_world()
    try:
        threads = []
        real = world.backend.query

        def query(record, request):
            threads.append(("filtered" if request.where is not None else "plain", _where()))
            if request.where is not None:
                time.sleep(0.1)  # a filter's first use: a scan
            return real(record, request)

        monkeypatch.setattr(world.backend, "query", query)
        path = f"/api/v2/tenants/tenant-a/databases/db-a/collections/{world.ids['alpha']}/query"
        plain = {"query_embeddings": [[1.0, 0.0, 0.0]], "n_results": 1}
        filtered = {**plain, "where": {"secret": "tenant-a-1"}}
        with TestClient(world.app) as client:
            for body in (plain, plain, filtered, filtered, plain):
                assert client.post(path, json=body, headers=bearer(ADMIN)).status_code == 200
        in_pool = [(kind, name.startswith("retrieval-api")) for kind, name in threads]
        # Each kind is timed apart: the slow filtered ones stay in the pool, the plain ones on the loop.
        assert in_pool == [("plain", True), ("plain", False), ("filtered", True), ("filtered", True), ("plain", False)]
    finally:
        world.backend.close()
