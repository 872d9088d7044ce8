"""Every dashboard page in headless Chromium, driven over the DevTools protocol.

Each page must load without console errors or exceptions, draw its plotly charts, keep
in touch with the scheduler, and change while work runs (two screenshots differ).
Skipped when no Chromium is installed (Debian: ``apt-get install chromium``; or set
``SHOAL_CHROMIUM`` to a Chrome/Chromium binary).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from shoal import Client, LocalCluster

websockets_sync = pytest.importorskip("websockets.sync.client")


def _chromium() -> str | None:
    candidates = [os.environ.get("SHOAL_CHROMIUM", "")]
    candidates += ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    for name in candidates:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium binary found (apt-get install chromium, or set SHOAL_CHROMIUM)",
)


class Browser:
    """One headless Chromium tab, spoken to over the DevTools protocol (CDP)."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="shoal-chromium-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # tests may run as root (CI containers)
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websockets_sync.connect(page["webSocketDebuggerUrl"], max_size=2**26)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")

    def _devtools_port(self) -> int:
        assert self.proc.stderr is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                # keep draining stderr so chromium never blocks on a full pipe
                threading.Thread(target=self._drain, daemon=True).start()
                return int(m.group(1))
        raise AssertionError("chromium did not start:\n" + "".join(seen))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call ``method``; events that arrive meanwhile are kept in ``events``."""
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise AssertionError(f"{method} failed: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{expression} stayed falsy for {timeout} s")

    def screenshot(self, selector: str | None = None) -> bytes:
        """A PNG of the viewport, or of the visible part of the element ``selector``."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                ".getBoundingClientRect(); return {x: r.left, y: r.top, width: r.width, "
                "height: Math.min(r.height, window.innerHeight - r.top)}; })()"
            )
            assert box["width"] > 0 and box["height"] > 0, (selector, box)
            params["clip"] = {**box, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for ev in self.events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(str(details.get("exception", {}).get("description", details)))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a)) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                out.append(f"{entry.get('text')} {entry.get('url', '')}")
        return out

    def close(self) -> None:
        """Close the connection and the browser."""
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


def slow_inc(x: int) -> int:
    time.sleep(0.01)
    return x + 1


def _workload(client: Client, stop: threading.Event) -> None:
    """Batches of small tasks and a reduction, over and over, until ``stop``."""
    for batch in itertools.count():
        if stop.is_set():
            return
        incs = client.map(slow_inc, range(batch * 40, batch * 40 + 40))
        total = client.submit(sum, incs)
        total.result()
        del incs, total


@pytest.fixture(scope="module")
def dashboard() -> Iterator[tuple[str, Browser, LocalCluster]]:
    """A cluster kept busy, its dashboard's address, and a browser."""
    assert CHROMIUM is not None
    with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        dashboard_address="127.0.0.1:0",
    ) as lc:
        with Client(lc) as client:
            stop = threading.Event()
            worker = threading.Thread(target=_workload, args=(client, stop), daemon=True)
            worker.start()
            browser = Browser(CHROMIUM)
            try:
                assert lc.dashboard_link is not None
                yield lc.dashboard_link.removesuffix("/status"), browser, lc
            finally:
                browser.close()
                stop.set()
                worker.join(timeout=30)


#: page → how many plotly charts it draws
PAGES = {"status": 3, "tasks": 1, "progress": 1, "workers": 4, "graph": 1}


@pytest.mark.parametrize("page", list(PAGES))
def test_page_loads_draws_and_moves(
    dashboard: tuple[str, Browser, LocalCluster], page: str
) -> None:
    base, browser, _ = dashboard
    browser.events.clear()
    browser.send("Page.navigate", url=f"{base}/{page}")
    browser.wait_for(f"document.body && document.body.dataset.page === '{page}'")
    charts = browser.wait_for(
        "document.querySelectorAll('.js-plotly-plot .main-svg').length >= "
        f"{PAGES[page]} && document.querySelectorAll('.js-plotly-plot').length"
    )
    assert charts == PAGES[page]
    # the page talks to the scheduler: its summary line is filled in, no notice shows
    browser.wait_for("document.getElementById('summary').textContent.includes('workers')")
    assert browser.evaluate("document.getElementById('notice').hidden") is True
    # its charts change while work runs (not only the summary line above them)
    first = browser.screenshot("#charts")
    deadline = time.monotonic() + 10
    while browser.screenshot("#charts") == first:
        assert time.monotonic() < deadline, f"/{page} did not change in 10 s of work"
        time.sleep(0.5)
    assert browser.errors() == []


def test_graph_page_says_when_it_is_capped(dashboard: tuple[str, Browser, LocalCluster]) -> None:
    base, browser, lc = dashboard
    assert lc.scheduler is not None and lc.scheduler.http_server is not None
    view = lc.scheduler.http_server.view
    view.graph_limit = 10  # the batches hold 41 tasks
    try:
        browser.events.clear()
        browser.send("Page.navigate", url=f"{base}/graph")
        text = browser.wait_for(
            "!document.getElementById('notice').hidden && "
            "document.getElementById('notice').textContent"
        )
        assert re.fullmatch(
            r"Showing the newest 10 of \d+ tasks \(the view draws at most 10\)\.", text
        ), text
        assert browser.errors() == []
    finally:
        view.graph_limit = 2000


def test_task_stream_has_a_row_per_worker_thread(
    dashboard: tuple[str, Browser, LocalCluster],
) -> None:
    base, browser, lc = dashboard
    browser.events.clear()
    browser.send("Page.navigate", url=f"{base}/tasks")
    # two threads per worker: runs that overlap on a worker are drawn on a second row
    rows = browser.wait_for(
        "(() => { const el = document.getElementById('task-stream');"
        " const rows = el && el.data ? [].concat(...el.data.map((t) => t.y)) : [];"
        " return rows.some((r) => r.endsWith(' #1')) && rows; })()"
    )
    workers = {w.address for w in lc.workers.values()}
    for row in set(rows):
        worker, _, lane = row.rpartition(" #")
        assert worker in workers, row
        assert lane in ("0", "1"), row
    assert browser.errors() == []
