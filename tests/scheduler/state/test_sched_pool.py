"""WorkerPool: the heap of workers by load survives many changes and rebuilds."""

from __future__ import annotations

from shoal.scheduler.state.model import WorkerInfo
from shoal.scheduler.state.placement import WorkerPool


def _worker(serial: int) -> WorkerInfo:
    return WorkerInfo(
        f"tcp://w{serial}:1", nthreads=1, memory_limit=0, name="", resources={}, serial=serial
    )


def test_least_loaded_after_the_heap_is_rebuilt() -> None:
    # Regression: a rebuild while picking used to leave the pick on the old heap, which
    # then looked empty: a task went to no-worker with two workers connected.
    pool = WorkerPool()
    a, b = _worker(1), _worker(2)
    pool.add(a)
    pool.add(b)
    for i in range(200):
        ws = (a, b)[i % 2]
        ws.occupancy = 1000.0 - i  # falling loads: stale entries pile up below
        pool.touch(ws)
        best = pool.least_loaded()
        assert best is min((a, b), key=WorkerInfo.load)


def test_a_worker_that_stops_accepting_is_skipped() -> None:
    pool = WorkerPool()
    a, b = _worker(1), _worker(2)
    pool.add(a)
    pool.add(b)
    assert pool.least_loaded() is a
    a.accepting = False
    pool.touch(a)
    assert pool.least_loaded() is b
    b.alive = b.accepting = False
    pool.remove(b)
    assert pool.least_loaded() is None
