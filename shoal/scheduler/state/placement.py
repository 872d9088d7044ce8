"""Where a ready task runs: restrictions, resources, locality, queuing, least busy worker.

:func:`place` is called once per task whose dependencies are all in memory (and again
for ``no-worker`` and ``queued`` tasks when a worker frees up or joins). Its cost never
depends on the number of tasks:

1. *Valid workers*: ``workers=`` restrictions (addresses or names; with
   ``allow_other_workers`` they are a preference, used only if one of them is there) and
   ``resources=`` (a worker must declare at least that much of each). Retiring workers
   are never valid. None of them: every accepting worker is valid.
2. *Root tasks are queued*: a task of a large layer with few, small dependencies
   (:func:`is_rootish`) goes to the least busy worker that has a free *slot*
   (``ceil(worker_saturation * nthreads)`` tasks at once, or more while they add up to
   less than ``pipeline`` seconds of expected work per thread, so that tiny tasks don't
   wait for a round trip each); when none has, it waits in
   ``SchedulerState.queued`` (state ``queued``) until a slot frees up, so a huge graph
   never floods the workers' memory with root tasks. Tiny root tasks go out in runs:
   the next one goes where the previous one went while that worker is less than
   ``ROOT_RUN_AHEAD`` (2 ms) ahead, so that neighbours, which share dependents, share a
   worker. ``worker_saturation=inf`` turns queuing off.
3. *Locality*: among valid workers, the one holding the most bytes of the task's
   dependencies. Cost: the number of replicas of its dependencies.
4. *Least busy*: ties, and tasks whose dependencies no valid worker holds, go to the
   worker with the lowest :meth:`WorkerInfo.load` (expected seconds of work per thread,
   learned per task prefix, then bytes held, then least recently assigned, then join
   order). Unrestricted tasks read it from :class:`WorkerPool` in O(log workers);
   restricted ones scan their (usually few) valid workers, those whose resources are
   free right now first.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from shoal.scheduler.state.model import TaskState, WorkerInfo

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState

#: A root layer has more tasks than this many times the cluster's threads...
ROOTISH_GROUP_FACTOR = 2
#: ...and each of its tasks fewer dependencies than this, from layers this small.
ROOTISH_MAX_DEPENDENCIES = 5
#: Root tasks per thread a worker may hold at most, however tiny they are.
MAX_PIPELINED = 1000
#: Seconds of expected work per thread a worker taking a run of neighbouring root tasks
#: may get ahead of the least loaded worker (see ``transitions.place_root``): runs of
#: 100 tasks of 20 µs, of 2 tasks of 1 ms, none for longer tasks.
ROOT_RUN_AHEAD = 0.002


class WorkerPool:
    """Accepting workers in a heap ordered by load, refreshed lazily.

    A worker whose load changes is marked dirty (O(1)); the next pick pushes a fresh
    entry for each dirty worker and discards stale entries as they surface. The heap is
    rebuilt when stale entries outnumber live ones, so every change costs O(log workers)
    amortized.
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
        """``ws``'s load (or whether it accepts work) changed."""
        self._dirty[ws] = None

    def least_loaded(self) -> WorkerInfo | None:
        """The accepting worker with the lowest load, or None when there is none."""
        if len(self._heap) + len(self._dirty) > 2 * self._live + 32:
            self._rebuild()
        heap = self._heap
        for ws in self._dirty:
            ws.pool_version += 1
            heapq.heappush(heap, (ws.load(), ws.pool_version, ws))
        self._dirty.clear()
        while heap:
            _, version, ws = heap[0]
            if ws.accepting and version == ws.pool_version:
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
            self._heap.append((ws.load(), ws.pool_version, ws))
        heapq.heapify(self._heap)


#: (priority, insertion counter, task)
_QueueEntry = tuple[tuple[int | float, ...], int, TaskState]


class TaskQueue:
    """Queued root tasks, most urgent (lowest priority tuple) first, ties first in.

    Tasks nearly always arrive in priority order (a graph's roots are queued sorted) or
    come back to the front (taken out for a slot that was gone by the time it was
    placed), so those go to either end of a sorted run, O(1) in and out; any other goes
    into a heap, O(log n). ``pop`` takes the more urgent of the two heads. Removal is
    lazy: a task taken out of the middle stays where it is until it surfaces and is
    skipped.
    """

    __slots__ = ("_heap", "_members", "_run", "_seq")

    def __init__(self) -> None:
        self._run: deque[_QueueEntry] = deque()
        self._heap: list[_QueueEntry] = []
        self._members: dict[TaskState, int] = {}
        self._seq = 0

    def push(self, ts: TaskState) -> None:
        """Queue ``ts`` (after tasks of equal priority already queued)."""
        self._seq += 1
        self._members[ts] = self._seq
        entry = (ts.priority, self._seq, ts)
        run = self._run
        if not run or run[-1] < entry:
            run.append(entry)
        elif entry[0] < run[0][0]:  # more urgent than any: typically one put back
            run.appendleft(entry)
        else:
            heapq.heappush(self._heap, entry)

    def discard(self, ts: TaskState) -> None:
        """Take ``ts`` out if it is queued."""
        self._members.pop(ts, None)

    def pop(self) -> TaskState | None:
        """Remove and return the most urgent task, or None when empty."""
        run, heap, members = self._run, self._heap, self._members
        while run and members.get(run[0][2]) != run[0][1]:
            run.popleft()
        while heap and members.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        if run and (not heap or run[0] < heap[0]):  # unique counters: never compares tasks
            ts = run.popleft()[2]
        elif heap:
            ts = heapq.heappop(heap)[2]
        else:
            return None
        del members[ts]
        return ts

    def __contains__(self, ts: object) -> bool:
        return ts in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[TaskState]:
        return iter(list(self._members))


def task_slots(s: SchedulerState, ws: WorkerInfo) -> int:
    """How many more tasks ``ws`` may take before root tasks are queued for it."""
    if not ws.accepting:
        return 0
    free = ws.slot_limit - len(ws.processing)
    if free > 0:
        return free
    if not s.queuing:
        return 0
    # Tiny tasks: a round trip to the scheduler per task would leave the threads idle,
    # so keep up to ``pipeline`` seconds of expected work per thread on the worker.
    spare = s.pipeline * ws.nthreads - ws.occupancy
    if spare <= 0:
        return 0
    average = ws.occupancy / len(ws.processing)
    return min(int(spare / average), MAX_PIPELINED * ws.nthreads) if average > 0 else 0


def is_rootish(s: SchedulerState, ts: TaskState) -> bool:
    """Whether ``ts`` belongs to a large layer with few, small dependencies: such tasks
    are spread over the workers by load and queued when every worker is saturated."""
    if ts.group.size <= ROOTISH_GROUP_FACTOR * s.total_nthreads or not s.queuing:
        return False
    if ts.resources or ts.worker_restrictions is not None:
        return False
    deps = ts.dependencies
    if not deps:
        return True
    if len(deps) >= ROOTISH_MAX_DEPENDENCIES:
        return False
    return all(dts.group.size < ROOTISH_MAX_DEPENDENCIES for dts in deps)


def available_resources(ws: WorkerInfo) -> dict[str, float]:
    """What ``ws`` can still give to tasks: its capacity minus what its tasks hold."""
    used = ws.used_resources
    return {name: total - used.get(name, 0.0) for name, total in ws.resources.items()}


def _declares(ws: WorkerInfo, needs: dict[str, float]) -> bool:
    have = ws.resources
    return all(have.get(name, 0.0) >= amount for name, amount in needs.items())


def _free_now(ws: WorkerInfo, needs: dict[str, float]) -> bool:
    have = available_resources(ws)
    return all(have.get(name, 0.0) >= amount for name, amount in needs.items())


def valid_workers(s: SchedulerState, ts: TaskState) -> dict[WorkerInfo, None] | None:
    """The workers allowed to run ``ts``, or None when every accepting worker is."""
    out: dict[WorkerInfo, None] | None = None
    if ts.resources:
        # Start from the workers declaring the rarest resource, then check capacity.
        pools = [s.resource_index.get(name, {}) for name in ts.resources]
        smallest = min(pools, key=len)
        out = {ws: None for ws in smallest if ws.accepting and _declares(ws, ts.resources)}
    if ts.worker_restrictions is not None:
        named: dict[WorkerInfo, None] = {}
        for ref in ts.worker_restrictions:
            ws = s.workers.get(ref) or s.aliases.get(ref)
            if ws is not None and ws.accepting and (out is None or ws in out):
                named[ws] = None
        if named or not ts.allow_other_workers:
            out = named
        elif out is None:
            out = None  # a preference for workers that aren't there: any worker will do
    return out


def worker_fits(s: SchedulerState, ts: TaskState, ws: WorkerInfo) -> bool:
    """Whether ``ws`` may run ``ts``."""
    if not ws.accepting:
        return False
    valid = valid_workers(s, ts)
    return valid is None or ws in valid


def decide_worker(s: SchedulerState, ts: TaskState) -> WorkerInfo | None:
    """The worker that should run ``ts`` by locality then load, or None if none may."""
    valid = valid_workers(s, ts)
    if valid is not None and not valid:
        return None
    if ts.dependencies:
        held: dict[WorkerInfo, int] = {}
        for dts in ts.dependencies:
            for ws in dts.who_has:
                if ws.accepting and (valid is None or ws in valid):
                    held[ws] = held.get(ws, 0) + dts.nbytes
        if len(held) == 1:
            return next(iter(held))
        if held:
            most = max(held.values())
            return min((ws for ws, n in held.items() if n == most), key=WorkerInfo.load)
    if valid is None:
        return s.pool.least_loaded()
    if ts.resources:
        needs = ts.resources
        return min(valid, key=lambda ws: (not _free_now(ws, needs), ws.load()))
    return min(valid, key=WorkerInfo.load)
