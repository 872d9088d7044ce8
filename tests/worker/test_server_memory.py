"""The worker server with its SpillStore: scatter, local_directory, read errors, and a
paused worker that registers again."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal import Client, config
from shoal.protocol.messages import Message, WorkerStatus
from shoal.scheduler import handlers
from shoal.testing.cluster import cluster
from shoal.worker import memory

MB = 10**6


def total(x: Any) -> float:
    return float(np.sum(x))


@pytest.fixture
def no_process_thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the store's target spills (this test process's memory must not matter)."""
    monkeypatch.setenv("SHOAL_WORKER__MEMORY__SPILL", "False")
    monkeypatch.setenv("SHOAL_WORKER__MEMORY__PAUSE", "False")
    config.refresh()
    yield
    monkeypatch.undo()
    config.refresh()


def removed(directory: str, keep: Path) -> bool:
    """The store's directory is gone, its parent is not."""
    return not os.path.exists(directory) and keep.exists()


async def until(condition: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
async def test_scattered_values_spill_and_come_back(
    no_process_thresholds: None, tmp_path: Path
) -> None:
    kwargs = {"memory_limit": 10 * MB, "local_directory": str(tmp_path)}
    async with cluster(n_workers=1, worker_kwargs=kwargs) as (s, (a,)):
        async with Client(s.address, asynchronous=True) as c:
            arrays = [np.full(MB // 8, float(i)) for i in range(12)]  # 12 MB
            futures = await c.scatter(arrays)
            assert a.data.spilled_keys()
            assert a.data.fast_nbytes <= 6 * MB
            directory = a.data.directory
            assert directory is not None
            assert Path(directory).parent == tmp_path
            back = await c.gather(futures)
            for x, y in zip(arrays, back, strict=True):
                np.testing.assert_array_equal(x, y)
            assert await c.submit(total, futures[0]) == 0.0
    assert removed(directory, keep=tmp_path)


@pytest.mark.timeout(60)
async def test_a_spilled_dependency_that_cannot_be_read_fails_the_task(
    no_process_thresholds: None,
) -> None:
    async with cluster(n_workers=1, worker_kwargs={"memory_limit": 100 * MB}) as (s, (a,)):
        async with Client(s.address, asynchronous=True) as c:
            (x,) = await c.scatter([np.ones(1000)])
            assert a.data.evict() == 8000
            directory = a.data.directory
            assert directory is not None
            for name in os.listdir(directory):
                os.remove(os.path.join(directory, name))
            with pytest.raises(FileNotFoundError):
                await c.submit(total, x)
            assert a.status == "running"


@pytest.mark.timeout(60)
async def test_a_paused_worker_that_registers_again_says_it_is_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, Message]] = []
    original = handlers.worker_events

    def recording(s: Any, worker: str, msgs: Sequence[Message], now: float) -> list[Any]:
        seen.extend((worker, m) for m in msgs)
        return original(s, worker, msgs, now)

    monkeypatch.setattr(handlers, "worker_events", recording)
    monkeypatch.setattr(memory, "process_memory", lambda: 10**12)
    async with cluster(n_workers=1, worker_kwargs={"memory_limit": 100 * MB}) as (s, (a,)):

        def statuses() -> list[str]:
            return [m.status for w, m in seen if isinstance(m, WorkerStatus)]

        await until(lambda: statuses() == ["paused"])
        old_stream = s.worker_streams[a.address]
        assert a._stream is not None
        a._stream.conn.abort()
        await until(lambda: s.worker_streams.get(a.address) not in (None, old_stream))
        await until(lambda: statuses() == ["paused", "paused"])
        assert a.state.paused
        monkeypatch.setattr(memory, "process_memory", lambda: 0)
        await until(lambda: statuses() == ["paused", "paused", "running"])
        assert not a.state.paused
