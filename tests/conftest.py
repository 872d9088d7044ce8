"""Shared fixtures: real clusters on 127.0.0.1."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from shoal import Client, LocalCluster, config
from shoal.testing.cluster import cluster


@pytest.fixture
async def c_s_ws() -> AsyncIterator[tuple[Client, Any, list[Any]]]:
    """An async client connected to a scheduler and two 1-thread workers over TCP."""
    async with cluster(n_workers=2, nthreads=1) as (s, ws):
        client = await Client(s.address, asynchronous=True)
        try:
            yield client, s, ws
        finally:
            await client.close()


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    """A threaded LocalCluster shared by a module's synchronous tests."""
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False) as lc:
        yield lc


@pytest.fixture
def client(local_cluster: LocalCluster) -> Iterator[Client]:
    """A synchronous client of the module's LocalCluster."""
    with Client(local_cluster) as c:
        yield c
    gc.collect()


@pytest.fixture(scope="module")
def process_cluster() -> Iterator[LocalCluster]:
    """A LocalCluster of two worker processes with one thread each, shared by a module."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc:
        yield lc


@pytest.fixture
def process_client(process_cluster: LocalCluster) -> Iterator[Client]:
    """A synchronous client of the module's process cluster."""
    with Client(process_cluster) as c:
        yield c
    gc.collect()


@pytest.fixture
def fresh_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings read anew before and after the test: set ``SHOAL_*`` variables on the
    monkeypatch it yields, then call ``config.refresh()``."""
    config.refresh()
    yield monkeypatch
    monkeypatch.undo()
    config.refresh()


@pytest.fixture
def tcp_only(fresh_config: pytest.MonkeyPatch) -> None:
    """Same-host Unix sockets off: every ``tcp://`` connection really goes over TCP."""
    fresh_config.setenv("SHOAL_COMM__SAME_HOST_SOCKETS", "false")
    config.refresh()
