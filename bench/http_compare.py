"""The same HTTP client against chromadb's server and ours, in one run.

    python bench/http_compare.py [--n 20000] [--d 512] [--peer-python /tmp/chroma-peer/bin/python]

Starts ``chroma run`` (chromadb 1.5.9, from its own venv: see bench/README.md) and ``retrieval run`` on
127.0.0.1, each on a fresh directory, and drives both with chromadb-client's ``HttpClient`` (the
HTTP-only ``chromadb`` package in this environment): add throughput (batches of 1,000), single-query
p50, query throughput of 16 concurrent client processes, a filtered query (``tag == "t3"``, ~10%) with
its recall against exact search, 64 queries in flight from one async client (ours against our server,
chromadb's ``AsyncHttpClient`` against chroma's), and our own HTTP overhead (query p50 over HTTP minus
embedded p50).

With ``--settle``/``--until-idle`` both servers are loaded first, one at a time, and every p50 (each
server's plain and filtered query, our client's, the embedded one) is then taken in alternating
blocks of 20 queries: the same minutes for all, so a slow spell of this machine falls on every side
of a ratio. Without them, each server's queries are timed right after its own adds, during its
background indexing.
Prints one JSON object and a table of ratios (ours against chroma's server, same run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

N_TAGS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clustered(n: int, d: int, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 1,000 centres (like CLIP embedding sets), and queries near them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def around(count: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), count)] + 0.6 / np.sqrt(d) * rng.standard_normal((count, d)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return around(n), around(nq)


def start_server(argv: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"{argv[0]} did not listen on port {port} within 60 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(port: int):
    import chromadb

    return chromadb.HttpClient(host="127.0.0.1", port=port)


def cpu_seconds(pid: int | None) -> float:
    """CPU time used so far by process ``pid`` (Linux ``/proc``), or by this one when None."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_until_idle(pid: int | None, limit_s: float = 120.0, busy_share: float = 0.05) -> float:
    """Seconds until the process used under ``busy_share`` of one core for a whole second (its
    background indexing is over), at most ``limit_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < busy_share:
            break
    return round(time.monotonic() - t0, 1)


def p50_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


def _concurrent_worker(port: int, queries: np.ndarray, start: mp.Event, out: mp.Queue) -> None:
    col = client(port).get_collection("bench")
    col.query(query_embeddings=queries[:1].tolist(), n_results=10)  # connect before the clock starts
    start.wait()
    t0 = time.perf_counter()
    for q in queries:
        col.query(query_embeddings=[q.tolist()], n_results=10, include=[])
    out.put((len(queries), time.perf_counter() - t0))


def concurrent_qps(port: int, queries: np.ndarray, workers: int) -> float:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    chunks = np.array_split(queries, workers)
    procs = [ctx.Process(target=_concurrent_worker, args=(port, c, start, out)) for c in chunks]
    for p in procs:
        p.start()
    time.sleep(3.0)  # imports and first connections happen before the start signal
    t0 = time.perf_counter()
    start.set()
    done = sum(out.get(timeout=600)[0] for _ in procs)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return round(done / elapsed, 1)


def load(port: int, pid: int, X: np.ndarray, tags: np.ndarray, args) -> tuple[Any, dict]:
    """Add the vectors in batches of 1,000 (the add throughput), then wait ``--settle`` (and, with
    ``--until-idle``, for the server's background indexing to end); returns (collection, figures)."""
    col = client(port).create_collection("bench", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
    ids = [f"id{i}" for i in range(len(X))]
    metas = [{"i": i, "tag": f"t{t}"} for i, t in enumerate(tags.tolist())]
    t0 = time.perf_counter()
    for lo in range(0, len(X), 1000):
        col.add(ids=ids[lo : lo + 1000], embeddings=X[lo : lo + 1000], metadatas=metas[lo : lo + 1000])
    out: dict[str, Any] = {"add_vectors_per_s": round(len(X) / (time.perf_counter() - t0), 1)}
    time.sleep(args.settle)  # the same pause for both servers (see --settle)
    if args.until_idle:
        out["idle_after_s"] = args.settle + wait_until_idle(pid)
    return col, out


def query_kinds(name: str, col: Any) -> dict[str, Any]:
    """The timed queries of one server through chromadb's client: a plain one and a filtered one."""
    return {
        f"{name}.query": lambda q: col.query(query_embeddings=[q.tolist()], n_results=10),
        f"{name}.filtered": lambda q: col.query(query_embeddings=[q.tolist()], n_results=10, where={"tag": "t3"}),
    }


def alternating_p50s(calls: dict[str, Any], Q: np.ndarray, queries: int, block: int = 20) -> tuple[dict[str, float], dict[str, list]]:
    """Each call's p50 over ``queries`` queries, the calls taking turns in blocks of ``block``: the
    same minutes for all of them (this machine's speed drifts by up to 2x within the hour, so p50s
    taken minutes apart make no ratio). Also returns each call's answers, in query order."""
    for call in calls.values():  # warm up: connections, caches
        for q in Q[:20]:
            call(q)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    answers: dict[str, list] = {name: [] for name in calls}
    for lo in range(0, queries, block):
        for name, call in calls.items():
            for q in Q[lo : min(lo + block, queries)]:
                t = time.perf_counter()
                answers[name].append(call(q))
                seconds[name].append(time.perf_counter() - t)
    return {name: p50_ms(s) for name, s in seconds.items()}, answers


def filtered_recall(answers: list, truth_filtered: list[set]) -> float:
    hits = sum(len(truth & {int(i[2:]) for i in got["ids"][0]}) for got, truth in zip(answers, truth_filtered))
    return round(hits / (10 * len(truth_filtered)), 4)


def async_qps(port: int, Q: np.ndarray, ours: bool, concurrency: int = 64) -> float:
    """Queries per second of ``concurrency`` requests in flight from one async client: ours
    (``retrieval.AsyncHttpClient``) against our server, chromadb's against chroma's."""
    import asyncio

    async def run() -> float:
        if ours:
            import retrieval

            client = await retrieval.AsyncHttpClient(host="127.0.0.1", port=port)
            vectors = list(Q)
        else:
            import chromadb

            client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=port)
            vectors = [q.tolist() for q in Q]
        col = await client.get_collection("bench")
        gate = asyncio.Semaphore(concurrency)

        async def one(q) -> None:
            async with gate:
                await col.query(query_embeddings=[q], n_results=10, include=[])

        await asyncio.gather(*(one(q) for q in vectors[:concurrency]))  # connections and warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(one(q) for q in vectors))
        return round(len(vectors) / (time.perf_counter() - t0), 1)

    return asyncio.run(run())


def open_embedded(X: np.ndarray, directory: str, settle: float, until_idle: bool):
    """Our store in this process with the same vectors, indexed (the overhead's baseline); returns
    (client, collection). Built before the servers run, so its indexing overlaps neither."""
    import retrieval

    client_ = retrieval.PersistentClient(path=directory)
    col = client_.create_collection("bench", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None)
    for lo in range(0, len(X), 1000):
        col.add(ids=[f"id{i}" for i in range(lo, min(lo + 1000, len(X)))], embeddings=X[lo : lo + 1000])
    time.sleep(settle)
    if until_idle:
        wait_until_idle(None)
    return client_, col


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--concurrent-queries", type=int, default=3200)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--peer-python", default="/tmp/chroma-peer/bin/python")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after the adds before timing queries, the same for every server "
                             "(both index in the background after an add; 0 times queries while they do)")
    parser.add_argument("--until-idle", action="store_true",
                        help="after --settle, also wait until each server process (and, for the embedded p50, "
                             "this one) has used under 5%% of a core for a second: queries timed after indexing")
    args = parser.parse_args()

    X, Q = clustered(args.n, args.d, max(args.queries, args.concurrent_queries))
    tags = np.random.default_rng(1).integers(0, N_TAGS, len(X))
    mask = tags == 3
    truth_filtered = []
    for q in Q[: args.queries]:
        scores = X[mask] @ q
        top = np.argsort(-scores)[:10]
        truth_filtered.append(set(np.flatnonzero(mask)[top].tolist()))

    work = Path(tempfile.mkdtemp(prefix="http-compare-"))
    peer_chroma = str(Path(args.peer_python).with_name("chroma"))
    servers = {
        "chroma": lambda port: [peer_chroma, "run", "--path", str(work / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
        "retrieval": lambda port: [str(Path(sys.executable).with_name("retrieval")), "run", "--path", str(work / "ours"), "--host", "127.0.0.1", "--port", str(port)],
    }
    settled = bool(args.settle or args.until_idle)
    results: dict[str, dict] = {}
    procs: dict[str, subprocess.Popen] = {}
    ports: dict[str, int] = {}
    timed: dict[str, Any] = {}  # name.kind -> call, timed together once every server is loaded
    embedded_client = None
    try:
        if settled:  # built before the servers run, so its indexing overlaps neither
            embedded_client, embedded = open_embedded(X, str(work / "embedded"), args.settle, args.until_idle)
        # One server at a time is loaded (and, settled, left to finish indexing) while the other
        # sits idle; their queries are then timed in the same minutes.
        for name, argv in servers.items():
            ports[name] = free_port()
            procs[name] = start_server(argv(ports[name]), ports[name], work / f"{name}.log")
            col, results[name] = load(ports[name], procs[name].pid, X, tags, args)
            if settled:
                timed.update(query_kinds(name, col))
            else:  # timed during its own background indexing, before the next server loads
                p50s, answers = alternating_p50s(query_kinds(name, col), Q, args.queries)
                results[name].update(query_p50_ms=p50s[f"{name}.query"], filtered_p50_ms=p50s[f"{name}.filtered"],
                                     filtered_recall=filtered_recall(answers[f"{name}.filtered"], truth_filtered))
        if settled:
            import retrieval

            over_http = retrieval.HttpClient(host="127.0.0.1", port=ports["retrieval"]).get_collection("bench")
            timed["ours.our_client"] = lambda q: over_http.query(query_embeddings=[q], n_results=10)
            timed["ours.embedded"] = lambda q: embedded.query(query_embeddings=[q], n_results=10)
            p50s, answers = alternating_p50s(timed, Q, args.queries)
            for name in servers:
                results[name].update(query_p50_ms=p50s[f"{name}.query"], filtered_p50_ms=p50s[f"{name}.filtered"],
                                     filtered_recall=filtered_recall(answers[f"{name}.filtered"], truth_filtered))
            results["retrieval"].update(our_client_query_p50_ms=p50s["ours.our_client"],
                                        embedded_query_p50_ms=p50s["ours.embedded"])
        for name in servers:  # throughput: one server at a time, the other idle
            results[name]["concurrent_qps"] = concurrent_qps(ports[name], Q, args.workers)
            results[name]["async_64_qps"] = async_qps(ports[name], Q[: args.concurrent_queries], ours=name == "retrieval")
            print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            stop_server(proc)
        if embedded_client is not None:
            embedded_client.close()
        shutil.rmtree(work, ignore_errors=True)

    ours, peer = results["retrieval"], results["chroma"]

    def overhead(http_p50_ms: float) -> float | str:
        if not settled:
            return "n/a without --settle or --until-idle"
        return round(http_p50_ms - ours["embedded_query_p50_ms"], 3)

    ratios = {
        "add throughput (ours/chroma, >= 2)": round(ours["add_vectors_per_s"] / peer["add_vectors_per_s"], 2),
        "query p50 (ours/chroma, <= 0.7)": round(ours["query_p50_ms"] / peer["query_p50_ms"], 2),
        "16-client query throughput (ours/chroma, >= 1.5)": round(ours["concurrent_qps"] / peer["concurrent_qps"], 2),
        "filtered query speed-up (chroma/ours, >= 10)": round(peer["filtered_p50_ms"] / ours["filtered_p50_ms"], 1),
        "64 in flight from one AsyncHttpClient (ours/chroma's, >= 2)": round(ours["async_64_qps"] / peer["async_64_qps"], 2),
        # Without --settle, each p50 is taken at a different point of its own background indexing: the
        # difference is not an overhead, so it is not reported.
        "our HTTP overhead on query p50, chromadb's client (ms, <= 1)": overhead(ours["query_p50_ms"]),
        "our HTTP overhead on query p50, our client (ms, <= 0.7)": overhead(ours.get("our_client_query_p50_ms", 0)),
    }
    print(json.dumps({"n": args.n, "d": args.d, "settle_s": args.settle, "until_idle": args.until_idle, "results": results, "ratios": ratios}, indent=2))
    for label, value in ratios.items():
        print(f"{label:55s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
