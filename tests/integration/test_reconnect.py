"""Connections that break: workers register again, or give up after a while."""

from __future__ import annotations

import asyncio

import pytest

from shoal import Client, config
from shoal.scheduler.server import Scheduler
from shoal.testing.cluster import cluster
from shoal.worker.server import Worker


def inc(x: int) -> int:
    return x + 1


@pytest.fixture
def short_reconnect(fresh_config: pytest.MonkeyPatch) -> None:
    fresh_config.setenv("SHOAL_WORKER__RECONNECT_TIMEOUT", "1.0")
    config.refresh()


async def test_a_worker_whose_connection_blips_registers_again_with_its_data() -> None:
    async with cluster(n_workers=2, nthreads=1) as (s, (a, b)):
        async with Client(s.address, asynchronous=True) as c:
            x = c.submit(inc, 1, workers=[a.address])
            assert await x == 2
            old_stream = s.worker_streams[a.address]
            a._stream.conn.abort()  # type: ignore[union-attr]
            while s.worker_streams.get(a.address) in (None, old_stream):
                await asyncio.sleep(0.01)
            assert a.status == "running"
            while s.state.tasks[x.key].state != "memory":
                await asyncio.sleep(0.01)
            assert await x == 2
            # still a working member of the cluster
            assert await c.submit(inc, 10, workers=[a.address]) == 11


async def test_a_worker_gives_up_when_the_scheduler_is_gone_for_good(
    short_reconnect: None,
) -> None:
    s = await Scheduler(port=0)
    w = await Worker(s.address, nthreads=1)
    await s.close()
    await asyncio.wait_for(w.finished(), timeout=10)
    assert w.status == "closed"


async def test_a_worker_reconnects_to_a_scheduler_restarted_on_the_same_port(
    short_reconnect: None,
) -> None:
    s = await Scheduler(port=0)
    port = int(s.address.rsplit(":", 1)[1])
    w = await Worker(s.address, nthreads=1)
    await s.close()
    await asyncio.sleep(0.2)
    s2 = await Scheduler(port=port)
    try:
        while not s2.worker_streams:
            await asyncio.sleep(0.02)
        assert list(s2.worker_streams) == [w.address]
        async with Client(s2.address, asynchronous=True) as c:
            assert await c.submit(inc, 1) == 2
    finally:
        await w.close()
        await s2.close()


async def test_a_client_whose_connection_blips_reconnects_and_its_futures_stay_valid() -> None:
    async with cluster(n_workers=1, nthreads=1) as (s, (w,)):
        async with Client(s.address, asynchronous=True) as c:
            done = c.submit(inc, 1)
            assert await done == 2
            c._conn.abort()  # type: ignore[union-attr]
            during = c.submit(inc, 10)  # submitted while the stream is down
            assert await asyncio.wait_for(during, 10) == 11
            assert await done == 2
            assert done.key in w.data  # the scheduler kept it for the client
            assert await c.submit(inc, 100) == 101
