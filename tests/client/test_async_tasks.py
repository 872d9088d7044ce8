"""``async def`` tasks run on the worker's event loop, as in distributed."""

from __future__ import annotations

import asyncio

import pytest

from shoal import Client
from shoal.testing.cluster import cluster


async def slow_double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


async def fails(x: int) -> int:
    await asyncio.sleep(0)
    raise KeyError(x)


async def on_a_loop() -> bool:
    return asyncio.get_running_loop().is_running()


async def test_async_def_tasks_return_their_result() -> None:
    async with cluster(n_workers=2) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            assert await c.gather(c.map(slow_double, range(10))) == [2 * i for i in range(10)]
            total = c.submit(sum, c.map(slow_double, range(5)))
            assert await total == 20
            assert await c.submit(on_a_loop) is True


async def test_an_async_def_task_that_raises_errs() -> None:
    async with cluster(n_workers=1) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            with pytest.raises(KeyError):
                await c.submit(fails, 3)


def test_async_def_tasks_on_worker_processes() -> None:
    from shoal import LocalCluster

    with LocalCluster(n_workers=1, processes=True, dashboard_address=None) as lc, Client(lc) as c:
        assert c.gather(c.map(slow_double, range(4))) == [0, 2, 4, 6]
