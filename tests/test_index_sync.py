"""`retrieval index` reruns are syncs: fingerprints, edits, deletes, renames, --prune, --dry-run, photo metadata,
list columns, checksums, --host into a live server, and SIGKILL at chosen points."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image

import retrieval
from embedders.assets import gallery_dir
from embedders.shapes import render_shape
from retrieval.cli import main

REPO = Path(__file__).resolve().parents[1]
GALLERY = gallery_dir()
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
FINGERPRINT_KEYS = ("file_size", "file_mtime")


def _bmp(colour: str, shape: str, seed: int = 0) -> bytes:
    """A 64x64 BMP: every one is exactly 12,342 bytes, so content can change while the size stays."""
    buf = io.BytesIO()
    render_shape(colour, shape, size=64, rng=np.random.default_rng(seed)).save(buf, "BMP")
    return buf.getvalue()


def _copy(name: str, dest: Path) -> None:
    shutil.copyfile(GALLERY / f"{name}.png", dest)


def _args(source: str, db: str, *extra: str) -> list[str]:
    return ["index", source, "--path", db, "--collection", "photos", "--device", "cpu", "--quiet",
            "--batch-size", "4", *extra]


def _report(path: Path) -> dict[str, tuple[str, str]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {line["id"]: (line["action"], line["reason"]) for line in lines}


def _stored(db: str) -> dict[str, tuple[dict, np.ndarray]]:
    with retrieval.PersistentClient(path=db) as client:
        got = client.get_collection("photos").get(include=["metadatas", "embeddings"])
    return {i: (m, np.asarray(e)) for i, m, e in zip(got["ids"], got["metadatas"], got["embeddings"])}


def _assert_matches_folder(db: str, src: Path) -> None:
    """The collection holds exactly the folder: one record per file, its fingerprint, its vector."""
    stored = _stored(db)
    files = sorted(p.name for p in src.iterdir())
    assert sorted(stored) == files
    reference = str(src.parent / "reference-db")
    shutil.rmtree(reference, ignore_errors=True)
    assert main(_args(str(src), reference)) == 0  # the folder indexed from scratch
    fresh = _stored(reference)
    for name in files:
        meta, vector = stored[name]
        stat = (src / name).stat()
        assert (meta["file_size"], meta["file_mtime"]) == (stat.st_size, stat.st_mtime), name
        np.testing.assert_allclose(vector, fresh[name][1], atol=1e-5, err_msg=name)


def test_rerun_applies_edits_adds_deletes_and_renames(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src, db, report = tmp_path / "photos", str(tmp_path / "db"), tmp_path / "report.jsonl"
    src.mkdir()
    for name in ("red_circle", "green_triangle", "yellow_star", "white_cross", "purple_square"):
        _copy(name, src / f"{name}.png")  # no blue square among them
    (src / "tile.bmp").write_bytes(_bmp("green", "circle"))
    (src / "old.bmp").write_bytes(_bmp("yellow", "triangle"))
    args = _args(str(src), db, "--report", str(report))
    assert main(args) == 0
    assert "7 added, 0 updated, 0 removed, 0 unchanged, 0 skipped-bad" in capsys.readouterr().out
    before = _stored(db)
    assert main(args) == 0  # nothing changed: nothing embedded, no report written
    assert "indexed 0 images" in (out := capsys.readouterr().out) and "7 unchanged" in out

    then = (src / "tile.bmp").stat().st_mtime
    shutil.copyfile(GALLERY / "blue_square.png", src / "red_circle.png")  # new content, new size
    (src / "tile.bmp").write_bytes(_bmp("orange", "cross"))  # new content, same size, newer mtime
    os.utime(src / "tile.bmp", (then + 10, then + 10))
    (src / "old.bmp").write_bytes(_bmp("black", "star"))  # replaced by a file with an OLDER mtime
    os.utime(src / "old.bmp", (then - 1000, then - 1000))
    (src / "yellow_star.png").unlink()
    (src / "white_cross.png").rename(src / "renamed_cross.png")
    _copy("orange_circle", src / "new.png")

    import loaders.image

    read: list[str] = []
    real_read = loaders.image.read_bytes
    monkeypatch.setattr(loaders.image, "read_bytes", lambda uri, **kw: read.append(uri) or real_read(uri, **kw))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "indexed 5 images" in out
    assert "2 added, 3 updated, 0 removed, 2 unchanged, 0 skipped-bad, 2 gone (kept; rerun with --prune" in out
    # Unchanged files cost no read at all: only the changed and new ones were opened.
    assert sorted(read) == sorted(str(src / n) for n in ("red_circle.png", "tile.bmp", "old.bmp", "new.png",
                                                         "renamed_cross.png"))
    assert _report(report) == {
        "red_circle.png": ("update", "size changed (1666 -> 1327 bytes)"),
        "tile.bmp": ("update", "modification time changed"),
        "old.bmp": ("update", "modification time changed"),
        "new.png": ("add", "new file"),
        "renamed_cross.png": ("add", "new file"),
        "yellow_star.png": ("gone", "file is gone; kept (rerun with --prune to remove it)"),
        "white_cross.png": ("gone", "file is gone; kept (rerun with --prune to remove it)"),
    }
    after = _stored(db)
    assert len(after) == 9  # gone files are kept without --prune
    for name in ("red_circle.png", "tile.bmp", "old.bmp"):  # updated in place: same id, new vector
        assert not np.allclose(before[name][1], after[name][1], atol=1e-3), name
    for name in ("green_triangle.png", "yellow_star.png"):
        np.testing.assert_array_equal(before[name][1], after[name][1])
    with retrieval.PersistentClient(path=db) as client:
        hit = client.get_collection("photos").query(query_texts=["a blue square"], n_results=1)["ids"][0][0]
    assert hit == "red_circle.png"  # the red circle replaced by a blue square is found as one

    assert main([*args, "--prune"]) == 0
    assert "0 added, 0 updated, 2 removed, 7 unchanged" in capsys.readouterr().out
    assert _report(report) == {"yellow_star.png": ("remove", "file is gone"),
                               "white_cross.png": ("remove", "file is gone")}
    _assert_matches_folder(db, src)


def _exif_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "Canon EOS 5D", 6  # make, model, rotated 90
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x9011] = "2024:07:01 14:03:22", "+02:00"  # taken, and the camera's UTC offset
    render_shape("red", "circle", size=96, rng=np.random.default_rng(3)).resize((96, 64)).save(
        path, "JPEG", exif=exif)


def test_photo_metadata_and_fingerprints_are_stored_and_filterable(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src, db = tmp_path / "photos", str(tmp_path / "db")
    src.mkdir()
    _exif_jpeg(src / "camera.jpg")
    _copy("green_star", src / "plain.png")
    assert main(_args(str(src), db)) == 0
    with retrieval.PersistentClient(path=db) as client:  # reopened: everything survived
        col = client.get_collection("photos")
        got = dict(zip(*(lambda g: (g["ids"], g["metadatas"]))(col.get(include=["metadatas"]))))
        stat = (src / "camera.jpg").stat()
        assert got["camera.jpg"] == {
            "file": "camera.jpg", "file_size": stat.st_size, "file_mtime": stat.st_mtime,
            "width": 64, "height": 96, "format": "JPEG",  # as shown: orientation 6 turns 96x64 upright
            "date_taken": "2024-07-01T14:03:22+02:00", "date_taken_ts": 1719835402,
            "camera_make": "Canon", "camera_model": "Canon EOS 5D", "orientation": 6,
        }
        with Image.open(src / "plain.png") as im:
            size = im.size
        assert {k: v for k, v in got["plain.png"].items() if not k.startswith("file")} == {
            "width": size[0], "height": size[1], "format": "PNG"}  # no EXIF: no EXIF keys
        july = {"$and": [{"date_taken_ts": {"$gte": 1719792000}}, {"date_taken_ts": {"$lt": 1719878400}}]}
        assert col.get(where=july)["ids"] == ["camera.jpg"]
        assert col.get(where={"camera_make": "Canon"})["ids"] == ["camera.jpg"]

    # The photo is replaced by one without EXIF: its stale camera keys go, keys people added stay.
    with retrieval.PersistentClient(path=db) as client:
        client.get_collection("photos").update(ids=["camera.jpg"], metadatas=[{"album": "trip"}])
    Image.new("RGB", (30, 20), "blue").save(src / "camera.jpg", "JPEG")
    assert main(_args(str(src), db)) == 0
    assert "1 updated" in capsys.readouterr().out
    meta = _stored(db)["camera.jpg"][0]
    assert {k: v for k, v in meta.items() if not k.startswith("file")} == {
        "width": 30, "height": 20, "format": "JPEG", "album": "trip"}


class ETagMemoryFS(MemoryFileSystem):
    """memory:// with an object store's ETag (MD5 of the content) and a clock that never moves."""

    protocol = "etagmem"
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(str(path).removeprefix("etagmem://"))

    def _with_etag(self, info: dict) -> dict:
        if info.get("type") == "file":
            info = {**info, "mtime": 1000.0, "ETag": f'"{hashlib.md5(self.cat_file(info["name"])).hexdigest()}"'}
        return info

    def info(self, path: str, **kwargs: object) -> dict:
        return self._with_etag(super().info(path, **kwargs))

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: object) -> object:
        out = super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        return {name: self._with_etag(info) for name, info in out.items()} if detail else out

    def ls(self, path: str, detail: bool = True, **kwargs: object) -> list:
        out = super().ls(path, detail=detail, **kwargs)
        return [self._with_etag(i) for i in out] if detail else out


def test_a_checksum_catches_what_size_and_mtime_miss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fsspec.register_implementation("etagmem", ETagMemoryFS, clobber=True)
    fs = fsspec.filesystem("etagmem")
    fs.pipe({"/album/a.bmp": _bmp("red", "circle"), "/album/b.bmp": _bmp("green", "cross")})
    db = str(tmp_path / "db")
    assert main(_args("etagmem://album", db)) == 0
    assert "2 added" in capsys.readouterr().out
    assert _stored(db)["a.bmp"][0]["file_checksum"] == hashlib.md5(_bmp("red", "circle")).hexdigest()

    # Same size, same (frozen) mtime, other content: only the checksum can tell, and it does.
    fs.pipe("/album/a.bmp", _bmp("blue", "square"))
    fs.pipe("/album/b.bmp", _bmp("green", "cross"))  # rewritten with identical bytes: nothing to do
    assert main(_args("etagmem://album", db, "--report", str(tmp_path / "r.jsonl"))) == 0
    assert "1 added" not in (out := capsys.readouterr().out) and "1 updated, 0 removed, 1 unchanged" in out
    assert _report(tmp_path / "r.jsonl") == {"a.bmp": ("update", "checksum changed")}

    # A local disk keeps no checksum: a same-size replacement whose mtime is set back to the exact old
    # value is the one change a sync cannot see (documented); any other mtime is caught (see above).
    src = tmp_path / "local"
    src.mkdir()
    (src / "a.bmp").write_bytes(_bmp("red", "circle"))
    assert main(_args(str(src), str(tmp_path / "db2"))) == 0
    old = (src / "a.bmp").stat()
    (src / "a.bmp").write_bytes(_bmp("blue", "square"))
    os.utime(src / "a.bmp", ns=(old.st_atime_ns, old.st_mtime_ns))
    capsys.readouterr()
    assert main(_args(str(src), str(tmp_path / "db2"))) == 0
    assert "1 unchanged" in capsys.readouterr().out


def test_list_columns_become_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    db = str(tmp_path / "db")
    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri", "caption", "year", "zip", "rating"])
        writer.writerow(["a", str(GALLERY / "red_circle.png"), "a red thing", "2019", "02134", "4.5"])
        writer.writerow(["b", str(GALLERY / "green_star.png"), "", "2020", "", "-1"])
    assert main(_args(str(tmp_path / "list.csv"), db)) == 0
    assert "2 added" in capsys.readouterr().out
    meta = {i: {k: v for k, v in m.items() if not k.startswith("file")} for i, (m, _) in _stored(db).items()}
    photo = {"width": 96, "height": 96, "format": "PNG"}
    assert meta == {"a": {**photo, "caption": "a red thing", "year": 2019, "zip": "02134", "rating": 4.5},
                    "b": {**photo, "year": 2020, "rating": -1}}
    assert main(_args(str(tmp_path / "list.csv"), db)) == 0
    assert "2 unchanged" in capsys.readouterr().out

    pq.write_table(pa.table({"uri": [str(GALLERY / "red_circle.png")], "label": ["circle"], "score": [0.25],
                             "day": pa.array([datetime.date(2024, 5, 1)], pa.date32())}), tmp_path / "l.parquet")
    assert main(["index", str(tmp_path / "l.parquet"), "--path", db, "--collection", "parquet", "--quiet",
                 "--device", "cpu"]) == 0
    with retrieval.PersistentClient(path=db) as client:
        (m,) = client.get_collection("parquet").get(include=["metadatas"])["metadatas"]
    assert (m["label"], m["score"], m["day"]) == ("circle", 0.25, "2024-05-01")

    (tmp_path / "reserved.csv").write_text(f"uri,file_size\n{GALLERY / 'red_circle.png'},3\n")
    assert main(_args(str(tmp_path / "reserved.csv"), str(tmp_path / "db3"))) == 2
    assert "column 'file_size'" in capsys.readouterr().err and not (tmp_path / "db3").exists()
    pq.write_table(pa.table({"uri": ["x.png"], "tags": [["a", "b"]]}), tmp_path / "nested.parquet")
    assert main(_args(str(tmp_path / "nested.parquet"), str(tmp_path / "db3"))) == 2
    assert "column 'tags' holds list values" in capsys.readouterr().err and not (tmp_path / "db3").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, db = tmp_path / "photos", tmp_path / "db"
    src.mkdir()
    for name in ("red_circle", "green_star", "blue_cross"):
        _copy(name, src / f"{name}.png")
    assert main(_args(str(src), str(db), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.count("would add\t") == 3 and "would add 3, update 0" in out and "nothing written" in out
    assert not db.exists()  # not even the persist directory

    assert main(_args(str(src), str(db))) == 0
    before = _stored(str(db))
    (src / "green_star.png").unlink()
    shutil.copyfile(GALLERY / "blue_square.png", src / "red_circle.png")
    capsys.readouterr()
    assert main(_args(str(src), str(db), "--dry-run", "--prune")) == 0
    out = capsys.readouterr().out
    assert "would update\tred_circle.png\t(size changed" in out and "would remove\tgreen_star.png" in out
    assert "would add 0, update 1, remove 1; 1 unchanged; nothing written" in out
    after = _stored(str(db))
    assert sorted(after) == sorted(before)
    for name, (meta, vector) in before.items():
        assert after[name][0] == meta
        np.testing.assert_array_equal(after[name][1], vector)

    assert main(_args(str(src), str(db), "--dry-run", "--watch")) == 2
    assert "drop --watch" in capsys.readouterr().err
    assert main(_args(str(src), str(db), "--watch", "--poll-interval", "0")) == 2
    assert "--poll-interval must be a positive number" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_into_a_live_server_with_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("retrieval.server.main")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                retrieval.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.2)
        src = tmp_path / "photos"
        src.mkdir()
        for name in ("red_circle", "green_star", "yellow_cross"):
            _copy(name, src / f"{name}.png")
        args = ["index", str(src), "--host", "127.0.0.1", "--port", str(port), "--collection", "remote",
                "--device", "cpu", "--quiet"]
        assert main(args) == 0
        assert "3 added" in capsys.readouterr().out
        assert main(args) == 0  # the fingerprints came back over the wire exactly: nothing to redo
        assert "3 unchanged" in capsys.readouterr().out
        shutil.copyfile(GALLERY / "blue_square.png", src / "red_circle.png")
        (src / "green_star.png").unlink()
        assert main([*args, "--prune"]) == 0
        assert "0 added, 1 updated, 1 removed, 1 unchanged" in capsys.readouterr().out
        col = retrieval.HttpClient(host="127.0.0.1", port=port).get_collection("remote")
        got = col.get(include=["metadatas"])
        assert sorted(got["ids"]) == ["red_circle.png", "yellow_cross.png"]
        meta = dict(zip(got["ids"], got["metadatas"]))["red_circle.png"]
        assert meta["file_size"] == (src / "red_circle.png").stat().st_size and meta["format"] == "PNG"
        assert col.query(query_texts=["a blue square"], n_results=1)["ids"][0][0] == "red_circle.png"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _run_until_paused(cmd: list[str], point: str, extra_env: dict[str, str] | None = None) -> None:
    """Run the driver until it prints PAUSED at ``point``, then SIGKILL it."""
    env = {**ENV, "SYNC_PAUSE_AT": point, **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "sync_driver.py"), *cmd],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(b"PAUSED" in line for line in lines):
            assert proc.poll() is None, f"ended before {point}: {proc.stderr.read().decode()[-800:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"never reached {point}"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)


def test_sigkill_at_any_point_of_a_sync_then_rerun_converges(tmp_path: Path) -> None:
    src, db = tmp_path / "photos", str(tmp_path / "db")
    src.mkdir()
    names = sorted(p.stem for p in GALLERY.glob("*.png"))[:24]
    for name in names:
        _copy(name, src / f"{name}.png")
    cmd = _args(str(src), db)[:-2] + ["--batch-size", "2"]  # chunks of 16 images: several writes per sync
    assert main(cmd) == 0
    original = _stored(db)

    # Change 12 files (re-embedding needed), delete 6, add 8.
    for i, name in enumerate(names[:12]):
        (src / f"{name}.png").write_bytes(_bmp(["blue", "red", "green"][i % 3], "square", seed=i))
    for name in names[12:18]:
        (src / f"{name}.png").unlink()
    for i in range(8):
        (src / f"added_{i}.bmp").write_bytes(_bmp("white", "star", seed=100 + i))

    # Killed between re-embedding the first chunk of changed files and writing it.
    _run_until_paused([*cmd, "--prune"], "write:1")
    after_first = _stored(db)
    assert after_first.keys() == original.keys()  # nothing of that chunk was written...
    for name in names[:12]:  # ...so the old fingerprint sits beside the old vector, and a rerun redoes it
        meta, vector = after_first[f"{name}.png"]
        assert meta == original[f"{name}.png"][0]
        np.testing.assert_array_equal(vector, original[f"{name}.png"][1])
    # Killed after one chunk was written, before the next.
    _run_until_paused([*cmd, "--prune"], "write:2")
    partial = _stored(db)
    assert 0 < sum(1 for n in names[:12] if partial[f"{n}.png"][0] != original[f"{n}.png"][0]) < 12
    # Killed halfway through pruning (2 ids per delete).
    _run_until_paused([*cmd, "--prune"], "prune:2", {"SYNC_PRUNE_CHUNK": "2"})
    assert 24 - 6 + 8 < len(_stored(db)) < 24 + 8  # some gone records deleted, not all

    done = subprocess.run([sys.executable, "-m", "retrieval.cli", *cmd, "--prune"], capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    _assert_matches_folder(db, src)


def test_plan_reads_every_page_and_never_calls_a_record_index_did_not_write_gone() -> None:
    from retrieval.jobs.fingerprint import Fingerprint
    from retrieval.jobs.sources import SourceItem
    from retrieval.jobs.sync import plan_sync, stored_records

    col = retrieval.EphemeralClient().create_collection("plan-pages", embedding_function=None)
    metas = [{"file": f"{i}.png", "file_size": 10 + i, "file_mtime": 1.5, "width": 3} for i in range(5)]
    col.add(ids=[f"{i}.png" for i in range(5)] + ["mine"], embeddings=[[float(i), 1.0] for i in range(6)],
            uris=[f"/p/{i}.png" for i in range(5)] + [None], metadatas=[*metas, {"note": "added by hand"}])
    stored = stored_records(col, page=2)  # three pages
    assert sorted(stored) == ["0.png", "1.png", "2.png", "3.png", "4.png", "mine"]
    assert stored["1.png"].metadata == {"file": "1.png", "file_size": 11, "file_mtime": 1.5}  # only what a sync reads

    items = [SourceItem("0.png", "/p/0.png", Fingerprint(10, 1.5)),  # unchanged
             SourceItem("1.png", "/p/1.png", Fingerprint(11, 2.5)),  # touched
             SourceItem("2.png", "/elsewhere/2.png", Fingerprint(12, 1.5)),  # moved
             SourceItem("new.png", "/p/new.png", Fingerprint(1, 1.0))]
    plan = plan_sync(items, stored)
    assert [it.id for it in plan.add] == ["new.png"] and plan.unchanged == 1
    assert [(it.id, why) for it, why in plan.update] == [("1.png", "modification time changed"),
                                                          ("2.png", "moved from /p/2.png")]
    assert plan.gone == [("3.png", "/p/3.png"), ("4.png", "/p/4.png")]  # never "mine"
    scoped = plan_sync([], stored, scope=["4.png", "mine", "never-stored.png"])  # a watch's changed paths
    assert scoped.gone == [("4.png", "/p/4.png")] and not scoped.add and not scoped.update
