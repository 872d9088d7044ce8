"""client.restart(): every task forgotten, every worker replaced."""

from __future__ import annotations

import pytest

from shoal import Client, FutureCancelledError
from shoal.errors import RemoteError
from shoal.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


async def test_restart_without_nannies_closes_the_workers_and_says_what_to_do() -> None:
    async with cluster(n_workers=2, nthreads=1) as (s, ws):
        async with Client(s.address, asynchronous=True) as c:
            fut = c.submit(inc, 1)
            assert await fut == 2
            with pytest.raises(RemoteError, match=r"0 of 2 workers came back.*nanny"):
                await c.restart(timeout=1)
            with pytest.raises(FutureCancelledError, match="restarted"):
                await fut
            assert all(w.status == "closed" for w in ws)
            assert s.state.tasks == {}


def pid() -> int:
    import os

    return os.getpid()


def test_restart_replaces_every_worker_process_through_its_nanny() -> None:
    from shoal import LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        before = set(client.run(pid).values())
        fut = client.submit(inc, 1)
        assert fut.result(timeout=60) == 2
        client.restart(timeout=60)
        after = set(client.run(pid).values())
        assert len(after) == 2 and not (before & after)
        with pytest.raises(FutureCancelledError, match="restarted"):
            fut.result(timeout=10)
        assert client.submit(inc, 41, pure=False).result(timeout=60) == 42
