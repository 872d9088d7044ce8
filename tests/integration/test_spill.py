"""Memory on the worker, end to end: results three times the memory limit spill to disk
and come back (to the client, to a peer); a worker short of memory pauses and resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from shoal import Client, LocalCluster, config, get_worker, wait
from shoal.protocol.messages import Message, WorkerStatus
from shoal.scheduler import handlers
from shoal.testing.cluster import cluster
from shoal.worker import memory

MB = 10**6
N = 30
ELEMENTS = 20 * MB // 8  # 20 MB of float64 per result: 600 MB in all


def block(i: int) -> np.ndarray[Any, Any]:
    """A distinct 20 MB result."""
    return np.full(ELEMENTS, float(i))


def total(x: np.ndarray[Any, Any]) -> float:
    return float(x.sum())


def spill_stats() -> dict[str, Any]:
    w = get_worker()
    return {**w.data.stats(), "paused": w.state.paused}


@pytest.fixture
def store_target_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Spill by the store's target only: this test process's own memory (pytest and
    everything else it ran) must not pause or spill the in-process workers."""
    monkeypatch.setenv("SHOAL_WORKER__MEMORY__SPILL", "False")
    monkeypatch.setenv("SHOAL_WORKER__MEMORY__PAUSE", "False")
    config.refresh()
    yield
    monkeypatch.undo()
    config.refresh()


@pytest.mark.timeout(60)
async def test_results_three_times_the_limit_spill_and_come_back(store_target_only: None) -> None:
    kwargs = {"memory_limit": 200 * MB}
    async with cluster(n_workers=2, nthreads=1, worker_kwargs=kwargs) as (s, (a, b)):
        async with Client(s.address, asynchronous=True) as c:
            futures = c.map(block, range(N), workers=[a.address])
            await wait(futures)
            assert set(a.data) == {f.key for f in futures}
            # at most target (60% of 200 MB) in memory, the rest on disk
            assert a.data.fast_nbytes <= 120 * MB
            spilled = a.data.spilled_keys()
            assert len(spilled) >= N - 6
            assert a.data.slow_nbytes >= (N - 6) * 20 * MB
            assert a.metrics()["spilled_bytes"] == a.data.slow_nbytes
            # the scheduler and the state machine still see every key in memory
            assert a.state.memory_keys() == set(a.data)
            assert all(s.state.tasks[f.key].state == "memory" for f in futures)

            # a peer gets a spilled key as a dependency
            first = futures[0]
            assert first.key in spilled
            assert await c.submit(total, first, workers=[b.address]) == 0.0
            assert first.key in b.data

            # the client gets every value back
            for i, f in enumerate(futures):
                x = await f
                assert x.shape == (ELEMENTS,)
                assert x[0] == x[-1] == float(i)
            assert a.data.stats()["unspill_count"] >= N - 6

            directory = a.data.directory
            assert directory is not None
            del futures, first, x
    assert a.data.directory is None  # removed on close


@pytest.fixture
def worker_messages(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Message]]:
    """Every message the scheduler reads from a worker's stream: (worker, message)."""
    seen: list[tuple[str, Message]] = []
    original = handlers.worker_events

    def recording(s: Any, worker: str, msgs: Sequence[Message], now: float) -> list[Any]:
        seen.extend((worker, m) for m in msgs)
        return original(s, worker, msgs, now)

    monkeypatch.setattr(handlers, "worker_events", recording)
    return seen


async def until(condition: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
async def test_a_worker_short_of_memory_pauses_and_resumes(
    monkeypatch: pytest.MonkeyPatch, worker_messages: list[tuple[str, Message]]
) -> None:
    rss = [0]
    monkeypatch.setattr(memory, "process_memory", lambda: rss[0])
    async with cluster(n_workers=1, nthreads=1, worker_kwargs={"memory_limit": 200 * MB}) as (
        s,
        (a,),
    ):

        def statuses() -> list[str]:
            return [
                m.status
                for w, m in worker_messages
                if w == a.address and isinstance(m, WorkerStatus)
            ]

        async with Client(s.address, asynchronous=True) as c:
            x = c.submit(block, 1)
            await x
            rss[0] = 10**12  # far above pause (80% of the limit)
            await until(lambda: statuses() == ["paused"])
            assert a.state.paused
            assert a.metrics()["paused"] is True
            # everything held was spilled, in the hope that memory falls
            assert a.data.spilled_keys() == {x.key}
            y = c.submit(total, x)
            await asyncio.sleep(0.3)
            assert not y.done()  # queued here (or on the scheduler), not run
            assert a.state.executing_count == 0
            rss[0] = 0
            await until(lambda: statuses() == ["paused", "running"])
            assert not a.state.paused
            assert await y == float(ELEMENTS)
            assert await x is not None


@pytest.mark.timeout(60)
def test_a_worker_process_spills_by_its_own_memory() -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, memory_limit=200 * MB, nanny=False) as lc,
        Client(lc) as c,
    ):
        futures = c.map(block, range(N))
        sums = c.gather(c.map(total, futures))
        assert sums == [float(i * ELEMENTS) for i in range(N)]
        ((stats),) = c.run(spill_stats).values()
        assert stats["spilled_keys"] > 0
        assert stats["memory_bytes"] <= 120 * MB
        for i, f in enumerate(futures):
            assert f.result()[-1] == float(i)
