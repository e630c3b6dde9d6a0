"""A photo archive's life at 100k-1M vectors: ours against LanceDB and chromadb, in one run (issue 16).

    PYTHONPATH=$PWD python bench/scale.py --n 100000,300000 --dist clustered,gaussian --json scale.json
    PYTHONPATH=$PWD python bench/scale.py --n 1000000 --dist clustered --settle-s 60 --json scale-1m.json
    python bench/scale.py --report scale.json scale-1m.json     # tables again, with growth 100k -> 1M

For each N and distribution (512-d unit vectors; "clustered" is 1,000 centres + noise, like CLIP's
embedding sets; "gaussian" is the hard case for every graph index), each system runs these phases on
one store, each phase in a fresh process of the system's own interpreter (``bench/scale_worker.py``):

1. ingest: add N records in batches of 5,000 from Python (LanceDB: then build its IVF_HNSW_SQ index),
   then query for the last record until it is found; records/s over that whole time. Then close.
2. open + first query on the clean store; a latency trace for ``--settle-s`` seconds, from which "full
   speed" is read (the first moment from which the median of the next 9 queries and that of the rest
   of the trace are under 1.5x the steady p50); query p50 and recall@10 on ``--queries`` near-duplicate
   queries (a stored vector + noise of norm 0.1, normalised; exact ground truth by numpy brute force);
   the cold-filter p50: a new range filter ``i in [lo, lo + N/10)`` on every query, so no filter cache
   can help.
3. a fresh process opens the store, adds 10 records and closes: the time of ``close()``.
4. a writer adds 5,000 records and SIGKILLs itself the moment ``add`` returns; then a fresh process
   opens the store and answers a first query for the last acknowledged record (timed; was it found?),
   traces latency to full speed, and checks that the killed batch is findable.

Disk (allocated bytes after phase 1) and peak RSS (``ru_maxrss`` of the ingest and the query process)
are divided by the raw float32 bytes (N x d x 4). Every figure is also given as the ratio ours/peer
(from the same run: the machine is shared and noisy, so compare ratios, never times across runs).

Systems: ``ours`` (``import retrieval`` from PYTHONPATH), ``lance`` (LanceDB IVF_HNSW_SQ, cosine, default
nprobes 20, ef = ``--lance-ef``), ``lance-flat`` (LanceDB without an index: exact scans), ``chroma``
(chromadb 1.5.9). Peers live in their own venvs (``../shared/bench/README.md``)::

    python3 -m venv /tmp/lance-peer && /tmp/lance-peer/bin/pip install -q lancedb numpy psutil pyarrow
    python3 -m venv /tmp/chroma-peer && /tmp/chroma-peer/bin/pip install -q chromadb==1.5.9 numpy psutil

Disk needed: the vector file (N + 5,010 rows) plus one store at a time (stores are deleted after their
system is measured unless ``--keep``); at 1M about 2 GB + 5 GB. Time at 1M: chromadb alone ingests at
~500 records/s (over half an hour); leave it out with ``--systems ours,lance,lance-flat`` if needed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data  # noqa: E402
import scale_report  # noqa: E402

WORKER = Path(__file__).resolve().parent / "scale_worker.py"
SYSTEMS = ("ours", "lance", "lance-flat", "chroma")
DISTS = ("clustered", "gaussian")
CHROMA_PYTHONS = ["/tmp/chroma-peer/bin/python", "/tmp/chroma-peer2/bin/python"]
KILL_ROWS = 10 + 5_000  # rows beyond N: the 10-record write and the killed writer's batch


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        runs = [run for path in args.report for run in json.loads(Path(path).read_text())["runs"]]
        scale_report.print_all(runs)
        return 0
    pythons = {system: python_for(system, args) for system in args.systems}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scale-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = {"params": {k: v for k, v in vars(args).items() if k != "report"}, "machine": machine(), "runs": []}
    out["params"]["pythons"] = pythons
    try:
        for dist in args.dist:
            for n in args.n:
                run = measure(n, dist, args, pythons, workdir)
                out["runs"].append(run)
                scale_report.print_run(run)
                if args.json:
                    Path(args.json).write_text(json.dumps(out, indent=1))
        scale_report.print_growth(out["runs"])
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def measure(n: int, dist: str, args, pythons: dict[str, str], workdir: Path) -> dict:
    """Data, queries and ground truth for one (N, distribution), then every system in turn."""
    workload = scale_data.Workload(d=args.d, dist=dist, seed=args.seed)
    vectors = workdir / f"{dist}-{n}-{args.d}.f32"
    t = time.perf_counter()
    workload.generate(vectors, n + KILL_ROWS)
    queries, sources = scale_data.near_duplicate_queries(vectors, args.d, n, args.queries, args.seed)
    truth = scale_data.exact_top_k(vectors, args.d, queries, 0, n)
    nf = min(args.filter_queries, args.queries)
    windows = scale_data.filter_windows(n, nf, args.seed)
    filter_truth = np.concatenate([
        scale_data.exact_top_k(vectors, args.d, queries[j : j + 1], int(lo), int(hi))
        for j, (lo, hi) in enumerate(windows)
    ])
    query_file = workdir / f"{dist}-{n}-queries.npz"
    np.savez(query_file, queries=queries, truth=truth,
             filter_queries=queries[:nf], filter_windows=windows, filter_truth=filter_truth)
    log(f"== N={n:,} {dist}: data, queries and exact ground truth in {time.perf_counter() - t:.1f} s")
    run = {"n": n, "dist": dist, "d": args.d, "raw_bytes": n * args.d * 4,
           "top1_is_source": round(float(np.mean(truth[:, 0] == sources)), 3), "systems": {}}
    for system in args.systems:
        store = workdir / f"{system}-{dist}-{n}"
        shutil.rmtree(store, ignore_errors=True)
        common = ["--system", system, "--path", str(store), "--vectors", str(vectors), "--queries", str(query_file),
                  "--n", str(n), "--d", str(args.d), "--batch", str(args.batch), "--settle-s", str(args.settle_s)]
        if args.lance_ef:
            common += ["--lance-ef", str(args.lance_ef)]
        if args.wide_ef:
            common += ["--wide-ef", str(args.wide_ef)]
        phases = run_phases(system, pythons[system], common, store, workdir, args.timeout)
        run["systems"][system] = {"phases": phases, "metrics": scale_report.metrics(phases, run["raw_bytes"])}
        if not args.keep:
            shutil.rmtree(store, ignore_errors=True)
    if not args.keep:
        vectors.unlink()
        query_file.unlink()
    return run


def run_phases(system: str, python: str, common: list[str], store: Path, workdir: Path, timeout: float) -> dict:
    """The five phases in order; a failed phase ends this system's run (later ones need its store)."""
    phases: dict = {}
    for role in ("ingest", "open", "write10", "killwrite", "recover"):
        t = time.perf_counter()
        result = run_worker(role, system, python, common, workdir, timeout)
        log(f"   {system:10s} {role:9s} {time.perf_counter() - t:7.1f} s  {brief(result)}")
        phases[role] = result
        if "error" in result:
            break
        if role == "ingest":
            phases["disk"] = disk_bytes(store)
    if "error" not in phases.get("recover", {"error": 1}):
        phases["disk_end"] = disk_bytes(store)
    return phases


def run_worker(role: str, system: str, python: str, common: list[str], workdir: Path, timeout: float) -> dict:
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
    if system != "ours":
        env.pop("PYTHONPATH", None)  # a peer's venv sees only its own packages
    log_file = workdir / f"{system}-{role}.log"
    with open(log_file, "w") as err:
        try:
            p = subprocess.run([python, str(WORKER), "--role", role, *common], stdout=subprocess.PIPE,
                               stderr=err, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"{role} ran past {timeout:.0f} s (--timeout)"}
    lines = p.stdout.splitlines()
    if role == "killwrite":
        added = [line for line in lines if line.startswith("ADDED ")]
        if p.returncode != -9 or not added:
            return {"error": f"writer exited {p.returncode} (expected SIGKILL after add): {tail(log_file)}"}
        return {"add_s": float(added[-1].split()[1])}
    results = [line for line in lines if line.startswith("RESULT ")]
    if p.returncode != 0 or not results:
        return {"error": f"exit {p.returncode}: {tail(log_file)}"}
    return json.loads(results[-1][len("RESULT "):])


def disk_bytes(path: Path) -> int:
    """Allocated bytes under ``path`` (sparse files count what they occupy)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def python_for(system: str, args) -> str:
    if system == "ours":
        return args.ours_python
    if system in ("lance", "lance-flat"):
        return _usable(args.lance_python, "lancedb")
    candidates = [args.chroma_python] if args.chroma_python else CHROMA_PYTHONS
    for python in candidates:
        if _imports(python, "chromadb"):
            return python
    sys.exit(f"error: no chromadb in {' or '.join(candidates)}; create the venv (see `python bench/scale.py --help`) "
             "or leave chroma out with --systems ours,lance,lance-flat")


def _usable(python: str, module: str) -> str:
    if not _imports(python, module):
        sys.exit(f"error: {python} cannot import {module}; create the venv (see `python bench/scale.py --help`)")
    return python


def _imports(python: str, module: str) -> bool:
    if not Path(python).exists():
        return False
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def machine() -> dict:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "started": started}
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def brief(result: dict) -> str:
    if "error" in result:
        return "ERROR " + result["error"][-300:]
    keys = ("records_per_s", "open_first_query_s", "query_p50_ms", "recall_at_10", "close_s", "add_s",
            "killed_batch_found")
    return " ".join(f"{k}={result[k]}" for k in keys if k in result)


def tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:].strip()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100000,300000", help="comma list of collection sizes (default 100000,300000)")
    ap.add_argument("--dist", default="clustered,gaussian", help="comma list of clustered, gaussian")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200, help="near-duplicate queries for p50 and recall@10")
    ap.add_argument("--filter-queries", type=int, default=50, help="cold-filter queries (each its own filter)")
    ap.add_argument("--batch", type=int, default=5_000, help="records per add() during ingest")
    ap.add_argument("--settle-s", type=float, default=5.0, help="seconds of latency trace after each open")
    ap.add_argument("--lance-ef", type=int, default=100, help="LanceDB HNSW ef (0: LanceDB's default, 1.5 x k)")
    ap.add_argument("--wide-ef", type=int, default=400,
                    help="also measure query p50 and recall@10 at this search ef (ours: ef_search; 0: skip)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed to one phase")
    ap.add_argument("--ours-python", default=sys.executable)
    ap.add_argument("--lance-python", default="/tmp/lance-peer/bin/python")
    ap.add_argument("--chroma-python", default=None, help="default: /tmp/chroma-peer, else /tmp/chroma-peer2")
    ap.add_argument("--workdir", default=None, help="where data and stores go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the data and stores")
    ap.add_argument("--json", default=None, help="write every figure here (rewritten after each N)")
    ap.add_argument("--report", nargs="+", default=None, help="print the tables of earlier --json files and stop")
    args = ap.parse_args(argv)
    try:
        args.n = [int(x) for x in args.n.split(",") if x]
    except ValueError:
        ap.error(f"--n {args.n!r}: give comma-separated integers, e.g. --n 100000,300000")
    args.dist = [x for x in args.dist.split(",") if x]
    args.systems = [x for x in args.systems.split(",") if x]
    for value, allowed, flag in ((args.dist, DISTS, "--dist"), (args.systems, SYSTEMS, "--systems")):
        bad = [x for x in value if x not in allowed]
        if bad:
            ap.error(f"{flag} {bad[0]!r}: choose from {', '.join(allowed)}")
    if min(args.n, default=0) < max(args.batch, 1000):
        ap.error(f"--n {min(args.n)}: each N must be at least the batch size ({args.batch}) and 1000")
    if min(args.n) < args.queries:
        ap.error(f"--queries {args.queries}: at most the smallest N ({min(args.n)}), one stored vector per query")
    return args


if __name__ == "__main__":
    sys.exit(main())
