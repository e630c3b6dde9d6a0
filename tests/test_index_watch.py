"""`retrieval index SOURCE --watch`: edits, adds, deletes and renames applied as they happen (events and polling),
a change made while a batch is embedded, SIGTERM, and SIGKILL mid-cycle."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

import retrieval
from retrieval.jobs.watch import DirtySet
from test_index_sync import ENV, GALLERY, REPO, _args, _assert_matches_folder, _bmp, _copy, _stored

pytest.importorskip("watchdog")


class Watch:
    """A `retrieval index --watch` subprocess with a bounded life, read line by line, stopped by PID."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or ENV)
        self.lines: list[str] = []
        self.seen = 0
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()  # type: ignore[arg-type]

    def expect(self, *parts: str, timeout: float = 60) -> str:
        """The next output line (after those already matched) that holds every one of ``parts``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in range(self.seen, len(self.lines)):
                if all(p in self.lines[n] for p in parts):
                    self.seen = n + 1
                    return self.lines[n]
            assert self.proc.poll() is None, f"watch ended: {self.lines} {self.proc.stderr.read()[-800:]}"  # type: ignore[union-attr]
            time.sleep(0.05)
        raise AssertionError(f"no line with {parts} in {timeout} s: {self.lines}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def _watch_cmd(source: str, db: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "retrieval.cli", *_args(source, db, "--watch", *extra)]


def _folder(tmp_path: Path, names: tuple[str, ...] = ("red_circle", "green_star", "yellow_cross")) -> Path:
    src = tmp_path / "photos"
    src.mkdir()
    for name in names:
        _copy(name, src / f"{name}.png")
    return src


@pytest.mark.parametrize("prune", [False, True], ids=["keep-gone", "prune"])
def test_watch_applies_changes_as_they_happen(tmp_path: Path, prune: bool) -> None:
    src, db = _folder(tmp_path), str(tmp_path / "db")
    (src / "tile.bmp").write_bytes(_bmp("green", "circle"))
    (src / "old.bmp").write_bytes(_bmp("yellow", "triangle"))
    then = (src / "old.bmp").stat().st_mtime
    watch = Watch(_watch_cmd(str(src), db, *(["--prune"] if prune else [])))
    try:
        watch.expect("synced", "5 added")
        assert "file-system events" in watch.expect("watching")

        shutil.copyfile(GALLERY / "blue_square.png", src / "red_circle.png")  # edit: new content and size
        watch.expect("synced", "0 added, 1 updated")
        (src / "tile.bmp").write_bytes(_bmp("orange", "cross"))  # same size, new mtime
        watch.expect("synced", "0 added, 1 updated")
        (src / "old.bmp").write_bytes(_bmp("black", "star"))  # replaced by a file with an older mtime
        os.utime(src / "old.bmp", (then - 1000, then - 1000))
        watch.expect("synced", "0 added, 1 updated")
        _copy("white_star", src / "new.png")  # add
        watch.expect("synced", "1 added, 0 updated")
        (src / "green_star.png").unlink()  # delete
        watch.expect("synced", "1 removed" if prune else "1 gone (kept")
        (src / "yellow_cross.png").rename(src / "cross.png")  # rename: a removal plus an addition
        watch.expect("synced", "1 added, 0 updated, 1 removed" if prune else "1 added, 0 updated, 0 removed")
        assert watch.stop() == 0
    finally:
        watch.kill()
    assert "stopped watching" in watch.lines[-1]
    stored = _stored(db)
    kept = {"green_star.png", "yellow_cross.png"} if not prune else set()
    assert sorted(stored) == sorted({"red_circle.png", "new.png", "cross.png", "tile.bmp", "old.bmp"} | kept)
    for name in ("tile.bmp", "old.bmp"):  # the stored fingerprint is the file's latest, older mtime included
        assert stored[name][0]["file_mtime"] == (src / name).stat().st_mtime
    with retrieval.PersistentClient(path=db) as client:
        hit = client.get_collection("photos").query(query_texts=["a blue square"], n_results=1)["ids"][0][0]
    assert hit == "red_circle.png"
    if prune:
        _assert_matches_folder(db, src)


def test_watch_polls_where_there_are_no_events(tmp_path: Path) -> None:
    src, db = _folder(tmp_path), str(tmp_path / "db")
    watch = Watch(_watch_cmd(str(src / "*.png"), db, "--poll-interval", "0.3"))  # a glob: polled
    try:
        watch.expect("synced", "3 added")
        assert "polling every 0.3 s" in watch.expect("watching")
        (src / "tile.png").write_bytes(_bmp("green", "circle"))  # .png name, BMP bytes: any image loads
        shutil.copyfile(GALLERY / "blue_square.png", src / "red_circle.png")
        watch.expect("synced", "1 added, 1 updated")
        assert watch.stop() == 0
    finally:
        watch.kill()
    _assert_matches_folder(db, src)


def test_a_change_made_while_a_batch_is_embedded_is_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedders import build_embedding_function
    from loaders import ImageLoader
    from retrieval.jobs import sync
    from retrieval.jobs.sync import ReportWriter
    from retrieval.jobs.watch import watch_source

    src = _folder(tmp_path)
    ef = build_embedding_function("open_clip", {"model_name": "tiny-shapes"}, device="cpu")
    client = retrieval.PersistentClient(path=str(tmp_path / "db"))
    collection = client.create_collection("photos", embedding_function=ef)
    real_write = sync.write_chunk
    edited = threading.Event()

    def write_while_editing(col, items, vectors, metadatas):  # noqa: ANN001, ANN202
        if not edited.is_set() and any(it.id == "new.png" for it in items):
            # new.png's batch is embedded and not yet written: edit another file right now.
            shutil.copyfile(GALLERY / "blue_square.png", src / "red_circle.png")
            edited.set()
        real_write(col, items, vectors, metadatas)

    monkeypatch.setattr(sync, "write_chunk", write_while_editing)
    stop = threading.Event()
    lines: list[str] = []
    thread = threading.Thread(target=watch_source, args=(str(src), collection, ef, ImageLoader()), kwargs=dict(
        prune=False, batch_size=4, progress=False, poll_interval=30.0, report=ReportWriter(str(tmp_path / "r.jsonl")),
        stop=stop, echo=lines.append, debounce=0.1), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("watching") for line in lines):
            assert time.monotonic() < deadline and thread.is_alive(), lines
            time.sleep(0.05)
        _copy("white_star", src / "new.png")
        size = (src / "red_circle.png").stat().st_size
        while True:  # the edit lands in a later cycle, though it came while new.png was being embedded
            meta = collection.get(ids=["red_circle.png"], include=["metadatas"])["metadatas"][0]
            if edited.is_set() and meta["file_size"] != size:
                break
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
        client.close()
    assert not thread.is_alive()
    assert meta["file_size"] == (src / "red_circle.png").stat().st_size
    assert any("1 added" in line for line in lines) and any("1 updated" in line for line in lines)


def test_sigkill_during_a_watch_cycle_then_rerun_converges(tmp_path: Path) -> None:
    from test_index_sync import main

    names = tuple(sorted(p.stem for p in GALLERY.glob("*.png"))[:10])
    src, db = _folder(tmp_path, names), str(tmp_path / "db")
    assert main(_args(str(src), db)) == 0
    env = {**ENV, "SYNC_PAUSE_AT": "write:1"}  # the folder is indexed: the first write is the watch's
    cmd = [sys.executable, str(REPO / "tests" / "sync_driver.py"), *_args(str(src), db, "--watch", "--prune")]
    watch = Watch(cmd, env)
    try:
        watch.expect("watching")
        for i, name in enumerate(names[:4]):
            (src / f"{name}.png").write_bytes(_bmp("blue", "square", seed=i))
        (src / f"{names[5]}.png").unlink()
        watch.expect("PAUSED write:1")  # the edits are embedded; killed before they are written
    finally:
        watch.kill()
    done = subprocess.run([sys.executable, "-m", "retrieval.cli", *_args(str(src), db, "--prune")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 updated, 1 removed" in done.stdout
    _assert_matches_folder(db, src)


def test_dirty_set_hands_every_mark_to_exactly_one_take() -> None:
    dirty = DirtySet()
    stop = threading.Event()
    marked = [f"{n}.png" for n in range(2000)]

    def marker() -> None:
        for id_ in marked:
            dirty.mark(id_)

    thread = threading.Thread(target=marker)
    thread.start()
    taken: list[str] = []
    while thread.is_alive() or dirty.wait(stop, timeout=0.01, debounce=0.0):
        full, ids = dirty.take()
        assert not full
        taken.extend(ids)
    thread.join()
    taken.extend(dirty.take()[1])
    assert sorted(taken) == sorted(marked)  # none lost, none twice
    dirty.mark()
    assert dirty.wait(stop, timeout=1, debounce=0.0) and dirty.take() == (True, set())
    assert not dirty.wait(stop, timeout=0.05, debounce=0.0)


def test_a_watch_never_reads_a_vanished_folder_as_an_emptied_one(tmp_path: Path) -> None:
    src, db = _folder(tmp_path), str(tmp_path / "db")
    watch = Watch(_watch_cmd(str(src / "*.png"), db, "--prune", "--poll-interval", "0.3"))
    try:
        watch.expect("synced", "3 added")
        src.rename(tmp_path / "unmounted")  # the drive goes away: nothing may be pruned
        watch.expect("warning: cannot list")
        (tmp_path / "unmounted").rename(src)
        (src / "green_star.png").unlink()
        watch.expect("synced", "1 removed")
        for p in list(src.iterdir()):  # emptied for real: now everything goes
            p.unlink()
        watch.expect("synced", "2 removed")
        assert watch.stop() == 0
    finally:
        watch.kill()
    assert _stored(db) == {}


def test_a_failed_cycle_is_retried_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedders import build_embedding_function
    from loaders import ImageLoader
    from retrieval.jobs import sync, watch
    from retrieval.jobs.sync import ReportWriter
    from retrieval.jobs.watch import watch_source

    src = _folder(tmp_path)
    ef = build_embedding_function("open_clip", {"model_name": "tiny-shapes"}, device="cpu")
    client = retrieval.EphemeralClient()
    collection = client.create_collection("retry-photos", embedding_function=ef)
    real_write, failures = sync.write_chunk, []

    def flaky(col, items, vectors, metadatas):  # noqa: ANN001, ANN202 - the server restarts once
        if any(it.id == "new.png" for it in items) and not failures:
            failures.append(1)
            raise ConnectionError("server restarting")
        real_write(col, items, vectors, metadatas)

    monkeypatch.setattr(sync, "write_chunk", flaky)
    monkeypatch.setattr(watch, "RETRY_SECONDS", 0.2)
    stop, lines = threading.Event(), []
    thread = threading.Thread(target=watch_source, args=(str(src), collection, ef, ImageLoader()), kwargs=dict(
        prune=False, batch_size=4, progress=False, poll_interval=30.0, report=ReportWriter(str(tmp_path / "r.jsonl")),
        stop=stop, echo=lines.append, debounce=0.1), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("watching") for line in lines):
            assert time.monotonic() < deadline and thread.is_alive(), lines
            time.sleep(0.05)
        _copy("white_star", src / "new.png")
        while not collection.get(ids=["new.png"])["ids"]:
            assert time.monotonic() < deadline and thread.is_alive(), lines
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert failures and any("warning: sync failed (ConnectionError: server restarting)" in line for line in lines)
    assert collection.count() == 4
