"""What a sync costs next to a full index of the same folder, and how fast ``--watch`` applies one change.

    python bench/sync.py [--n 10000] [--changed 0.01] [--device cpu] [--batch-size 64] [--watch-trials 5]

On a folder of N images (the bundled shape pictures under N names):

* full index: list, plan and embed + write all N into an empty collection;
* sync: after 1% of the files are replaced by other pictures, the same command on the same folder:
  one detailed listing (a stat per file), one read of the stored fingerprints, the diff, and
  re-embedding only the changed files. Its cost as a fraction of the full index is the figure
  (target <= 5%), with the listing / stored read / embedding split shown;
* watch: the time from replacing one file to its new fingerprint being stored (and its new vector
  queryable), under ``watch_source`` with file-system events; median and max of the trials
  (target <= 2 s locally).

Both jobs run in this process with the model already loaded (the CLI adds the same process
start and model load to each). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import retrieval  # noqa: E402
from embedders import build_embedding_function  # noqa: E402
from embedders.assets import gallery_dir  # noqa: E402
from loaders import ImageLoader  # noqa: E402
from retrieval.jobs.sources import list_source, stat_items  # noqa: E402
from retrieval.jobs.sync import ReportWriter, apply_sync, plan_sync, stored_records  # noqa: E402
from retrieval.jobs.watch import watch_source  # noqa: E402

PICTURES = sorted(gallery_dir().glob("*.png"))


def make_folder(folder: Path, n: int) -> list[Path]:
    """N images in 100 subfolders (a photo library's shape), cycling through the bundled pictures."""
    paths = []
    for i in range(n):
        path = folder / f"{i % 100:02d}" / f"img_{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PICTURES[i % len(PICTURES)], path)
        paths.append(path)
    return paths


def sync(source: str, collection, ef, loader, batch_size: int) -> dict:  # noqa: ANN001 - bench plumbing
    """One ``retrieval index`` run's work, timed in its three parts."""
    t0 = time.perf_counter()
    items = stat_items(list_source(source))
    t1 = time.perf_counter()
    stored = stored_records(collection)
    t2 = time.perf_counter()
    plan = plan_sync(items, stored)
    result = apply_sync(plan, collection, ef, loader, prune=False, batch_size=batch_size, progress=False)
    t3 = time.perf_counter()
    return {"seconds": t3 - t0, "list_s": t1 - t0, "read_stored_s": t2 - t1, "diff_embed_write_s": t3 - t2,
            "added": result.added, "updated": result.updated, "unchanged": result.unchanged}


def watch_latency(source: str, paths: list[Path], collection, ef, loader, trials: int) -> list[float]:  # noqa: ANN001
    """Seconds from replacing a file to its new fingerprint being stored, per trial."""
    stop = threading.Event()
    ready = threading.Event()
    report = ReportWriter(os.path.join(tempfile.gettempdir(), "bench-sync-report.jsonl"))

    def echo(line: str) -> None:
        if line.startswith("watching"):
            ready.set()

    thread = threading.Thread(target=watch_source, args=(source, collection, ef, loader), kwargs=dict(
        prune=False, batch_size=64, progress=False, poll_interval=2.0, report=report, stop=stop, echo=echo),
        daemon=True)
    thread.start()
    ready.wait(600)
    out = []
    try:
        for trial in range(trials):
            path = paths[trial * 7 % len(paths)]
            id_ = path.relative_to(source).as_posix()
            current = path.read_bytes()
            replacement = next(p for p in PICTURES[trial + 1:] + PICTURES if p.read_bytes() != current)
            time.sleep(0.5)
            started = time.perf_counter()
            shutil.copyfile(replacement, path)
            size = path.stat().st_size
            mtime = path.stat().st_mtime
            while True:
                meta = collection.get(ids=[id_], include=["metadatas"])["metadatas"][0]
                if meta.get("file_size") == size and meta.get("file_mtime") == mtime:
                    break
                if time.perf_counter() - started > 30:
                    raise RuntimeError(f"the watch did not apply the change to {id_} in 30 s")
                time.sleep(0.005)
            out.append(time.perf_counter() - started)
    finally:
        stop.set()
        thread.join(60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of files replaced before the sync")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--watch-trials", type=int, default=5)
    args = parser.parse_args()

    ef = build_embedding_function("open_clip", {"model_name": "tiny-shapes"}, device=args.device)
    ef(["warm up"])  # load the model before any clock starts
    loader = ImageLoader()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        paths = make_folder(folder, args.n)
        client = retrieval.PersistentClient(path=os.path.join(tmp, "db"))
        collection = client.create_collection("photos", embedding_function=ef,
                                              configuration={"hnsw": {"space": "cosine"}})
        full = sync(str(folder), collection, ef, loader, args.batch_size)
        changed = paths[:: max(1, round(1 / args.changed))][: max(1, round(args.n * args.changed))]
        for i, path in enumerate(changed):
            shutil.copyfile(PICTURES[(i + 7) % len(PICTURES)], path)  # another picture: new content and size
        again = sync(str(folder), collection, ef, loader, args.batch_size)
        latencies = watch_latency(str(folder), paths, collection, ef, loader, args.watch_trials)
        client.close()
    print(json.dumps({
        "n": args.n, "changed": len(changed), "device": args.device,
        "full_index": {k: round(v, 3) if isinstance(v, float) else v for k, v in full.items()},
        "sync": {k: round(v, 3) if isinstance(v, float) else v for k, v in again.items()},
        "sync_over_full": round(again["seconds"] / full["seconds"], 4),
        "watch_apply_one_change_s": {"median": round(statistics.median(latencies), 3),
                                     "max": round(max(latencies), 3), "trials": len(latencies)},
    }, indent=1))


if __name__ == "__main__":
    main()
