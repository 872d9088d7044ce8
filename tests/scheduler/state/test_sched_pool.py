"""WorkerPool: the heap of workers by load survives many changes and rebuilds.
TaskQueue: queued root tasks come out by priority, then arrival."""

from __future__ import annotations

import random

from shoal.scheduler.state.model import TaskGroup, TaskPrefix, TaskState, WorkerInfo
from shoal.scheduler.state.placement import TaskQueue, WorkerPool


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


# ------------------------------------------------------------------ TaskQueue


def _task(key: str, priority: tuple[int, ...]) -> TaskState:
    ts = TaskState(key, TaskGroup("x", TaskPrefix("x")))
    ts.priority = priority
    return ts


def test_task_queue_pops_by_priority_then_arrival() -> None:
    """Pushes in order, out of order, back to the front, discards and re-pushes: the
    queue always pops the live task with the lowest (priority, arrival)."""
    rng = random.Random(7)
    queue = TaskQueue()
    live: dict[TaskState, tuple[tuple[int, ...], int]] = {}
    tasks = [_task(f"x-{i}", (rng.randrange(5), i % 7)) for i in range(300)]
    arrival = 0
    for step in range(3000):
        action = rng.random()
        if action < 0.45:
            ts = rng.choice(tasks)
            if ts not in live:
                arrival += 1
                queue.push(ts)
                live[ts] = (ts.priority, arrival)
        elif action < 0.55 and live:
            ts = rng.choice(list(live))
            queue.discard(ts)
            del live[ts]
        else:
            expected = min(live, key=live.__getitem__) if live else None
            got = queue.pop()
            assert got is expected, step
            if got is not None:
                del live[got]
                if rng.random() < 0.3:  # no slot after all: straight back in
                    arrival += 1
                    queue.push(got)
                    live[got] = (got.priority, arrival)
        assert len(queue) == len(live)


def test_tasks_in_order_or_put_back_never_touch_the_heap() -> None:
    queue = TaskQueue()
    tasks = [_task(f"x-{i}", (i,)) for i in range(10)]
    for ts in tasks:
        queue.push(ts)
    first = queue.pop()
    assert first is tasks[0]
    queue.push(first)  # taken out for a slot another task took: back in front
    assert [queue.pop() for _ in range(10)] == tasks
    assert queue.pop() is None
    assert queue._heap == []  # both cases were O(1)
