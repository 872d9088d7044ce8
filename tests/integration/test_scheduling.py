"""Scheduling end to end: queuing, stealing, restrictions, retirement, replicate, rebalance."""

from __future__ import annotations

import asyncio
import time

import pytest

from shoal import Client
from shoal.errors import NoValidWorker
from shoal.testing.cluster import cluster
from shoal.worker.execute import get_worker
from shoal.worker.server import Worker


def where(x: object, delay: float = 0.0) -> str:
    """Sleep ``delay`` seconds, then say which worker ran this."""
    time.sleep(delay)
    return get_worker().address


def inc(x: int) -> int:
    return x + 1


def transitions_to(s: object, key: object, state: str) -> int:
    log = s.state.transition_log  # type: ignore[attr-defined]
    return sum(1 for r in log if r.key == key and r.finish == state)


async def test_tasks_drawn_to_one_worker_by_locality_are_shared_with_an_idle_one() -> None:
    async with cluster(n_workers=2, nthreads=1) as (s, (a, b)):
        async with Client(s.address, asynchronous=True) as c:
            inputs = await c.scatter(list(range(40)), workers=[a.address])
            futures = [c.submit(where, x, 0.05, pure=False) for x in inputs]
            ran_on = await c.gather(futures)
            assert set(ran_on) == {a.address, b.address}
            # Each task ran once: a stolen task is never run twice.
            for f in futures:
                assert transitions_to(s, f.key, "memory") == 1


async def test_root_tasks_are_queued_on_the_scheduler_not_flooded_to_workers() -> None:
    async with cluster(n_workers=2, nthreads=1) as (s, (a, b)):
        async with Client(s.address, asynchronous=True) as c:
            futures = c.map(where, range(100), delay=0.01)
            while not s.state.counts["queued"]:
                await asyncio.sleep(0.001)
            for ws in s.state.workers.values():
                assert len(ws.processing) <= 2  # ceil(1.1 * 1 thread)
            ran_on = await c.gather(futures)
            assert set(ran_on) == {a.address, b.address}
            assert s.state.counts["queued"] == 0


async def test_a_resource_restricted_task_waits_for_the_worker_that_has_the_resource() -> None:
    async with cluster(n_workers=1, nthreads=1) as (s, (plain,)):
        async with Client(s.address, asynchronous=True) as c:
            fut = c.submit(where, 1, resources={"GPU": 1})
            await asyncio.sleep(0.3)
            assert fut.status == "pending"
            assert s.state.tasks[fut.key].state == "no-worker"
            async with Worker(s.address, nthreads=1, resources={"GPU": 1}, name="gpu") as gpu:
                assert await fut == gpu.address
                others = await c.gather(c.map(where, range(4), resources={"GPU": 1}))
                assert set(others) == {gpu.address}
            assert plain.address not in others


async def test_a_task_no_worker_could_ever_run_errs_with_a_clear_message() -> None:
    async with cluster(n_workers=1, nthreads=1) as (s, _):
        s.state.no_workers_timeout = 0.3
        async with Client(s.address, asynchronous=True) as c:
            fut = c.submit(inc, 1, resources={"GPU": 4}, key="needs-gpus")
            with pytest.raises(NoValidWorker, match=r"needs-gpus.*GPU.*--resources"):
                await fut


async def test_retiring_a_worker_keeps_the_only_copy_of_its_data() -> None:
    async with cluster(n_workers=2, nthreads=1) as (s, (a, b)):
        async with Client(s.address, asynchronous=True) as c:
            [x] = await c.scatter([10], workers=[a.address])
            y = c.submit(inc, x)
            assert await y == 11
            assert (await c.who_has([x, y])) == {x.key: [a.address], y.key: [a.address]}
            retired = await c.retire_workers([a.address])
            assert list(retired) == [a.address]
            assert a.status == "closed"
            assert (await c.who_has([x, y])) == {x.key: [b.address], y.key: [b.address]}
            assert await c.gather([x, y]) == [10, 11]
            # Nothing was recomputed: inc ran once.
            assert transitions_to(s, y.key, "memory") == 1


async def test_retiring_hands_unstarted_tasks_to_the_other_workers() -> None:
    async with cluster(n_workers=2, nthreads=1, validate=False) as (s, (a, b)):
        async with Client(s.address, asynchronous=True) as c:
            inputs = await c.scatter(list(range(20)), workers=[a.address])
            futures = [c.submit(where, x, 0.05, pure=False) for x in inputs]
            while not s.state.workers[a.address].processing:
                await asyncio.sleep(0.001)
            await c.retire_workers([a.address])
            ran_on = await c.gather(futures)
            assert ran_on.count(b.address) >= 15
            for f in futures:
                assert transitions_to(s, f.key, "memory") == 1


async def test_retiring_the_last_worker_is_refused_while_it_holds_data() -> None:
    async with cluster(n_workers=1, nthreads=1) as (s, (a,)):
        async with Client(s.address, asynchronous=True) as c:
            x = await c.scatter(1)
            assert await c.retire_workers([a.address]) == {}
            assert a.status == "running"
            assert await x == 1
            del x
            while s.state.tasks:
                await asyncio.sleep(0.01)
            assert list(await c.retire_workers([a.address])) == [a.address]


async def test_retire_by_name_and_by_count() -> None:
    async with cluster(n_workers=3, nthreads=1) as (s, ws):
        async with Client(s.address, asynchronous=True) as c:
            futures = c.map(inc, range(10))
            await c.gather(futures)
            retired = await c.retire_workers(["w0"])
            assert [info["name"] for info in retired.values()] == ["w0"]
            retired = await c.retire_workers(n=1)
            assert len(retired) == 1
            assert len(await c.nthreads()) == 1
            assert await c.gather(futures) == list(range(1, 11))


async def test_replicate_adds_and_removes_copies() -> None:
    async with cluster(n_workers=3, nthreads=1) as (s, ws):
        async with Client(s.address, asynchronous=True) as c:
            [x] = await c.scatter([123], workers=[ws[0].address])
            await c.replicate([x], n=3)
            assert len((await c.who_has([x]))[x.key]) == 3
            await c.replicate([x], n=1)
            assert len((await c.who_has([x]))[x.key]) == 1
            await c.replicate([x])  # every worker
            assert len((await c.who_has([x]))[x.key]) == 3
            assert await x == 123
            with pytest.raises(ValueError, match="at least 1"):
                c.replicate([x], n=0)


async def test_rebalance_evens_out_the_bytes_held() -> None:
    async with cluster(n_workers=2, nthreads=1) as (s, (a, b)):
        async with Client(s.address, asynchronous=True) as c:
            values = [bytes([i]) * 10_000 for i in range(10)]
            futures = await c.scatter(values, workers=[a.address])
            await c.rebalance()
            has = await c.has_what()
            assert 3 <= len(has[b.address]) <= 7
            assert len(has[a.address]) + len(has[b.address]) == 10  # moved, not copied
            assert await c.gather(futures) == values


ORDER: list[str] = []


def record(name: str, delay: float = 0.0) -> None:
    time.sleep(delay)
    ORDER.append(name)


@pytest.mark.parametrize("saturation", [1.1, float("inf")])
async def test_priorities_decide_the_order_fifo_otherwise(saturation: float) -> None:
    ORDER.clear()
    kwargs = {"worker_saturation": saturation}
    async with cluster(n_workers=1, nthreads=1, scheduler_kwargs=kwargs) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            blocker = c.submit(record, "blocker", 0.3)
            while not s.state.workers or not next(iter(s.state.workers.values())).processing:
                await asyncio.sleep(0.001)
            lows = [c.submit(record, f"low{i}", pure=False) for i in range(5)]
            high = c.submit(record, "high", priority=10)
            await c.gather([blocker, *lows, high])
    assert ORDER[0] == "blocker"
    # With queuing one low task may already sit on the worker when "high" arrives.
    assert ORDER.index("high") <= (1 if saturation == float("inf") else 2)
    assert [n for n in ORDER if n.startswith("low")] == [f"low{i}" for i in range(5)]
