"""performance_report writes one self-contained HTML file (sync and async)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shoal import Client, performance_report, wait
from shoal.diagnostics.report import prefix_summary, worker_summary


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError("boom")


def check_self_contained(text: str) -> None:
    assert text.startswith("<!DOCTYPE html>")
    # no script loaded from the network: plotly.js is inlined
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert "<script" in text and "Plotly.newPlot" in text


def test_report_has_the_stream_prefixes_workers_and_code(client: Client, tmp_path: Path) -> None:
    # before the block: not in the report
    wait(client.map(inc, range(1000, 1005), key=[f"before-{i}" for i in range(5)]))
    path = tmp_path / "report.html"
    with performance_report(filename=str(path)):
        wait(client.map(inc, range(20), key=[f"report-inc-{i}" for i in range(20)]))
        wait(client.submit(boom, 1, key="report-boom"))
    text = path.read_text()
    check_self_contained(text)
    text, code = text.split("<h2>Code</h2>")
    assert "report-inc-7" in text  # the task stream's hover text
    assert "before-" not in text
    assert "report-boom" in text
    assert "<td>report-inc</td><td>20</td><td>0</td>" in text  # prefix table
    assert "<td>report-boom</td><td>1</td><td>1</td>" in text
    for address in client.scheduler_info()["workers"]:
        assert address in text
    assert "<th>Tasks</th>" not in text  # facts are rows, not headers
    assert re.search(r"<td>Tasks</td><td>21</td>", text)
    # the code that ran the block (this test's source)
    assert "def test_report_has_the_stream_prefixes_workers_and_code" in code


def test_report_of_nothing_still_renders(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "empty.html"
    with performance_report(filename=str(path)):
        pass
    text = path.read_text()
    check_self_contained(text)
    assert re.search(r"<td>Tasks</td><td>0</td>", text)


def test_wrong_mode_or_wrong_with(client: Client, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inline"):
        performance_report(filename=str(tmp_path / "x.html"), mode="cdn")
    with pytest.raises(ValueError, match=r"writes a local file, not 's3://b/r\.html'"):
        performance_report(filename="s3://b/r.html")
    with pytest.raises(ValueError, match="with storage_options: give a local path"):
        performance_report(filename=str(tmp_path / "x.html"), storage_options={"anon": True})


async def test_async_with(c_s_ws: tuple[Client, Any, list[Any]], tmp_path: Path) -> None:
    c, _, ws = c_s_ws
    path = tmp_path / "async.html"
    async with performance_report(filename=str(path)):
        await c.gather(c.map(inc, range(8), key=[f"async-inc-{i}" for i in range(8)]))
    text = path.read_text()
    check_self_contained(text)
    assert "async-inc-3" in text
    assert re.search(r"<td>Tasks</td><td>8</td>", text)
    for w in ws:
        assert w.address in text
    with pytest.raises(RuntimeError, match="async with"):
        with performance_report(filename=str(tmp_path / "no.html")):
            pass


def test_summaries() -> None:
    def rec(key: str, worker: str, start: float, stop: float, status: str = "OK") -> Any:
        return {
            "key": key,
            "name": key.rsplit("-", 1)[0],
            "worker": worker,
            "status": status,
            "nbytes": 8,
            "startstops": ({"action": "compute", "start": start, "stop": stop},),
        }

    records = [
        rec("a-1", "w1", 0, 1),
        rec("a-2", "w1", 1, 3),
        rec("b-1", "w2", 0, 0.5, "error"),
        rec("a-3", "gone", 0, 1),
    ]
    (a, b) = prefix_summary(records)
    assert (a["name"], a["count"], a["total"], a["mean"], a["max"]) == ("a", 3, 4.0, 4 / 3, 2.0)
    assert (b["name"], b["count"], b["erred"]) == ("b", 1, 1)
    workers = {"w1": {"name": "one", "nthreads": 2}, "w2": {"name": "two", "nthreads": 1}}
    rows = {r["address"]: r for r in worker_summary(records, workers, duration=4.0)}
    assert rows["w1"]["tasks"] == 2 and rows["w1"]["utilization"] == 3 / 8
    assert rows["w2"]["utilization"] == 0.5 / 4
    assert rows["gone"]["name"] == "(gone)" and rows["gone"]["utilization"] is None


def test_worker_processes(tmp_path: Path) -> None:
    """Progress, the task stream and the report with workers in their own processes."""
    import io

    from shoal import LocalCluster, progress

    path = tmp_path / "procs.html"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as lc:
        with Client(lc) as c:  # the newest default client: the report's
            with performance_report(filename=str(path)):
                futures = c.map(inc, range(6), key=[f"proc-inc-{i}" for i in range(6)])
                out = io.StringIO()
                progress(futures, file=out)
            assert "6/6" in out.getvalue()
            records = c.get_task_stream()
            workers = set(c.scheduler_info()["workers"])
            assert {r["worker"] for r in records} <= workers
    text = path.read_text()
    check_self_contained(text)
    assert "proc-inc-5" in text
