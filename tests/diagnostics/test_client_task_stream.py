"""client.get_task_stream and shoal.get_task_stream on real clusters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shoal import Client, get_task_stream, wait


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError("boom")


def check_record(r: dict[str, Any], workers: set[str]) -> None:
    assert r["worker"] in workers
    assert r["status"] in ("OK", "error")
    (ss,) = r["startstops"]
    assert ss["action"] == "compute"
    assert ss["start"] <= ss["stop"]


def test_records_have_distributeds_shape(client: Client) -> None:
    futures = client.map(inc, range(10), key=[f"ts-inc-{i}" for i in range(10)])
    wait(futures)
    records = client.get_task_stream()
    mine = {r["key"]: r for r in records if str(r["key"]).startswith("ts-inc-")}
    assert set(mine) == {f"ts-inc-{i}" for i in range(10)}
    workers = set(client.scheduler_info()["workers"])
    for r in mine.values():
        check_record(r, workers)
        assert r["status"] == "OK"
        assert r["name"] == "ts-inc"
        assert r["nbytes"] > 0


def test_count_start_and_stop(client: Client) -> None:
    wait(client.map(inc, range(300, 305)))
    assert len(client.get_task_stream(count=3)) == 3
    assert client.get_task_stream(count=0) == []
    future = time.time() + 3600
    assert client.get_task_stream(start=future) == []
    assert client.get_task_stream(stop=0) == []
    everything = client.get_task_stream()
    assert client.get_task_stream(start="1h") == everything  # "an hour ago"
    cut = everything[-1]["startstops"][0]["stop"]
    assert client.get_task_stream(start=cut) == [
        r for r in everything if r["startstops"][0]["stop"] >= cut
    ]


def test_erred_run_has_error_status(client: Client) -> None:
    f = client.submit(boom, 1, key="ts-boom")
    wait(f)
    (r,) = [r for r in client.get_task_stream() if r["key"] == "ts-boom"]
    assert r["status"] == "error"


def test_context_manager_keeps_only_the_block(client: Client) -> None:
    wait(client.map(inc, range(400, 404)))  # before: not in the block's stream
    with get_task_stream(client) as ts:
        wait(client.map(inc, range(500, 507)))
    assert len(ts.data) == 7
    assert {r["name"] for r in ts.data} == {"inc"}

    with get_task_stream() as ts2:  # the default client
        wait(client.submit(inc, 600))
    assert len(ts2.data) == 1


def test_plot_and_save(client: Client, tmp_path: Path) -> None:
    wait(client.map(inc, range(700, 704)))
    records, fig = client.get_task_stream(count=4, plot=True)
    assert len(records) == 4
    assert fig.data and sum(len(t.x) for t in fig.data) == 4
    path = tmp_path / "ts.html"
    client.get_task_stream(count=4, plot="save", filename=str(path))
    text = path.read_text()
    assert "Plotly.newPlot" in text
    with get_task_stream(client, plot="save", filename=str(tmp_path / "cm.html")) as ts:
        wait(client.submit(inc, 800))
    assert ts.figure is not None and (tmp_path / "cm.html").exists()


def test_bad_arguments(client: Client) -> None:
    with pytest.raises(ValueError, match="count"):
        client.get_task_stream(count=-1)
    with pytest.raises(TypeError, match="Unix times"):
        client.get_task_stream(start=[1])  # type: ignore[arg-type]


async def test_async_client(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, s, ws = c_s_ws
    await c.gather(c.map(inc, range(3)))
    records = await c.get_task_stream()
    assert len(records) == 3
    workers = {w.address for w in ws}
    for r in records:
        check_record(r, workers)
    async with get_task_stream(c) as ts:
        await c.gather(c.map(inc, range(10, 15)))
    assert len(ts.data) == 5
    with pytest.raises(RuntimeError, match="async with"):
        with get_task_stream(c):
            pass
