"""Photo metadata comes from the image the loader opens anyway; fingerprints read every fsspec backend's spelling."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import fsspec
import pytest
from PIL import Image

import loaders.image
from loaders import ImageLoader
from loaders.photo_metadata import photo_metadata
from retrieval.jobs.fingerprint import Fingerprint


def _jpeg(exif: Image.Exif | None = None, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, "JPEG", **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def test_the_loader_hands_each_opened_image_to_on_open_and_reads_each_file_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    exif = Image.Exif()
    exif[0x0110], exif[0x0132] = "Pixel 8\x00", "2023:12:24 18:30:00"  # DateTime only: no DateTimeOriginal
    fsspec.filesystem("memory").pipe({"/pm/a.jpg": _jpeg(exif), "/pm/b.jpg": _jpeg(size=(8, 6))})
    reads: list[str] = []
    real = loaders.image.read_bytes
    monkeypatch.setattr(loaders.image, "read_bytes", lambda uri, **kw: reads.append(uri) or real(uri, **kw))
    seen: dict[str, dict] = {}
    uris = ["memory://pm/a.jpg", "memory://pm/b.jpg"]
    images = ImageLoader().load(uris, on_open=lambda uri, img: seen.update({uri: photo_metadata(img)}))
    assert [im.shape for im in images] == [(30, 40, 3), (6, 8, 3)]
    assert sorted(reads) == uris  # the metadata cost no second read
    assert seen == {
        "memory://pm/a.jpg": {"width": 40, "height": 30, "format": "JPEG", "camera_model": "Pixel 8",
                              "date_taken": "2023-12-24T18:30:00", "date_taken_ts": 1703442600},
        "memory://pm/b.jpg": {"width": 8, "height": 6, "format": "JPEG"},
    }
    fetched: dict[str, dict] = {}
    ImageLoader().fetch(uris[:1], on_open=lambda uri, img: fetched.update({uri: photo_metadata(img)}))
    assert fetched == {uris[0]: seen[uris[0]]}  # the GPU route (header only) sees the same


def test_placeholder_exif_values_are_left_out() -> None:
    exif = Image.Exif()
    exif[0x0132], exif[0x0112], exif[0x010F] = "0000:00:00 00:00:00", 9, "   "
    meta = photo_metadata(Image.open(io.BytesIO(_jpeg(exif))))
    assert meta == {"width": 40, "height": 30, "format": "JPEG"}


def test_fingerprints_from_each_backends_listing() -> None:
    s3 = {"name": "b/k.jpg", "size": 5, "type": "file", "ETag": '"9a0364b9e99bb480dd25e1f0284c8555"',
          "LastModified": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)}
    assert Fingerprint.from_info(s3) == Fingerprint(5, 1704164645.0, "9a0364b9e99bb480dd25e1f0284c8555")
    gcs = {"name": "b/k.jpg", "size": "7", "updated": "2024-01-02T03:04:05.000Z", "md5Hash": "rL0Y20zC+Fzt72VPzMSk2A=="}
    assert Fingerprint.from_info(gcs) == Fingerprint(7, 1704164645.0, "rL0Y20zC+Fzt72VPzMSk2A==")
    local = {"name": "/p/k.jpg", "size": 9, "type": "file", "mtime": 1.25, "created": 0.5}
    assert Fingerprint.from_info(local) == Fingerprint(9, 1.25, None)
    stored = Fingerprint.from_metadata({"file": "k.jpg", "file_size": 9, "file_mtime": 1.25})
    assert stored == Fingerprint(9, 1.25) and Fingerprint(9, 1.25).change_from(stored) is None
    assert Fingerprint(9, 0.5).change_from(stored) == "modification time changed"  # older counts: != not >
    assert Fingerprint.from_metadata({"file": "k.jpg"}) is None  # indexed before fingerprints: re-embedded once
