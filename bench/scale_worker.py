"""One phase of the scale benchmark for one system, in a fresh process (run by ``scale.py``).

    python bench/scale_worker.py --role ingest --system ours --path DIR --vectors FILE --n 100000 --d 512

Roles, in the order ``scale.py`` runs them on one store:

- ``ingest``: add rows ``0:n`` in batches from Python, then (LanceDB) build the index, then query for the
  last row's vector until it is found: that wall time is "ingest until queryable". Then a latency trace
  for ``--settle-s`` (background indexing may still run) and close (timed).
- ``open``: open the clean store and answer a first query (timed), keep querying for ``--settle-s`` to
  record how latency evolves (the trace), then query p50 / recall@10 and the cold-filter p50 / recall.
- ``write10``: open, add 10 new rows, time ``close()``.
- ``killwrite``: open, add 5,000 new rows, and SIGKILL itself the moment ``add`` returns.
- ``recover``: open the killed store, answer a first query for the last acknowledged row (timed, and
  whether it was found), record the latency trace, then check that the killed batch is findable.

Each prints one line ``RESULT {json}``; peak RSS is this process's ``VmHWM`` (see ``peak_rss_bytes``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

import scale_data
import scale_systems

WRITE10 = 10
KILL_BATCH = 5_000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", required=True, choices=["ingest", "open", "write10", "killwrite", "recover"])
    ap.add_argument("--system", required=True)
    ap.add_argument("--path", required=True, help="the store's directory")
    ap.add_argument("--vectors", required=True, help="raw float32 vector file written by scale.py")
    ap.add_argument("--queries", help="npz written by scale.py (queries, ground truth, filter windows)")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--d", type=int, required=True)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--settle-s", type=float, default=5.0)
    ap.add_argument("--queryable-timeout", type=float, default=600.0)
    ap.add_argument("--lance-ef", type=int, default=None)
    ap.add_argument("--wide-ef", type=int, default=0, help="also measure p50 and recall@10 at this search ef")
    args = ap.parse_args()
    started = time.perf_counter()
    store = scale_systems.make(args.system, args.lance_ef)
    result = {"import_s": round(time.perf_counter() - started, 3), "version": store.version}
    result.update(ROLES[args.role](store, args))
    result["peak_rss_bytes"] = peak_rss_bytes()
    print("RESULT " + json.dumps(result), flush=True)


def peak_rss_bytes() -> int:
    """This process's peak resident set since its exec (``VmHWM``). Not ``ru_maxrss``: Linux carries that
    across fork and exec, so every worker would start at the driver's own peak (429 MiB at 100k)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def ingest(store, args) -> dict:
    """Batches of ``--batch`` rows; the clock runs only inside the store's calls."""
    store.open(args.path, create=True)
    spent, batch_s = 0.0, []
    for lo in range(0, args.n, args.batch):
        x = scale_data.read_rows(args.vectors, args.d, lo, min(args.n, lo + args.batch))
        t = time.perf_counter()
        store.add(lo, x)
        batch_s.append(time.perf_counter() - t)
        spent += batch_s[-1]
    t = time.perf_counter()
    store.finish_ingest()
    finish_s = time.perf_counter() - t
    last = scale_data.read_rows(args.vectors, args.d, args.n - 1, args.n)[0]
    t = time.perf_counter()
    tries = _until_found(store, last, args.n - 1, args.queryable_timeout)
    found_s = time.perf_counter() - t
    total = spent + finish_s + found_s
    # Latency from the moment it is queryable: slower while background indexing still runs.
    trace = _trace(store, np.load(args.queries)["queries"], args.settle_s, since=time.perf_counter())
    t = time.perf_counter()
    store.close()
    return {
        "add_s": round(spent, 3),
        "index_s": round(finish_s, 3),
        "until_found_s": round(found_s, 4),
        "found_after_tries": tries,
        "ingest_until_queryable_s": round(total, 3),
        "records_per_s": round(args.n / total, 1) if tries else None,
        "batch_s_first_last_max": [round(batch_s[0], 3), round(batch_s[-1], 3), round(max(batch_s), 3)],
        "p50_first_50_after_ms": _p50_ms([lat for _, lat in trace[:50]]) if trace else None,
        "trace": trace,
        "close_s": round(time.perf_counter() - t, 3),
    }


def open_clean(store, args) -> dict:
    data = np.load(args.queries)
    queries, truth = data["queries"], data["truth"]
    opened = _open_and_trace(store, args, queries[0], queries)
    found, latencies = _search(store, queries)
    wide = {}
    if args.wide_ef:  # the documented setting for recall@10 >= 0.95, then back to the defaults
        store.set_ef(args.wide_ef)
        wide_found, wide_latencies = _search(store, queries)
        store.set_ef(None)
        wide = {"wide_ef": args.wide_ef, "wide_query_p50_ms": _p50_ms(wide_latencies),
                "wide_recall_at_10": scale_data.recall(wide_found, truth)}
    filtered, filter_latencies = [], []
    for q, window in zip(data["filter_queries"], data["filter_windows"]):
        t = time.perf_counter()
        filtered.append(store.query(q, scale_data.K, window=(int(window[0]), int(window[1]))))
        filter_latencies.append(time.perf_counter() - t)
    t = time.perf_counter()
    store.close()
    return {
        **opened,
        "query_p50_ms": _p50_ms(latencies),
        "query_p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 3),
        "recall_at_10": scale_data.recall(found, truth),
        **wide,
        "filter_p50_ms": _p50_ms(filter_latencies),
        "filter_recall_at_10": scale_data.recall(filtered, data["filter_truth"]),
        "filter_queries": len(filter_latencies),
        "close_s": round(time.perf_counter() - t, 3),
    }


def _search(store, queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    found, latencies = [], []
    for q in queries:
        t = time.perf_counter()
        found.append(store.query(q, scale_data.K))
        latencies.append(time.perf_counter() - t)
    return found, latencies


def write10(store, args) -> dict:
    t = time.perf_counter()
    store.open(args.path, create=False)
    open_s = time.perf_counter() - t
    x = scale_data.read_rows(args.vectors, args.d, args.n, args.n + WRITE10)
    t = time.perf_counter()
    store.add(args.n, x)
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    store.close()
    return {"open_s": round(open_s, 3), "add_s": round(add_s, 4), "close_s": round(time.perf_counter() - t, 4)}


def killwrite(store, args) -> dict:
    store.open(args.path, create=False)
    lo = args.n + WRITE10
    x = scale_data.read_rows(args.vectors, args.d, lo, lo + KILL_BATCH)
    t = time.perf_counter()
    store.add(lo, x)
    # Acknowledged: die now, before any background work or close can run.
    print(f"ADDED {time.perf_counter() - t:.4f}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}  # not reached


def recover(store, args) -> dict:
    lo = args.n + WRITE10
    killed = scale_data.read_rows(args.vectors, args.d, lo, lo + KILL_BATCH)
    data = np.load(args.queries)
    opened = _open_and_trace(store, args, killed[-1], data["queries"], expect=lo + KILL_BATCH - 1)
    # Every acknowledged row must be findable by its own vector: check an even sample of the batch.
    sample = np.linspace(0, KILL_BATCH - 1, 50).astype(int)
    found = sum((lo + int(j)) in store.query(killed[j], scale_data.K) for j in sample)
    t = time.perf_counter()
    store.close()
    return {**opened, "killed_batch_found": round(found / len(sample), 3), "close_s": round(time.perf_counter() - t, 3)}


def _open_and_trace(store, args, first, queries, expect: int | None = None) -> dict:
    """Open, answer ``first`` (timed), then query for ``--settle-s`` recording (time since open, latency)."""
    t0 = time.perf_counter()
    store.open(args.path, create=False)
    opened = time.perf_counter()
    rows = store.query(first, scale_data.K)
    answered = time.perf_counter()
    trace = _trace(store, queries, args.settle_s, since=t0)
    out = {
        "open_s": round(opened - t0, 4),
        "first_query_s": round(answered - opened, 4),
        "open_first_query_s": round(answered - t0, 4),
        "trace": trace,
    }
    if expect is not None:
        out["first_query_found_own_row"] = expect in rows
    return out


def _trace(store, queries: np.ndarray, seconds: float, since: float) -> list[list[float]]:
    """Query for ``seconds``: [seconds since ``since`` when each query started, its latency]."""
    trace = []
    stop = time.perf_counter() + seconds
    while (t := time.perf_counter()) < stop:
        store.query(queries[len(trace) % len(queries)], scale_data.K)
        trace.append([round(t - since, 4), round(time.perf_counter() - t, 6)])
    return trace


def _until_found(store, vector: np.ndarray, row: int, timeout: float) -> int:
    """Query until ``row`` is among the answers; the number of tries, or 0 if the timeout passed."""
    deadline = time.perf_counter() + timeout
    tries = 0
    while True:
        tries += 1
        if row in store.query(vector, scale_data.K):
            return tries
        if time.perf_counter() > deadline:
            return 0
        time.sleep(0.01)


def _p50_ms(seconds: list[float]) -> float:
    return round(float(np.median(seconds)) * 1000, 3)


ROLES = {"ingest": ingest, "open": open_clean, "write10": write10, "killwrite": killwrite, "recover": recover}

if __name__ == "__main__":
    sys.exit(main())
