"""Mixed read/write load on ``retrieval run`` and ``chroma run``, in one run.

    python bench/http_load.py [--clients 16] [--seconds 20] [--write-ratio 0.2] [--n 5000] [--d 128]

Both servers start on 127.0.0.1 on fresh directories (chromadb 1.5.9 from its own venv: see
bench/README.md; helpers from ``http_compare.py``). Each is preloaded with ``--n`` clustered vectors,
then ``--clients`` client processes, each with chromadb-client's ``HttpClient``, loop for
``--seconds``: with probability ``--write-ratio`` an ``add`` of 10 new records, otherwise a
``query`` (n_results=10). Prints one JSON object: per server, operations per second (all, adds,
queries) and p50/p99 latency of each kind, then the ratios ours/chroma.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from http_compare import client, clustered, free_port, start_server, stop_server  # noqa: E402

WRITE_BATCH = 10


def _worker(port: int, worker: int, seconds: float, write_ratio: float, d: int, start: mp.Event, out: mp.Queue) -> None:
    rng = np.random.default_rng(worker)
    col = client(port).get_collection("load")
    col.query(query_embeddings=rng.standard_normal((1, d)).tolist(), n_results=1)  # connect before the clock
    latencies: dict[str, list[float]] = {"add": [], "query": []}
    errors = 0
    start.wait()
    deadline = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < deadline:
        vectors = rng.standard_normal((WRITE_BATCH, d)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        t0 = time.perf_counter()
        try:
            if rng.random() < write_ratio:
                col.add(ids=[f"w{worker}-{k}-{i}" for i in range(WRITE_BATCH)], embeddings=vectors.tolist())
                kind = "add"
                k += 1
            else:
                col.query(query_embeddings=vectors[:1].tolist(), n_results=10)
                kind = "query"
        except Exception:  # noqa: BLE001 - counted, reported
            errors += 1
            continue
        latencies[kind].append(time.perf_counter() - t0)
    out.put((latencies, errors))


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def measure(port: int, args: argparse.Namespace) -> dict:
    X, _ = clustered(args.n, args.d, 1)
    col = client(port).create_collection("load", metadata={"hnsw:space": "cosine"})
    for lo in range(0, args.n, 1000):
        col.add(ids=[f"p{i}" for i in range(lo, min(lo + 1000, args.n))], embeddings=X[lo:lo + 1000].tolist())
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(port, w, args.seconds, args.write_ratio, args.d, start, out))
             for w in range(args.clients)]
    for p in procs:
        p.start()
    time.sleep(2.0 + 0.2 * args.clients)  # let every client connect
    start.set()
    results = [out.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    adds = [x for lat, _ in results for x in lat["add"]]
    queries = [x for lat, _ in results for x in lat["query"]]
    return {
        "ops_per_s": round((len(adds) + len(queries)) / args.seconds, 1),
        "adds_per_s": round(len(adds) / args.seconds, 1),
        "queries_per_s": round(len(queries) / args.seconds, 1),
        "add_p50_ms": _pct(adds, 50), "add_p99_ms": _pct(adds, 99),
        "query_p50_ms": _pct(queries, 50), "query_p99_ms": _pct(queries, 99),
        "errors": sum(e for _, e in results),
        "records_after": client(port).get_collection("load").count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--write-ratio", type=float, default=0.2)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--peer-python", default="/tmp/chroma-peer/bin/python")
    parser.add_argument("--only", choices=["retrieval", "chroma"], help="measure one server")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="http-load-"))
    peer_chroma = str(Path(args.peer_python).with_name("chroma"))
    servers = {
        "retrieval": lambda port: [sys.executable, "-m", "retrieval.cli", "run", "--path", str(work / "ours"),
                                   "--host", "127.0.0.1", "--port", str(port), "--config", str(work / "quiet.yaml")],
        "chroma": lambda port: [peer_chroma, "run", "--path", str(work / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
    }
    (work / "quiet.yaml").write_text("log_level: warning\n")  # no access log lines in the measurement
    results = {}
    try:
        for name, argv in servers.items():
            if args.only and name != args.only:
                continue
            port = free_port()
            proc = start_server(argv(port), port, work / f"{name}.log")
            try:
                results[name] = measure(port, args)
            finally:
                stop_server(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"clients": args.clients, "seconds": args.seconds, "write_ratio": args.write_ratio, "n": args.n, "d": args.d,
              **results}
    if "retrieval" in results and "chroma" in results:
        ours, peer = results["retrieval"], results["chroma"]
        report["ratios"] = {
            "ops/s (ours/chroma)": round(ours["ops_per_s"] / peer["ops_per_s"], 2),
            "query p99 (ours/chroma)": round(ours["query_p99_ms"] / peer["query_p99_ms"], 2),
            "add p99 (ours/chroma)": round(ours["add_p99_ms"] / peer["add_p99_ms"], 2),
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
