"""Fixtures shared by the client's test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shoal import LocalCluster


@pytest.fixture(scope="module")
def tcp_cluster() -> Iterator[LocalCluster]:
    """Two 2-thread workers in this process, everything over TCP (one per module)."""
    with LocalCluster(
        n_workers=2, threads_per_worker=2, processes=False, protocol="tcp", dashboard_address=None
    ) as lc:
        yield lc
