"""The embedding job on Ray Data (``embed --ray`` / ``index --ray``) on one local Ray cluster.

One module-scoped cluster (``ray.init(num_cpus=4)``: with 2 logical CPUs a plan with an actor
pool never starts on a 2-core machine) serves every test, so the module costs one Ray start.
The tests need the ``ray`` extra (``pip install -e ".[ray]"``, which CI installs) and skip,
saying so, without it; the checks that Ray is never imported without ``--ray`` always run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image, ImageDraw

import retrieval
from retrieval.cli import main
from retrieval.jobs.parquet import read_shards

REPO = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """A local Ray for the module; yields its address (for a second driver in a subprocess)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (CI installs it)")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install -e '.[ray]'")
    import logging

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _jpegs(folder: Path, count: int, seed: int = 0) -> list[str]:
    """``count`` JPEGs of coloured shapes, of assorted sizes; returns their names."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        w, h = rng.randint(48, 160), rng.randint(48, 160)
        image = Image.new("RGB", (w, h), rng.choice(COLOURS))
        box = [rng.randint(0, w // 3), rng.randint(0, h // 3), rng.randint(2 * w // 3, w), rng.randint(2 * h // 3, h)]
        shape = ImageDraw.Draw(image).ellipse if i % 2 else ImageDraw.Draw(image).rectangle
        shape(box, fill=rng.choice(COLOURS))
        name = f"img_{i:05d}.jpg"
        image.save(folder / name, "JPEG", quality=90)
        names.append(name)
    return names


def _with_bad_files(folder: Path) -> dict[str, str]:
    """Bad files next to the good ones; returns id -> a word its reason must contain."""
    good = (folder / "img_00000.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 40)
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.png").write_bytes(b"not an image at all")
    return {"corrupt.jpg": "cannot decode", "truncated.jpg": "truncated", "notes.png": "cannot decode"}


def _shard_rows(folder: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    ids: list[str] = []
    vectors: dict[str, np.ndarray] = {}
    for shard_ids, _, shard_vectors, _ in read_shards(folder):
        ids += shard_ids
        vectors.update(zip(shard_ids, shard_vectors))
    return ids, vectors


def test_full_run_reports_bad_files_matches_single_process_and_rerun_adds_nothing(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "photos"
    good = _jpegs(src, 40)
    bad = _with_bad_files(src)
    listing = tmp_path / "list.txt"  # a list source, so a missing file is listed too
    missing = str(tmp_path / "gone.jpg")
    listing.write_text("\n".join([str(src / n) for n in good + sorted(bad)] + [missing]) + "\n")
    shards, db, report = tmp_path / "shards", str(tmp_path / "db"), tmp_path / "report.jsonl"
    common = ["--quiet", "--batch-size", "8", "--shard-size", "12", "--report", str(report)]

    # index --ray: embed on Ray into shards, then load them into a collection.
    assert main(["index", str(listing), "--ray", "--out", str(shards), "--path", db, "--collection", "photos"]
                + common) == 0
    out = capsys.readouterr().out
    assert "listed 44 = 40 embedded + 0 already stored + 4 reported" in out
    assert "indexed 40 images into collection 'photos'" in out
    reasons = {r["id"]: r["reason"] for r in map(json.loads, report.read_text().splitlines())}
    assert set(reasons) == {str(src / n) for n in bad} | {missing}  # ids of a .txt list are its URIs
    for name, word in bad.items():
        assert word in reasons[str(src / name)] and str(src / name) in reasons[str(src / name)]
    assert "no such file" in reasons[missing]

    ids, ray_vectors = _shard_rows(shards)
    assert sorted(ids) == sorted(str(src / n) for n in good)  # each good image exactly once
    with retrieval.PersistentClient(path=db) as client:
        photos = client.get_collection("photos")
        assert photos.count() == 40
        stored = photos.get(ids=ids[:3], include=["embeddings", "uris"])
        assert stored["uris"] == ids[:3]
        np.testing.assert_allclose(stored["embeddings"], [ray_vectors[i] for i in ids[:3]], atol=1e-6)

    # The single-process job on the same files: same ids, same vectors.
    single = tmp_path / "single"
    assert main(["embed", str(listing), "--out", str(single), "--device", "cpu", "--quiet", "--batch-size", "8",
                 "--report", str(tmp_path / "single.jsonl")]) == 0
    capsys.readouterr()
    single_ids, single_vectors = _shard_rows(single)
    assert sorted(single_ids) == sorted(ids)
    for id_ in ids:
        a, b = ray_vectors[id_], single_vectors[id_]
        assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.9999, id_

    # A rerun finds every good image stored and writes nothing; the bad ones are reported again.
    files = sorted(p.name for p in shards.glob("part-*.parquet"))
    assert main(["embed", str(listing), "--ray", "--out", str(shards)] + common) == 0
    assert "embedded 0 images" in capsys.readouterr().out
    assert sorted(p.name for p in shards.glob("part-*.parquet")) == files
    assert len(report.read_text().splitlines()) == 4

    # index --ray --host: the same shards (all finished: no Ray work) streamed into a server.
    from tests.http_server import RunningServer

    server = RunningServer(tmp_path / "srv")
    try:
        assert main(["index", str(listing), "--ray", "--out", str(shards), "--host", "127.0.0.1", "--port",
                     str(server.port), "--collection", "remote"] + common) == 0
        assert "indexed 40 images into collection 'remote' at 127.0.0.1" in capsys.readouterr().out
        remote = retrieval.HttpClient(host="127.0.0.1", port=server.port).get_collection("remote")
        assert remote.count() == 40 and remote.get(ids=ids[:1])["ids"] == ids[:1]
    finally:
        server.stop()


def _shard_count(folder: Path) -> int:
    return len(list(folder.glob("part-*.parquet"))) if folder.exists() else 0


@pytest.mark.slow  # ~40 s here: a second driver process (torch, Ray) and two actor starts
def test_a_job_killed_mid_run_then_rerun_stores_each_image_once(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, shards = tmp_path / "photos", tmp_path / "shards"
    names = _jpegs(src, 1200, seed=1)
    args = ["embed", str(src), "--ray", "--out", str(shards), "--quiet", "--batch-size", "8", "--shard-size", "24"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    # A second driver on the module's cluster, killed as a user's Ctrl-\ or an OOM kill would.
    job = subprocess.Popen([sys.executable, "-m", "retrieval.cli", *args, "--address", ray_cluster],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and job.poll() is None and _shard_count(shards) < 2:
            time.sleep(0.02)
        assert job.poll() is None, f"the job ended before it could be killed: {job.stdout.read()[-800:]!r}"
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    partial = len(_shard_rows(shards)[0])
    assert 0 < partial < len(names)

    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"embedded {len(names) - partial} images" in out and f"{partial} already stored" in out
    ids, _ = _shard_rows(shards)
    assert len(ids) == len(set(ids)) == len(names)
    assert sorted(ids) == sorted(names)


def _embedding_actors() -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::MapWorker") and "ImageEmbedder" in cmdline:
            found.append(proc)
    return found


def test_an_actor_killed_mid_job_loses_nothing(ray_cluster: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src, shards = tmp_path / "photos", tmp_path / "shards"
    names = _jpegs(src, 1200, seed=2)
    result: list[int] = []
    job = threading.Thread(target=lambda: result.append(main(
        ["embed", str(src), "--ray", "--out", str(shards), "--quiet", "--batch-size", "8", "--shard-size", "24",
         "--workers", "1"])))
    job.start()
    killed = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and job.is_alive() and not killed:
        actors = _embedding_actors()
        if actors and _shard_count(shards) >= 1:  # mid-job: some shards written, more in flight
            actors[0].send_signal(signal.SIGKILL)
            killed.append(actors[0].pid)
        time.sleep(0.02)
    job.join(timeout=180)
    assert killed, "no embedding actor was found to kill before the job ended"
    assert not job.is_alive() and result == [0]
    out = capsys.readouterr().out
    assert f"listed {len(names)} = {len(names)} embedded + 0 already stored + 0 reported" in out
    ids, _ = _shard_rows(shards)
    assert sorted(ids) == sorted(names) and len(ids) == len(set(ids))


def test_without_ray_the_flag_says_how_to_install_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when the extra is missing
    assert main(["embed", str(tmp_path), "--out", str(tmp_path / "out"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --ray needs Ray Data")
    assert "pip install 'retrieval[ray]'" in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_ray_options_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(tmp_path), "--out", str(tmp_path / "o"), "--ray", "--shard-size", "0"]) == 2
    assert "--shard-size must be a positive integer; got 0" in capsys.readouterr().err
    assert main(["index", "--from-parquet", str(tmp_path), "--ray"]) == 2
    assert "--ray needs a SOURCE" in capsys.readouterr().err


def test_import_retrieval_and_the_plain_cli_never_import_ray() -> None:
    code = (
        "import sys, retrieval, retrieval.cli\n"
        "retrieval.cli.build_parser().parse_args(['embed', 'x', '--out', 'y'])\n"
        "import retrieval.jobs.commands, retrieval.jobs.ray_commands, retrieval.jobs.ray_job\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
