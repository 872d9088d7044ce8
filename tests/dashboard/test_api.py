"""The HTTP API over real HTTP: /health, /metrics, /api/v1/*, against a working cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shoal import Client
from shoal.comm import cross_memory
from shoal.dashboard.views import ClusterView
from shoal.testing.cluster import cluster
from shoal.worker.server import Worker


def inc(x: int) -> int:
    return x + 1


def fail(x: int) -> int:
    raise ValueError(f"bad {x}")


Cluster = tuple[Any, list[Any], Client, str, list[Any]]


@pytest.fixture
async def busy() -> AsyncIterator[Cluster]:
    """A cluster that ran ten ``inc``, one ``sum`` of them and one failing task."""
    async with cluster(
        n_workers=2,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        worker_kwargs={"heartbeat_interval": 0.05},
    ) as (s, ws):
        client = await Client(s.address, asynchronous=True)
        try:
            incs = client.map(inc, range(10))
            total = client.submit(sum, incs)
            bad = client.submit(fail, 1)
            assert await total == sum(range(1, 11))
            with pytest.raises(ValueError, match="bad 1"):
                await bad
            base = f"http://127.0.0.1:{s.services['dashboard']}"
            yield s, ws, client, base, [*incs, total, bad]
        finally:
            await client.close()


async def _settle(s: Any, ws: list[Any]) -> None:
    """Wait until every worker's last heartbeat reports what it holds now."""
    for _ in range(200):
        reported = {a: i["metrics"].get("managed_bytes") for a, i in s.worker_info.items()}
        if reported == {w.address: w.data.fast_nbytes for w in ws}:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("heartbeats never caught up")


async def test_health(busy: Cluster, fetch: Callable[[str], Awaitable[Any]]) -> None:
    s, _, _, base, _ = busy
    assert await fetch(base + "/health") == (200, "text/plain; charset=utf-8", "ok")
    status, _, _ = await fetch(base + "/no-such-page")
    assert status == 404


async def test_workers_endpoint(busy: Cluster, fetch_json: Callable[[str], Awaitable[Any]]) -> None:
    s, ws, _, base, _ = busy
    await _settle(s, ws)
    records = (await fetch_json(base + "/api/v1/workers"))["workers"]
    by_address = {r["address"]: r for r in records}
    assert set(by_address) == {w.address for w in ws}
    for w in ws:
        r = by_address[w.address]
        assert r["name"] == w.name
        assert r["nthreads"] == 1
        assert r["status"] == "running"
        assert r["keys"] == len(s.state.workers[w.address].has_what)
        assert r["memory"]["managed"] == w.data.fast_nbytes
        assert r["memory"]["spilled"] == 0
        assert r["memory"]["rss"] > 0
        assert r["memory"]["unmanaged"] == r["memory"]["rss"] - r["memory"]["managed"]
        assert r["cpu"] >= 0
        assert r["network"]["read_bps"] >= 0
        assert r["transfer_incoming_bytes"] == w.transfer_incoming_bytes
        assert r["transfer_lent_bytes"] == w.lender.lent_bytes_total


async def test_tasks_endpoint(busy: Cluster, fetch_json: Callable[[str], Awaitable[Any]]) -> None:
    s, _, _, base, _ = busy
    tasks = await fetch_json(base + "/api/v1/tasks")
    assert tasks["total"] == len(s.state.tasks) == 12
    assert tasks["states"]["memory"] == 11
    assert tasks["states"]["erred"] == 1
    assert sum(tasks["states"].values()) == 12
    assert tasks["groups"] == {"inc": {"memory": 10}, "sum": {"memory": 1}, "fail": {"erred": 1}}
    assert tasks["prefixes"] == tasks["groups"]
    assert tasks["completed"] == s.task_stream.count == 12


async def test_cluster_endpoint(busy: Cluster, fetch_json: Callable[[str], Awaitable[Any]]) -> None:
    s, _, _, base, _ = busy
    summary = await fetch_json(base + "/api/v1/cluster")
    assert summary["address"] == s.address
    assert (summary["workers"], summary["threads"], summary["clients"]) == (2, 2, 1)
    assert summary["tasks"] == 12
    assert summary["tasks_completed"] == 12
    assert summary["task_rate"] > 0  # twelve runs ended within the last ten seconds


async def test_task_stream_endpoint(
    busy: Cluster, fetch_json: Callable[[str], Awaitable[Any]], fetch: Any
) -> None:
    s, ws, _, base, futures = busy
    stream = await fetch_json(base + "/api/v1/task-stream")
    assert stream["next"] == 12
    records = stream["records"]
    assert sorted(r["key"] for r in records) == sorted(f.key for f in futures)
    assert {r["worker"] for r in records} <= {w.address for w in ws}
    assert all(r["start"] <= r["stop"] for r in records)
    assert sorted(r["status"] for r in records) == ["OK"] * 11 + ["error"]
    assert {r["name"] for r in records} == {"inc", "sum", "fail"}
    # only what is new since the last answer
    assert (await fetch_json(base + "/api/v1/task-stream?since=12"))["records"] == []
    last = await fetch_json(base + "/api/v1/task-stream?since=11")
    assert [r["key"] for r in last["records"]] == [records[-1]["key"]]
    assert len((await fetch_json(base + "/api/v1/task-stream?limit=3"))["records"]) == 3
    status, _, body = await fetch(base + "/api/v1/task-stream?since=abc")
    assert status == 400
    assert "since must be an integer" in body
    status, _, body = await fetch(base + "/api/v1/task-stream?limit=0")
    assert status == 400
    assert "limit must be positive" in body


async def test_graph_endpoint(busy: Cluster, fetch_json: Callable[[str], Awaitable[Any]]) -> None:
    s, _, _, base, futures = busy
    graph = await fetch_json(base + "/api/v1/graph")
    assert (graph["total"], graph["shown"], graph["limit"]) == (12, 12, 2000)
    keys = graph["keys"]
    assert sorted(keys) == sorted(f.key for f in futures)
    states = dict(zip(keys, graph["states"]))
    assert states[futures[-1].key] == "erred"
    assert states[futures[-2].key] == "memory"
    # sum sits one layer right of the ten incs it depends on: ten edges
    depth = dict(zip(keys, graph["x"]))
    assert depth[futures[-2].key] == 1
    assert all(depth[f.key] == 0 for f in futures[:10])
    assert graph["edges"]["count"] == 10
    # a page that has this layout gets only the states
    again = await fetch_json(base + "/api/v1/graph?version=" + graph["version"])
    assert again["version"] == graph["version"]
    assert "x" not in again
    assert again["states"] == graph["states"]


async def test_graph_is_capped(busy: Cluster) -> None:
    s, _, _, _, futures = busy
    graph = ClusterView(s).graph(limit=5)
    assert (graph["total"], graph["shown"], graph["limit"]) == (12, 5, 5)
    # the newest tasks: the last incs, the sum and the failure
    assert graph["keys"] == [f.key for f in futures[-5:]]


async def test_metrics(busy: Cluster, fetch: Callable[[str], Awaitable[Any]]) -> None:
    s, ws, _, base, _ = busy
    await _settle(s, ws)
    status, ctype, body = await fetch(base + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body)}

    def value(family: str, **labels: str) -> float:
        matches = [
            smp.value
            for smp in families[family].samples
            if all(smp.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(matches) == 1, (family, labels, families[family].samples)
        return matches[0]

    assert value("shoal_scheduler_workers") == 2
    assert value("shoal_scheduler_threads") == 2
    assert value("shoal_scheduler_clients") == 1
    for state, n in s.state.counts.items():
        assert value("shoal_scheduler_tasks", state=state) == n
    assert value("shoal_scheduler_tasks", state="memory") == 11
    assert value("shoal_scheduler_tasks_by_prefix", prefix="inc", state="memory") == 10
    assert value("shoal_scheduler_tasks_by_prefix", prefix="fail", state="erred") == 1
    assert families["shoal_tasks_completed"].type == "counter"
    assert value("shoal_tasks_completed") == 12
    assert value("shoal_tasks_per_second") > 0
    assert value("shoal_scheduler_bytes_in_memory") == sum(
        ws_.nbytes for ws_ in s.state.workers.values()
    )
    for w in ws:
        assert value("shoal_worker_managed_bytes", worker=w.address) == w.data.fast_nbytes
        assert value("shoal_worker_spilled_bytes", worker=w.address) == 0
        assert value("shoal_worker_rss_bytes", worker=w.address) > 0
        assert value("shoal_worker_threads", worker=w.address, name=w.name) == 1
        assert value("shoal_worker_memory_limit_bytes", worker=w.address) == w.memory_limit
        assert (
            value("shoal_worker_transfer_incoming_bytes", worker=w.address)
            == w.transfer_incoming_bytes
        )
        for direction in ("read", "write"):
            assert (
                value(
                    "shoal_worker_network_bytes_per_second", worker=w.address, direction=direction
                )
                >= 0
            )
    fetched = sum(w.transfer_incoming_bytes for w in ws)
    assert value("shoal_transfer_incoming_bytes") == fetched
    holders = {ws_.address for ts in s.state.tasks.values() for ws_ in ts.who_has}
    if len(holders) == 2:  # the incs were spread: sum fetched some from the other worker
        assert fetched > 0


async def test_metrics_count_bytes_lent_to_same_host_askers(
    busy: Cluster, fetch: Callable[[str], Awaitable[Any]]
) -> None:
    s, ws, client, base, _ = busy
    [x] = await client.scatter([np.ones(9 * 2**20 // 8)], workers=[ws[0].address])
    assert (await x).nbytes == 9 * 2**20  # gathered by copying it out of the worker's memory
    lent = ws[0].lender.lent_bytes_total
    assert lent == 9 * 2**20 or not cross_memory.enabled()
    for _ in range(200):  # until a heartbeat has reported it
        _, _, body = await fetch(base + "/metrics")
        samples = {
            smp.labels["worker"]: smp.value
            for f in text_string_to_metric_families(body)
            if f.name == "shoal_worker_transfer_lent_bytes"
            for smp in f.samples
        }
        if samples == {ws[0].address: lent, ws[1].address: 0}:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(samples)


async def test_metrics_escape_label_values(fetch: Callable[[str], Awaitable[Any]]) -> None:
    odd = 'odd "name"\\ with\nnewline'
    async with cluster(n_workers=0, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as (
        s,
        _,
    ):
        async with Worker(s.address, nthreads=1, name=odd):
            status, _, body = await fetch(f"http://127.0.0.1:{s.services['dashboard']}/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body)}
        [sample] = families["shoal_worker_threads"].samples
        assert sample.labels["name"] == odd
