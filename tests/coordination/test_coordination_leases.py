"""Semaphore leases expire when their holder dies, and only then."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal import Client, LocalCluster, Semaphore, config


@pytest.fixture
def short_leases(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    """Leases expire after 1 s without a refresh (checked every 0.1 s): the scheduler
    and the worker processes (which inherit the environment) read it."""
    monkeypatch.setenv("SHOAL_SCHEDULER__LOCKS__LEASE_TIMEOUT", "1")
    monkeypatch.setenv("SHOAL_SCHEDULER__LOCKS__LEASE_VALIDATION_INTERVAL", "0.1")
    config.refresh()
    yield 1.0
    monkeypatch.undo()
    config.refresh()


def die_holding_a_lease(marker: str) -> str:
    """Take the only lease and kill this worker process, the first time; then return."""
    if os.path.exists(marker):
        return "ran again elsewhere"
    sem = Semaphore(max_leases=1, name="held-by-the-dead")
    assert sem.acquire(timeout=30)
    Path(marker).write_text("holding")
    os._exit(1)


def test_a_lease_whose_holder_died_is_given_back_after_the_lease_timeout(
    short_leases: float, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, nanny=False) as lc,
        Client(lc) as client,
    ):
        fut = client.submit(die_holding_a_lease, str(marker), pure=False)
        sem = Semaphore(max_leases=1, name="held-by-the-dead", client=client)
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
        # The holder is dead; its client is still within scheduler.client-timeout (30 s),
        # so only the lease timeout can free the lease.
        assert sem.acquire(timeout=20)
        assert sem.get_value() == 1
        assert sem.release() is True
        assert fut.result(timeout=30) == "ran again elsewhere"


def test_a_live_holder_keeps_its_lease_past_the_lease_timeout(short_leases: float) -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as lc,
        Client(lc) as client,
    ):
        holder = Semaphore(max_leases=1, name="kept", client=client)
        other = Semaphore(max_leases=1, name="kept", client=client)
        assert holder.acquire()
        time.sleep(3 * short_leases)  # refreshed every lease-timeout / 5 meanwhile
        assert other.acquire(timeout=0) is False
        assert holder.release() is True
        assert other.acquire(timeout=5) is True
        other.release()
