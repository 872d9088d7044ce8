"""Scheduler plugins and the task stream, on a real scheduler with real workers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shoal import Client, config
from shoal.scheduler import server as server_module
from shoal.scheduler.plugins import SchedulerPlugin
from shoal.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


def nap(x: int) -> int:
    time.sleep(0.05)
    return x


def boom(x: int) -> int:
    raise ValueError("boom")


class Recorder(SchedulerPlugin):
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.started = self.closed = False

    async def start(self, scheduler: Any) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def update_graph(
        self, scheduler: Any, *, client: str, keys: set[Any], tasks: list[Any]
    ) -> None:
        self.calls.append(("update_graph", client, frozenset(keys), tuple(tasks)))

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("transition", key, start, finish, kwargs))

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.calls.append(("add_worker", worker))

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.calls.append(("remove_worker", worker))

    def add_client(self, scheduler: Any, client: str) -> None:
        self.calls.append(("add_client", client))

    def remove_client(self, scheduler: Any, client: str) -> None:
        self.calls.append(("remove_client", client))

    def log_event(self, topic: str, msg: Any) -> None:
        self.calls.append(("log_event", topic, msg))


class Broken(SchedulerPlugin):
    def transition(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a plugin bug")

    def add_client(self, scheduler: Any, client: str) -> None:
        raise RuntimeError("another plugin bug")


async def test_hooks_see_workers_clients_graphs_and_transitions() -> None:
    rec = Recorder()
    async with cluster(n_workers=1, scheduler_kwargs={"plugins": [rec, Broken()]}) as (s, ws):
        assert rec.started
        assert ("add_worker", ws[0].address) in rec.calls
        async with Client(s.address, asynchronous=True) as c:
            cid = c.id
            assert await c.submit(inc, 1, key="inc-1") == 2
            fut = c.submit(boom, 1, key="boom-1")
            await asyncio.wait_for(fut.exception(), 10)
        s.log_event("my-topic", {"x": 1})
        assert [t for _, t in s.events["my-topic"]] == [{"x": 1}]
        await asyncio.sleep(0.2)
    assert rec.closed
    assert ("add_client", cid) in rec.calls
    assert ("remove_client", cid) in rec.calls
    assert ("update_graph", cid, frozenset({"inc-1"}), ("inc-1",)) in rec.calls
    assert ("log_event", "my-topic", {"x": 1}) in rec.calls
    done = [c for c in rec.calls if c[0] == "transition" and c[1] == "inc-1" and c[3] == "memory"]
    assert len(done) == 1
    kwargs = done[0][4]
    assert kwargs["worker"] == ws[0].address
    (ss,) = kwargs["startstops"]
    assert ss["action"] == "compute" and ss["start"] <= ss["stop"]
    assert kwargs["type"] == "int"
    erred = [c for c in rec.calls if c[0] == "transition" and c[1] == "boom-1" and c[3] == "erred"]
    assert erred and "boom" in erred[0][4]["exception_text"]


async def test_task_stream_records_each_run_and_pages() -> None:
    async with cluster(n_workers=2) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            await c.gather(c.map(inc, range(10)))
            with_error = c.submit(boom, 0)
            await asyncio.wait_for(with_error.exception(), 10)
        index, records = s.task_stream.since(0)
        assert index == 11 and len(records) == 11
        assert {r["name"] for r in records} == {"inc", "boom"}
        assert sum(r["status"] == "error" for r in records) == 1
        assert all(r["start"] <= r["stop"] and r["worker"] in s.worker_info for r in records)
        assert s.task_stream.since(index) == (11, [])
        assert len(s.task_stream.since(9)[1]) == 2


async def test_plugin_added_and_removed_at_runtime() -> None:
    async with cluster(n_workers=1) as (s, _):
        rec = Recorder()
        assert await s.add_plugin(rec) == "recorder"
        assert rec.started and s.state.transition_listener is not None
        await s.remove_plugin("recorder")
        assert rec.closed and s.state.transition_listener is None


@pytest.fixture
def trims(fresh_config: pytest.MonkeyPatch) -> list[int]:
    """The task-stream counts at which the scheduler trims its heap (every 20 tasks at
    most). The libc call itself is tested by the worker's memory tests."""
    fresh_config.setenv("SHOAL_SCHEDULER__TRIM_MEMORY_AFTER", "20")
    config.refresh()
    counts: list[int] = []
    fresh_config.setattr(server_module, "trim_memory", lambda: counts.append(0) or True)
    return counts


async def test_the_heap_is_trimmed_once_a_large_batch_of_tasks_drains(trims: list[int]) -> None:
    async with cluster(n_workers=2) as (s, _), Client(s.address, asynchronous=True) as c:
        await c.gather(c.map(inc, range(10)))
        assert trims == []  # fewer tasks than the threshold
        futures = c.map(nap, range(30))  # 0.75 s on two workers
        while s.task_stream.count < 20:
            await asyncio.sleep(0.01)
        assert trims == []  # past the threshold, but tasks are still to run
        await c.gather(futures)
        while not trims:
            await asyncio.sleep(0.01)
        assert len(trims) == 1 and s.task_stream.count == 40


async def test_the_heap_is_trimmed_at_intervals_while_a_task_stays_active(
    trims: list[int], fresh_config: pytest.MonkeyPatch
) -> None:
    fresh_config.setattr(server_module, "TRIM_INTERVAL", 0.5)
    async with cluster(n_workers=2) as (s, _), Client(s.address, asynchronous=True) as c:
        long = c.submit(time.sleep, 3.0, pure=False)  # active all along
        await asyncio.sleep(0.6)  # past the interval since the scheduler started
        await c.gather(c.map(inc, range(25)))
        while not trims:
            await asyncio.sleep(0.01)
        assert long.status == "pending"
        assert len(trims) == 1  # once: the next takes another 20 tasks
        await c.gather(c.map(inc, range(100, 110)))
        assert len(trims) == 1
        await long
