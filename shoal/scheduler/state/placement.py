"""Where a ready task runs: restrictions, resources, locality, then the least busy worker.

``decide_worker`` is called once per task that becomes ready (and per ``no-worker`` task
when a suitable worker joins). Its cost never depends on the number of tasks:

1. *Valid workers*: ``workers=`` restrictions (addresses or names; with
   ``allow_other_workers`` they are a preference, used only if one of them is there) and
   ``resources=`` (a worker must declare at least that much of each). None of them:
   every worker is valid.
2. *Locality*: among valid workers, the one holding the most bytes of the task's
   dependencies. Cost: the number of replicas of its dependencies.
3. *Least occupied*: ties, and tasks without dependencies held by a valid worker, go to
   the worker with the lowest :meth:`WorkerInfo.occupancy` (running tasks per thread,
   then bytes held, then least recently assigned, then join order), so root tasks are
   dealt out round-robin. Unrestricted tasks read it from :class:`WorkerPool` in
   O(log workers); restricted ones scan their (usually few) valid workers.

Seams for later issues:

- *root-task queuing*: ``queued`` tasks will be withheld in
  ``transitions._waiting_processing`` before ``decide_worker`` is called, when every
  thread is busy; nothing here needs to change except feeding ``WorkerPool`` to it.
- *resource consumption*: :func:`available_resources` returns a worker's declared
  capacity; tracking what running tasks use means subtracting it there.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from shoal.scheduler.state.model import TaskState, WorkerInfo

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState


class WorkerPool:
    """Live workers in a heap ordered by occupancy, refreshed lazily.

    A worker whose occupancy changes is marked dirty (O(1)); the next pick pushes a
    fresh entry for each dirty worker and discards stale entries as they surface. The
    heap is rebuilt when stale entries outnumber live ones, so every change costs
    O(log workers) amortized.
    """

    __slots__ = ("_dirty", "_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[float, int, int, int], int, WorkerInfo]] = []
        self._dirty: dict[WorkerInfo, None] = {}
        self._live = 0

    def add(self, ws: WorkerInfo) -> None:
        """Start offering ``ws``."""
        self._live += 1
        self._dirty[ws] = None

    def remove(self, ws: WorkerInfo) -> None:
        """Stop offering ``ws`` (it must already be marked not alive)."""
        self._live -= 1
        self._dirty.pop(ws, None)

    def touch(self, ws: WorkerInfo) -> None:
        """``ws``'s occupancy changed."""
        self._dirty[ws] = None

    def least_occupied(self) -> WorkerInfo | None:
        """The live worker with the lowest occupancy, or None when there is none."""
        heap = self._heap
        if len(heap) + len(self._dirty) > 2 * self._live + 32:
            self._rebuild()
        for ws in self._dirty:
            ws.pool_version += 1
            heapq.heappush(heap, (ws.occupancy(), ws.pool_version, ws))
        self._dirty.clear()
        while heap:
            _, version, ws = heap[0]
            if ws.alive and version == ws.pool_version:
                return ws
            heapq.heappop(heap)
        return None

    def _rebuild(self) -> None:
        live = {ws: None for _, _, ws in self._heap if ws.alive}
        live.update(self._dirty)
        self._dirty.clear()
        self._heap = []
        for ws in live:
            ws.pool_version += 1
            self._heap.append((ws.occupancy(), ws.pool_version, ws))
        heapq.heapify(self._heap)


def available_resources(ws: WorkerInfo) -> dict[str, float]:
    """What ``ws`` can still give to tasks; for now its declared capacity (see module doc)."""
    return ws.resources


def _fits(ws: WorkerInfo, needs: dict[str, float]) -> bool:
    have = available_resources(ws)
    return all(have.get(name, 0.0) >= amount for name, amount in needs.items())


def valid_workers(state: SchedulerState, ts: TaskState) -> dict[WorkerInfo, None] | None:
    """The workers allowed to run ``ts``, or None when every worker is."""
    out: dict[WorkerInfo, None] | None = None
    if ts.resources:
        # Start from the workers declaring the rarest resource, then check capacity.
        pools = [state.resource_index.get(name, {}) for name in ts.resources]
        smallest = min(pools, key=len)
        out = {ws: None for ws in smallest if _fits(ws, ts.resources)}
    if ts.worker_restrictions is not None:
        named: dict[WorkerInfo, None] = {}
        for ref in ts.worker_restrictions:
            ws = state.workers.get(ref) or state.aliases.get(ref)
            if ws is not None and (out is None or ws in out):
                named[ws] = None
        if named or not ts.allow_other_workers:
            out = named
    return out


def worker_fits(state: SchedulerState, ts: TaskState, ws: WorkerInfo) -> bool:
    """Whether ``ws`` may run ``ts``."""
    valid = valid_workers(state, ts)
    return valid is None or ws in valid


def decide_worker(state: SchedulerState, ts: TaskState) -> WorkerInfo | None:
    """The worker that should run the ready task ``ts``, or None if none may."""
    valid = valid_workers(state, ts)
    if valid is not None and not valid:
        return None
    if ts.dependencies:
        held: dict[WorkerInfo, int] = {}
        for dts in ts.dependencies:
            for ws in dts.who_has:
                if valid is None or ws in valid:
                    held[ws] = held.get(ws, 0) + dts.nbytes
        if held:
            most = max(held.values())
            return min((ws for ws, n in held.items() if n == most), key=WorkerInfo.occupancy)
    if valid is None:
        return state.pool.least_occupied()
    return min(valid, key=WorkerInfo.occupancy)
