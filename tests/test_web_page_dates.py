"""The page's filter offers the metadata `retrieval index` stores for photos, and a date range where photos have dates.

A real ``retrieval run`` serves a collection indexed from EXIF-tagged JPEGs; headless Chromium narrows the grid
by a day range (see test_web_page.py for the browser set-up).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedders.shapes import render_shape
from retrieval.cli import main
from test_web_page import CHROMIUM, LAPTOP, _free_port, _ids, _wait_for_results, sync_api

DATES = {"june-2023.jpg": ("2023:06:15 10:00:00", None), "july-2024.jpg": ("2024:07:01 14:03:22", "+02:00"),
         "new-year.jpg": ("2024:12:31 23:30:00", None)}


def _photos(folder: Path) -> None:
    folder.mkdir()
    for n, (name, (taken, offset)) in enumerate(DATES.items()):
        exif = Image.Exif()
        exif[0x010F] = "Canon" if n else "Nikon"
        sub = exif.get_ifd(0x8769)
        sub[0x9003] = taken
        if offset:
            sub[0x9011] = offset
        render_shape("red", "circle", size=64, rng=np.random.default_rng(n)).save(folder / name, "JPEG", exif=exif)
    render_shape("blue", "square", size=64).save(folder / "no-exif.png")


@pytest.fixture
def server(tmp_path: Path):
    src, db = tmp_path / "photos", tmp_path / "db"
    _photos(src)
    assert main(["index", str(src), "--path", str(db), "--collection", "photos", "--device", "cpu", "--quiet"]) == 0
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "retrieval.cli", "run", "--path", str(db), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/v2/heartbeat", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_the_filter_offers_photo_keys_and_a_date_range(server: str) -> None:
    described = json.load(urllib.request.urlopen(server + "/ui/api/collections/photos", timeout=30))
    keys = {k["key"]: k for k in described["metadata_keys"]}
    assert {"width", "height", "format", "camera_make", "date_taken", "date_taken_ts"} <= keys.keys()
    assert keys["camera_make"]["values"] == ["Canon", "Nikon"] and keys["format"]["values"] == ["JPEG", "PNG"]
    assert described["date_range"] == {"key": "date_taken_ts", "min": 1686823200, "max": 1735687800}

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=LAPTOP)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            _wait_for_results(page, "Browsing")
            assert len(_ids(page)) == 4 and page.is_visible("[data-testid=date-range]")
            assert page.get_attribute("[data-testid=date-from]", "min") == "2023-06-15"

            def shown() -> list[str]:
                """The ids once the search an input's change started has answered."""
                page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('shown')",
                                       timeout=30_000)
                return sorted(_ids(page))

            # fill() fires the input's change event, as a user picking a day does.
            page.fill("[data-testid=date-from]", "2024-01-01")
            assert shown() == ["july-2024.jpg", "new-year.jpg"]
            page.fill("[data-testid=date-to]", "2024-07-01")  # a whole day, inclusive
            assert shown() == ["july-2024.jpg"]
            # The date range and the key filter combine.
            page.select_option("[data-testid=filter-key]", "camera_make")
            page.fill("[data-testid=filter-value]", "Nikon")
            page.click("[data-testid=filter-apply]")
            assert shown() == []
            page.fill("[data-testid=date-from]", "")
            assert shown() == ["june-2023.jpg"]
            assert errors == []
        finally:
            browser.close()
