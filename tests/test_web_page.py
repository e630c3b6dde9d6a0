"""The web page end to end: a real ``retrieval run`` process driven by headless Chromium.

Debian's ``chromium`` (``/usr/bin/chromium``) is driven by Playwright for Python; ``.ci/run`` installs
both (no browser is downloaded). The test indexes the bundled gallery, serves it with server-side
embedding enabled for ``open_clip``, thumbnails under the gallery folder and a read-only token, then
enters the token, searches by text, by an uploaded and a dropped image and by a server path, narrows
with a metadata filter, scrolls for more, and writes screenshots at a laptop and a phone size (to
``RETRIEVAL_SCREENSHOTS`` if set, else the test's temporary folder).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)", allow_module_level=True)

import retrieval  # noqa: E402
from embedders import OpenCLIPEmbeddingFunction  # noqa: E402
from embedders.assets import gallery_dir  # noqa: E402
from loaders import ImageLoader  # noqa: E402

LAPTOP = {"width": 1366, "height": 860}
TOKEN = "page-test-token-0123456789"
PHONE = {"width": 390, "height": 844}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _index_gallery(path: Path) -> None:
    client = retrieval.PersistentClient(path=str(path))
    try:
        col = client.create_collection(
            "gallery",
            embedding_function=OpenCLIPEmbeddingFunction(model_name="tiny-shapes", device="cpu"),
            data_loader=ImageLoader(),
            configuration={"hnsw": {"space": "cosine"}},
        )
        files = sorted(Path(gallery_dir()).glob("*.png"))
        col.add(
            ids=[f.name for f in files],
            uris=[str(f) for f in files],
            metadatas=[dict(zip(("color", "shape"), f.stem.split("_"))) for f in files],
        )
        few = client.create_collection("few-shapes", embedding_function=col.embedding_function,
                                       data_loader=ImageLoader(), configuration={"hnsw": {"space": "cosine"}})
        few.add(ids=[f.name for f in files[:3]], uris=[str(f) for f in files[:3]])
    finally:
        client.close()  # the server must own the persist path


@pytest.fixture
def server(tmp_path):
    """``retrieval run`` on a free loopback port, stopped by PID at the end."""
    db = tmp_path / "db"
    _index_gallery(db)
    config = tmp_path / "server.yaml"
    config.write_text(
        f"ui:\n  embed_functions: [open_clip]\n  thumbnail_roots: [{str(gallery_dir())!r}]\n"
        # A read-only token scoped to the default tenant/database: the page must send it.
        f"auth:\n  tokens:\n    - {{name: viewer, token: {TOKEN}, tenant: default_tenant, databases: [default_database], actions: [read]}}\n"
    )
    port = _free_port()
    log = open(tmp_path / "server.log", "wb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrieval.cli", "run", "--path", str(db), "--port", str(port), "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/api/v2/heartbeat", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"retrieval run did not start:\n{(tmp_path / 'server.log').read_text()}")
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


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("RETRIEVAL_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _ids(page) -> list[str]:
    return page.locator("[data-testid=result-id]").all_text_contents()


def _wait_for_results(page, phrase: str) -> None:
    """Until the status line names this search and says how many results it shows."""
    page.wait_for_function(
        "p => { const s = document.querySelector('[data-testid=status]').textContent; return s.includes(p) && s.includes('shown'); }",
        arg=phrase,
        timeout=30_000,
    )


def _wait_for_thumbnails(page) -> None:
    """Until every thumbnail on screen has loaded (those further down load lazily, on scroll)."""
    page.wait_for_function(
        """() => {
            const shown = [...document.querySelectorAll('[data-testid=result] img')]
                .filter(i => i.getBoundingClientRect().top < window.innerHeight);
            return shown.length > 0 && shown.every(i => i.complete && i.naturalWidth > 0);
        }""",
        timeout=30_000,
    )


def _connect(page, token: str) -> None:
    """Enter the token under Connection (the page opens the panel itself after a 401)."""
    if not page.is_visible("#token"):
        page.click("#settings-toggle")
    page.fill("#token", token)
    page.click("#settings-apply")


def _drop_file(page, path: Path) -> None:
    """Drop a file on the page as a user dragging it from a file manager would."""
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            for (const type of ["dragenter", "dragover", "drop"]) {
                document.body.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }
        }""",
        [path.name, data],
    )


class HeldSearches:
    """Holds back the answers to chosen searches, as a slow server would, until released.

    Playwright's route handler runs whenever the test waits on the page; a held route is answered
    (or found aborted by the page) on :meth:`release`.
    """

    def __init__(self, page, needle: str):
        self.page, self.needle, self.held, self.settled = page, needle, [], []
        page.route("**/search*", self._route)
        page.on("requestfinished", self._settle)
        page.on("requestfailed", self._settle)

    def _route(self, route):
        if self.needle in route.request.url or self.needle in (route.request.post_data or ""):
            self.held.append(route)
        else:
            route.continue_()

    def _settle(self, request):
        if any(request == route.request for route in self.held):
            self.settled.append(request)

    def wait_until_held(self) -> None:
        deadline = time.monotonic() + 30
        while not self.held:
            assert time.monotonic() < deadline, f"no search for {self.needle!r} was sent"
            self.page.wait_for_timeout(50)

    def release(self) -> None:
        """Let the held requests through, and wait until the page has had their answers (or aborted them)."""
        self.page.unroute("**/search*", self._route)
        for route in self.held:
            try:
                route.continue_()
            except Exception:  # the page aborted it (a newer search superseded it): nothing to deliver
                pass
        deadline = time.monotonic() + 30
        while len(self.settled) < len(self.held):
            assert time.monotonic() < deadline, "a held search never finished"
            self.page.wait_for_timeout(50)
        # Give the page's code the turn it would take to render a late answer (it must not).
        self.page.evaluate("() => new Promise(r => setTimeout(r, 300))")


def _newest_search_wins(page) -> None:
    """A search sent while an older one is still loading wins, even when the older answer comes last."""
    slow = HeldSearches(page, "a yellow circle")
    page.fill("[data-testid=text-query]", "a yellow circle")
    page.press("[data-testid=text-query]", "Enter")
    slow.wait_until_held()
    page.wait_for_selector("#status.loading")  # a visible loading state while the answer is out
    assert page.get_attribute("#grid", "aria-busy") == "true"
    page.fill("[data-testid=text-query]", "a blue star")
    page.press("[data-testid=text-query]", "Enter")
    _wait_for_results(page, "a blue star")
    slow.release()
    assert "a blue star" in page.text_content("[data-testid=status]")
    assert _ids(page)[0] == "blue_star.png" and len(_ids(page)) == 24
    assert page.get_attribute("#status", "aria-busy") == "false"


def _newest_pick_wins(page) -> None:
    """Re-picking the collection while the first pick's page loads: the newest pick fills the grid."""
    slow = HeldSearches(page, "/collections/few-shapes/")
    page.select_option("[data-testid=collection]", "few-shapes")
    slow.wait_until_held()
    page.select_option("[data-testid=collection]", "gallery")
    _wait_for_results(page, "Browsing gallery")
    slow.release()
    assert "Browsing gallery" in page.text_content("[data-testid=status]")
    assert len(_ids(page)) == 24 and "records 40" in page.text_content("[data-testid=collection-info]")


def test_search_the_gallery_in_a_browser(server, shots):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=LAPTOP)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            sent: list[str | None] = []
            page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/ui/api/" in r.url else None)
            page.goto(server + "/")

            # The server wants a token: the page says so, and works once it is entered under Connection.
            page.wait_for_selector("#notice.error", timeout=30_000)
            assert "This server needs an access token" in page.text_content("#notice")
            assert page.is_disabled("[data-testid=text-query]") and page.is_disabled("#go")  # nothing dead-ends
            page.screenshot(path=str(shots / "token-needed-laptop.png"))
            sent.clear()
            _connect(page, TOKEN)

            # The collection, its count, dimension and embedding function; a first page of records.
            _wait_for_results(page, "Browsing")
            assert page.is_enabled("[data-testid=text-query]")
            info = page.locator("[data-testid=collection-info]").text_content()
            assert "records 40" in info and "dimension 64" in info and "open_clip" in info and "tiny-shapes" in info
            assert len(_ids(page)) == 24

            # More results on scroll: the rest of the 40 records arrive without a click.
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
            page.wait_for_function("document.querySelectorAll('[data-testid=result]').length === 40", timeout=30_000)
            assert len(set(_ids(page))) == 40
            page.evaluate("window.scrollTo(0, 0)")

            # Text, embedded on the server with the collection's own function.
            page.fill("[data-testid=text-query]", "a red circle")
            page.press("[data-testid=text-query]", "Enter")
            _wait_for_results(page, "a red circle")
            assert _ids(page)[0] == "red_circle.png"
            assert float(page.locator("[data-testid=distance]").first.text_content()) < 0.2
            assert "lower distance = closer" in page.text_content("[data-testid=distance-hint]")
            _wait_for_thumbnails(page)
            page.screenshot(path=str(shots / "text-laptop.png"))

            _newest_search_wins(page)
            _newest_pick_wins(page)

            # An uploaded image.
            page.click("[role=tab][data-mode=image]")
            page.set_input_files("[data-testid=image-file]", str(Path(gallery_dir()) / "blue_star.png"))
            _wait_for_results(page, "blue_star.png")
            assert _ids(page)[0] == "blue_star.png"
            before = len(_ids(page))

            # A metadata filter narrows the grid (the query stays the image).
            page.select_option("[data-testid=filter-key]", "color")
            page.fill("[data-testid=filter-value]", "blue")
            page.click("[data-testid=filter-apply]")
            _wait_for_results(page, "where color = blue")
            ids = _ids(page)
            assert ids[0] == "blue_star.png" and len(ids) == 5 < before
            assert all(i.startswith("blue_") for i in ids)
            _wait_for_thumbnails(page)
            page.screenshot(path=str(shots / "image-filter-laptop.png"))

            # Clear the filter and drop an image file on the page.
            page.click("#filter-clear")
            _wait_for_results(page, "blue_star.png")
            assert len(_ids(page)) == 24
            _drop_file(page, Path(gallery_dir()) / "red_cross.png")
            _wait_for_results(page, "red_cross.png")
            assert _ids(page)[0] == "red_cross.png"

            # The path of an image on the server (under a thumbnail root).
            page.click("[role=tab][data-mode=uri]")
            page.fill("[data-testid=uri-query]", str(Path(gallery_dir()) / "green_triangle.png"))
            page.press("[data-testid=uri-query]", "Enter")
            _wait_for_results(page, "green_triangle.png")
            assert _ids(page)[0] == "green_triangle.png"

            # The token went with every API call after it was entered, thumbnails included.
            assert len(sent) > 40 and set(sent) == {f"Bearer {TOKEN}"}, set(sent)
            assert not errors, errors

            # A phone screen: the same search reads cleanly in two columns.
            phone = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
            phone.goto(server + "/")
            _connect(phone, TOKEN)
            _wait_for_results(phone, "Browsing")
            phone.fill("[data-testid=text-query]", "a red circle")
            phone.press("[data-testid=text-query]", "Enter")
            _wait_for_results(phone, "a red circle")
            assert _ids(phone)[0] == "red_circle.png"
            _wait_for_thumbnails(phone)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px wide)"
            # The metadata key picker shows its longest option whole (plus padding and its arrow).
            room, text = phone.evaluate("""() => {
                const s = document.querySelector('[data-testid=filter-key]');
                const ctx = document.createElement('canvas').getContext('2d');
                ctx.font = getComputedStyle(s).font;
                return [s.clientWidth, Math.max(...[...s.options].map(o => ctx.measureText(o.text).width))];
            }""")
            assert room >= text + 30, f"the key picker is {room}px wide for {text:.0f}px of text"
            phone.screenshot(path=str(shots / "text-phone.png"))
        finally:
            browser.close()
    for name in ("text-laptop.png", "image-filter-laptop.png", "text-phone.png"):
        assert (shots / name).stat().st_size > 10_000
    readme_shot = os.environ.get("RETRIEVAL_README_SCREENSHOT")
    if readme_shot:  # regenerate the README's picture: RETRIEVAL_README_SCREENSHOT=examples/screenshots/web-page.png
        shutil.copy(shots / "text-laptop.png", readme_shot)
