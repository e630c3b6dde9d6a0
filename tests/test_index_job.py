"""The batch job: sources, bad files, kill -9 and resume, Parquet round trip, --host."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import fsspec
import numpy as np
import pytest
from PIL import Image

import retrieval
from embedders.assets import gallery_dir
from retrieval.cli import main
from retrieval.errors import InvalidArgumentError
from retrieval.jobs.sources import list_source

REPO = Path(__file__).resolve().parents[1]
GALLERY = sorted(gallery_dir().glob("*.png"))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: the pixel guard must refuse it before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _folder_with_bad_files(root: Path) -> dict[str, str]:
    """The gallery (40 PNGs, some in a subfolder) plus one file of each bad kind; returns bad id -> kind."""
    (root / "sub").mkdir(parents=True)
    for i, p in enumerate(GALLERY):
        (root / ("sub" if i % 4 == 0 else "") / p.name).write_bytes(p.read_bytes())
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), "blue").save(buf, "JPEG")
    bad = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + b"garbage" * 50,
        "truncated.jpg": buf.getvalue()[: len(buf.getvalue()) // 2],
        "notes.png": b"not an image at all",
        "sub/huge.png": _png_header_only(20000, 20000),
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    (root / "readme.txt").write_text("not an image suffix: ignored")
    return {name: name for name in bad}


def test_bad_files_are_skipped_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "photos"
    bad = _folder_with_bad_files(src)
    db, report = str(tmp_path / "db"), str(tmp_path / "report.jsonl")
    args = ["index", str(src), "--path", db, "--collection", "photos", "--device", "cpu", "--quiet",
            "--batch-size", "8", "--report", report]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "indexed 40 images" in out and "(40 total)" in out and "4 skipped-bad" in out
    lines = [json.loads(line) for line in Path(report).read_text().splitlines()]
    assert sorted(line["id"] for line in lines if line["action"] == "add") == sorted(
        str(p.relative_to(src)) for p in src.rglob("*.png") if p.name in {g.name for g in GALLERY})
    lines = [line for line in lines if line["action"] == "skip"]
    assert sorted(line["id"] for line in lines) == sorted(bad)
    reasons = {line["id"]: line["reason"] for line in lines}
    assert "decompression-bomb" in reasons["sub/huge.png"]
    assert "truncated" in reasons["truncated.jpg"]
    for line in lines:
        assert line["uri"] in line["reason"]  # the loader's own message, naming the file
    # No partial record: the bad ids are not stored; the good ones are, with their URIs.
    with retrieval.PersistentClient(path=db) as client:
        col = client.get_collection("photos")
        assert col.get(ids=list(bad))["ids"] == []
        got = col.get(ids=["sub/" + GALLERY[0].name], include=["uris", "metadatas"])
        assert got["uris"] == [str(src / "sub" / GALLERY[0].name)]
    # A rerun skips what is stored and tries the bad files again.
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "indexed 0 images" in out and "40 unchanged" in out and "4 skipped-bad" in out


def _index_cmd(src: Path, db: str) -> list[str]:
    return [sys.executable, "-m", "retrieval.cli", "index", str(src), "--path", db, "--collection", "photos",
            "--device", "cpu", "--batch-size", "4"]


def test_sigkill_then_resume_completes_exactly(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(6):  # 240 files
        for p in GALLERY:
            (src / f"{i}_{p.name}").write_bytes(p.read_bytes())
    total = 6 * len(GALLERY)
    db = str(tmp_path / "db")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_index_cmd(src, db), stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    seen = bytearray()

    def pump() -> None:
        while chunk := proc.stderr.read1(4096):  # type: ignore[union-attr]
            seen.extend(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    progress = 0
    while time.monotonic() < deadline and proc.poll() is None:
        counts = [int(m) for m in re.findall(rb"(\d+)/%d" % total, bytes(seen))]
        progress = max(counts, default=0)
        if progress >= 80:  # several chunks (8 batches of 4) written, more in flight
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the job ended before it could be killed: {bytes(seen)[-500:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=10)

    with retrieval.PersistentClient(path=db) as client:
        partial = client.get_collection("photos").count()
    assert 0 < partial < total
    done = subprocess.run(_index_cmd(src, db) + ["--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"indexed {total - partial} images" in done.stdout and f"({total} total)" in done.stdout
    with retrieval.PersistentClient(path=db) as client:
        col = client.get_collection("photos")
        assert col.count() == total
        ids = sorted(col.get(include=[])["ids"])
        assert ids == sorted(p.name for p in src.iterdir())
        # Same picture, same vector, whichever run embedded it.
        got = col.get(ids=[f"0_{GALLERY[0].name}", f"5_{GALLERY[0].name}"], include=["embeddings"])
        np.testing.assert_allclose(got["embeddings"][0], got["embeddings"][1], atol=1e-5)


def test_parquet_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    out, db = tmp_path / "emb", str(tmp_path / "db")
    common = ["--device", "cpu", "--quiet", "--batch-size", "8"]
    assert main(["embed", str(gallery_dir()), "--out", str(out)] + common) == 0
    assert "embedded 40 images" in capsys.readouterr().out
    shards = sorted(out.glob("part-*.parquet"))
    table = pq.read_table(shards[0])
    assert table.column_names == ["id", "uri", "vector", "model"]
    assert table.column("model")[0].as_py() == "open_clip:tiny-shapes"
    # Resumable: a rerun writes nothing new.
    assert main(["embed", str(gallery_dir()), "--out", str(out)] + common) == 0
    assert "embedded 0 images" in capsys.readouterr().out and sorted(out.glob("part-*.parquet")) == shards

    assert main(["index", "--from-parquet", str(out), "--path", db, "--collection", "loaded", "--device", "cpu"]) == 0
    assert "indexed 40 images" in capsys.readouterr().out
    assert main(["index", "--from-parquet", str(out), "--path", db, "--collection", "loaded"]) == 0
    assert "indexed 0 images" in capsys.readouterr().out
    assert main(["index", str(gallery_dir()), "--path", db, "--collection", "direct", "--quiet", "--device", "cpu"]) == 0
    with retrieval.PersistentClient(path=db) as client:
        loaded, direct = client.get_collection("loaded"), client.get_collection("direct")
        ids = sorted(p.name for p in GALLERY)
        a = loaded.get(ids=ids, include=["embeddings", "uris"])
        b = direct.get(ids=ids, include=["embeddings", "uris"])
        np.testing.assert_allclose(a["embeddings"], b["embeddings"], atol=1e-5)
        assert a["uris"] == b["uris"]
        # The shards carry the model: text queries land in the same space.
        hit = loaded.query(query_texts=["a red circle"], n_results=1)["ids"][0][0]
        assert hit == "red_circle.png"


def test_sources_glob_lists_and_urls(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    (folder / "a").mkdir(parents=True)
    for p in GALLERY[:3]:
        (folder / "a" / p.name).write_bytes(p.read_bytes())
    (folder / "skip.txt").write_text("x")
    by_glob = list_source(str(folder / "*" / "*.png"))
    assert [i.id for i in by_glob] == [f"a/{p.name}" for p in GALLERY[:3]]
    assert by_glob[0].uri == str(folder / "a" / GALLERY[0].name)

    text = tmp_path / "list.txt"
    text.write_text(f"# my list\n{folder / 'a' / GALLERY[0].name}\n\na/{GALLERY[1].name}\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / GALLERY[1].name).write_bytes(GALLERY[1].read_bytes())
    items = list_source(str(text))
    assert [i.id for i in items] == [str(folder / "a" / GALLERY[0].name), f"a/{GALLERY[1].name}"]
    assert items[1].uri == str(tmp_path / "a" / GALLERY[1].name)  # relative to the list's folder

    with open(tmp_path / "list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "url"])
        writer.writerow(["first", "memory://x/1.png"])
        writer.writerow(["first", "memory://x/dup.png"])
    assert [(i.id, i.uri) for i in list_source(str(tmp_path / "list.csv"))] == [("first", "memory://x/1.png")]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"uri": ["memory://x/2.png"]}), tmp_path / "list.parquet")
    assert [(i.id, i.uri) for i in list_source(str(tmp_path / "list.parquet"))] == [("memory://x/2.png",) * 2]

    for p in GALLERY[:2]:
        with fsspec.open(f"memory://archive/2024/{p.name}", "wb") as f:
            f.write(p.read_bytes())
    remote = list_source("memory://archive")
    assert [i.id for i in remote] == [f"2024/{p.name}" for p in GALLERY[:2]]
    with fsspec.open(remote[0].uri, "rb") as f:  # the URI keeps its protocol (fsspec's spelling)
        assert f.read() == GALLERY[0].read_bytes()

    with pytest.raises(InvalidArgumentError, match="no images under folder"):
        list_source(str(_empty(tmp_path)))
    with pytest.raises(InvalidArgumentError, match="needs a URI column"):
        (tmp_path / "bad.csv").write_text("name\nx\n")
        list_source(str(tmp_path / "bad.csv"))


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def test_index_a_memory_url_and_clear_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for p in GALLERY[:5]:
        with fsspec.open(f"memory://cli-archive/{p.name}", "wb") as f:
            f.write(p.read_bytes())
    db = str(tmp_path / "db")
    assert main(["index", "memory://cli-archive", "--path", db, "--collection", "mem", "--quiet", "--device", "cpu",
                 "--workers", "2"]) == 0
    assert "indexed 5 images" in capsys.readouterr().out

    assert main(["index", "--path", db]) == 2
    assert "give a SOURCE" in capsys.readouterr().err
    assert main(["index", str(gallery_dir()), "--path", db, "--batch-size", "0"]) == 2
    assert "--batch-size must be a positive integer" in capsys.readouterr().err
    assert main(["index", str(gallery_dir()), "--path", db, "--collection", "x"]) == 2
    assert "invalid collection name 'x'" in capsys.readouterr().err
    monkeypatch.delattr(retrieval, "HttpClient", raising=False)
    assert main(["index", str(gallery_dir()), "--host", "127.0.0.1", "--port", "1"]) == 2
    assert "has no HttpClient" in capsys.readouterr().err


def test_index_into_a_server_with_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("retrieval.server.main")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "run", "--path", str(tmp_path / "srv"), "--host", "127.0.0.1",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                retrieval.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        args = ["index", str(gallery_dir()), "--host", "127.0.0.1", "--port", str(port), "--collection", "remote",
                "--device", "cpu", "--quiet"]
        assert main(args) == 0
        assert "indexed 40 images" in capsys.readouterr().out
        assert main(args) == 0
        assert "40 unchanged" in capsys.readouterr().out
        hit = retrieval.HttpClient(host="127.0.0.1", port=port).get_collection("remote").get(ids=["red_circle.png"])
        assert hit["ids"] == ["red_circle.png"]
    finally:
        server.terminate()
        server.wait(timeout=30)
