"""Where the dashboard listens: addresses, the busy-port fallback, off switches, links."""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from shoal import Client, LocalCluster
from shoal.dashboard.server import parse_dashboard_address
from shoal.scheduler.server import Scheduler
from shoal.testing.cluster import cluster


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":8787", ("", 8787)),
        ("8787", ("", 8787)),
        (8787, ("", 8787)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("http://localhost:9000/", ("localhost", 9000)),
    ],
)
def test_parse_dashboard_address(address: Any, expected: tuple[str, int]) -> None:
    assert parse_dashboard_address(address) == expected


def test_parse_dashboard_address_default_host() -> None:
    assert parse_dashboard_address(":0", "10.1.2.3") == ("10.1.2.3", 0)


@pytest.mark.parametrize("bad", ["", "nonsense", "host:port", ":70000", ":-1"])
def test_bad_dashboard_address_says_what_to_give(bad: str) -> None:
    with pytest.raises(ValueError, match=r"invalid dashboard address.*':8787'.*None turns"):
        parse_dashboard_address(bad)
    with pytest.raises(ValueError, match="invalid dashboard address"):
        Scheduler(dashboard_address=bad)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_busy_port_falls_back_to_a_random_one(
    busy_port: int, caplog: pytest.LogCaptureFixture, fetch: Callable[[str], Awaitable[Any]]
) -> None:
    with caplog.at_level(logging.WARNING, logger="shoal.dashboard"):
        async with Scheduler(host="127.0.0.1", dashboard_address=f":{busy_port}") as s:
            port = s.services["dashboard"]
            assert port != busy_port
            assert s.dashboard_link == f"http://127.0.0.1:{port}/status"
            assert (await fetch(f"http://127.0.0.1:{port}/health"))[0] == 200
    [record] = [r for r in caplog.records if r.name == "shoal.dashboard"]
    assert record.levelno == logging.WARNING
    assert f"Port {busy_port} is already in use" in record.getMessage()
    assert f"port {port} instead" in record.getMessage()


async def test_an_address_it_cannot_use_fails_the_start() -> None:
    s = Scheduler(host="127.0.0.1", dashboard_address="192.0.2.1:0")  # TEST-NET: not ours
    with pytest.raises(
        OSError, match=r"dashboard could not listen on 192\.0\.2\.1:0.*dashboard_address=None"
    ):
        await s.start()
    await s.close()


async def test_no_dashboard() -> None:
    async with cluster(n_workers=1) as (s, _):  # test clusters serve none unless asked
        assert s.http_server is None
        assert s.dashboard_link is None
        client = await Client(s.address, asynchronous=True)
        try:
            info = await client.scheduler_info()
            assert info["services"] == {}
            assert client.dashboard_link is None
        finally:
            await client.close()


async def test_api_without_pages(fetch: Callable[[str], Awaitable[Any]]) -> None:
    async with Scheduler(host="127.0.0.1", dashboard_address=":0", dashboard=False) as s:
        base = f"http://127.0.0.1:{s.services['dashboard']}"
        assert (await fetch(base + "/health"))[0] == 200
        assert (await fetch(base + "/metrics"))[0] == 200
        assert (await fetch(base + "/api/v1/workers"))[0] == 200
        for page in ("/status", "/workers", "/statics/plotly.min.js"):
            assert (await fetch(base + page))[0] == 404


async def test_close_stops_serving() -> None:
    s = await Scheduler(host="127.0.0.1", dashboard_address=":0")
    port = s.services["dashboard"]

    def keep_alive() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/v1/workers")
        conn.getresponse().read()
        return conn  # left open, as a page polling the API keeps it

    conn = await asyncio.to_thread(keep_alive)
    await asyncio.wait_for(s.close(), 10)  # an open connection does not hold it up
    conn.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


async def test_pages_and_static_files(fetch: Callable[[str], Awaitable[Any]]) -> None:
    async with Scheduler(host="127.0.0.1", dashboard_address=":0") as s:
        base = f"http://127.0.0.1:{s.services['dashboard']}"
        for page in ("status", "tasks", "progress", "workers", "graph"):
            status, ctype, body = await fetch(f"{base}/{page}")
            assert status == 200
            assert ctype.startswith("text/html")
            assert f'data-page="{page}"' in body
            assert "/statics/plotly.min.js" in body
        status, _, body = await fetch(base + "/")  # redirected to /status
        assert status == 200
        assert 'data-page="status"' in body
        status, ctype, js = await fetch(base + "/statics/plotly.min.js")
        assert status == 200
        assert "javascript" in ctype
        assert len(js) > 1_000_000  # the real library, from the plotly package
        assert (await fetch(base + "/statics/dashboard.js"))[0] == 200
        assert (await fetch(base + "/statics/dashboard.css"))[0] == 200


def test_local_cluster_and_client_links(get_url: Callable[[str], Any]) -> None:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=":0"
    ) as lc:
        assert lc.scheduler is not None
        port = lc.scheduler.services["dashboard"]
        assert lc.dashboard_link == f"http://127.0.0.1:{port}/status"
        status, ctype, _ = get_url(lc.dashboard_link)
        assert (status, ctype.split(";")[0]) == (200, "text/html")
        with Client(lc) as c:
            assert c.dashboard_link == lc.dashboard_link
        # a client given only the address builds the link from scheduler_info()
        with Client(lc.scheduler_address) as c:
            assert c.scheduler_info()["services"] == {"dashboard": port}
            assert c.dashboard_link == lc.dashboard_link


def test_local_cluster_without_dashboard() -> None:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as lc:
        assert lc.dashboard_link is None


async def test_async_client_link_needs_scheduler_info_first() -> None:
    async with cluster(n_workers=0, scheduler_kwargs={"dashboard_address": ":0"}) as (s, _):
        client = await Client(s.address, asynchronous=True)
        try:
            with pytest.raises(RuntimeError, match=r"await client.scheduler_info\(\)"):
                _ = client.dashboard_link
            await client.scheduler_info()
            assert client.dashboard_link == s.dashboard_link
        finally:
            await client.close()


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli.main", "scheduler", "--host", "127.0.0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """The rest of the first output line starting with ``prefix`` (the process runs on)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"{prefix!r} not printed:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_cli_dashboard(busy_port: int, get_url: Callable[[str], Any]) -> None:
    proc = _cli("--port", "0", "--dashboard-address", f"127.0.0.1:{busy_port}")
    try:
        warning = _wait_line(proc, "")  # the first line: the busy port's warning
        while "already in use" not in warning:
            warning = _wait_line(proc, "")
        link = _wait_line(proc, "Dashboard at: ")
        assert link.startswith("http://127.0.0.1:")
        assert link.endswith("/status")
        assert f":{busy_port}/" not in link
        assert get_url(link)[0] == 200
        assert get_url(link.replace("/status", "/health"))[2] == "ok"
    finally:
        _stop(proc)


def test_cli_no_dashboard(get_url: Callable[[str], Any]) -> None:
    proc = _cli("--port", "0", "--dashboard-address", ":0", "--no-dashboard")
    try:
        link = _wait_line(proc, "HTTP API (no dashboard) at: ")
        assert get_url(link + "/health")[2] == "ok"
        assert get_url(link + "/status")[0] == 404
    finally:
        _stop(proc)


def test_cli_bad_dashboard_address() -> None:
    proc = _cli("--dashboard-address", "nowhere")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--dashboard-address" in out
    assert "invalid dashboard address" in out
