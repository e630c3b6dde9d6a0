"""Images/s of the embedding job on Ray Data against the single-process job, on the same files, in one run.

    python bench/ray_embed.py [--n 500] [--width 320 --height 240] [--model tiny-shapes]
                              [--batch-size 64] [--address ADDR] [--gpus-per-worker N] [--workers N]

Both jobs write the same Parquet shards from the same JPEGs (photo-like, quality 90):

* **single**: ``retrieval embed SRC --out A`` (this process: decode threads + the model);
* **ray**: ``retrieval embed SRC --out B --ray`` on a local Ray (``ray.init`` timed apart, as a
  cluster is started once and serves many jobs) or on ``--address``.

Each job's time includes loading its model (the Ray job: starting its actor pool, one model load
per actor), so on a few hundred images on a CPU the figure is mostly Ray's fixed cost. Each job
also runs on 3N images: the extra 2N over the extra time is the rate past start-up. Prints one
JSON object.
On a GPU host, give ``--gpus-per-worker 1`` (and the single job runs on the GPU with ``--device auto``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.embed_throughput import make_files  # noqa: E402
from retrieval.cli import main  # noqa: E402


def run(args: list[str]) -> float:
    """Seconds a ``retrieval`` command takes; its summary line is kept for the report."""
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(args)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"`retrieval {' '.join(args)}` exited {code}: {out.getvalue()}")
    print(out.getvalue().strip(), file=sys.stderr)
    return seconds


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--model", default="tiny-shapes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--address", default=None)
    parser.add_argument("--gpus-per-worker", type=float, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    opts = parser.parse_args()

    import logging

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photos"
        src.mkdir()
        files = make_files(3 * opts.n, opts.width, opts.height, str(src))
        small = Path(tmp) / "first-n.txt"
        small.write_text("\n".join(files[: opts.n]) + "\n")
        common = ["--model", opts.model, "--batch-size", str(opts.batch_size), "--quiet"]
        # Warm this process (torch, open_clip, the model files in the page cache) so the single job's
        # time is its work plus its own model load, as a `retrieval embed` in a warm shell would be.
        run(["embed", str(small), "--out", str(Path(tmp) / "warm"), "--device", opts.device] + common)

        single = {k: run(["embed", source, "--out", str(Path(tmp) / f"single-{k}"), "--device", opts.device] + common)
                  for k, source in (("n", str(small)), ("3n", str(src)))}

        started = time.perf_counter()
        if opts.address:
            ray.init(address=opts.address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        init_s = time.perf_counter() - started
        extra = ["--shard-size", str(opts.shard_size)]
        if opts.gpus_per_worker is not None:
            extra += ["--gpus-per-worker", str(opts.gpus_per_worker)]
        if opts.workers is not None:
            extra += ["--workers", str(opts.workers)]
        # Warm the cluster's worker processes the same way (imports, page cache); each job still
        # starts its own actor pool, which loads the model: that is in the timed jobs.
        run(["embed", str(small), "--out", str(Path(tmp) / "ray-warm"), "--ray"] + extra + common)
        on_ray = {k: run(["embed", source, "--out", str(Path(tmp) / f"ray-{k}"), "--ray"] + extra + common)
                  for k, source in (("n", str(small)), ("3n", str(src)))}
        ray.shutdown()

    def rates(seconds: dict[str, float]) -> tuple[float, float]:
        """(images/s of the N-image job, images/s past start-up: the extra 2N images over the extra time)."""
        return opts.n / seconds["n"], 2 * opts.n / max(seconds["3n"] - seconds["n"], 1e-9)

    (single_rate, single_marginal), (ray_rate, ray_marginal) = rates(single), rates(on_ray)
    print(json.dumps({
        "n": opts.n, "size": f"{opts.width}x{opts.height}", "model": opts.model, "cpus": os.cpu_count(),
        "single_s": {k: round(v, 2) for k, v in single.items()},
        "ray_s": {k: round(v, 2) for k, v in on_ray.items()},
        "single_images_per_s": round(single_rate, 1),
        "ray_images_per_s": round(ray_rate, 1),
        "ray_vs_single": round(ray_rate / single_rate, 3),
        "single_past_startup_images_per_s": round(single_marginal, 1),
        "ray_past_startup_images_per_s": round(ray_marginal, 1),
        "ray_vs_single_past_startup": round(ray_marginal / single_marginal, 3),
        "ray_init_s": round(init_s, 2),
    }))


if __name__ == "__main__":
    main_bench()
