"""The cluster the actor, plugin and upload tests share: two worker processes (one per
test module), and a fresh client for each test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shoal import Client, LocalCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes with one thread each."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc:
        yield lc


@pytest.fixture
def c(cluster: LocalCluster) -> Iterator[Client]:
    """A client of ``cluster``."""
    with Client(cluster) as client:
        yield client
    gc.collect()
