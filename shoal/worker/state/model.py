"""Records the worker state machine keeps: one :class:`TaskState` per key it knows.

A worker knows a key for one of three reasons, and forgets it when none holds:

* the scheduler **wants** it here (``TaskState.wanted``): it asked us to compute it
  (``ComputeTask``), to hold a replica (``AcquireReplicas``), or we told it we hold
  the value (``TaskFinished``/``AddKeys``) and it has not freed the key since;
* a task computing here **depends** on it (``TaskState.dependents`` is not empty);
* it is **busy**: executing on a thread or in flight from a peer. Such a task cannot
  be dropped until the server reports the end of the work, even if nobody needs it
  any more; the result is then discarded.

Only keys, states, sizes and run specs live here. Values stay in the server's store.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from shoal._types import Address, Key
from shoal.protocol.opaque import Opaque

#: Every state a task can be in on a worker.
TaskStateName = Literal[
    "released",  # known, about to move on (transient within one handle() call)
    "waiting",  # to compute here; some dependency is not in memory yet
    "ready",  # to compute here; every dependency is in memory; queued by priority
    "constrained",  # like ready, but needs resources: queued apart until they are free
    "executing",  # running on a thread (holding its resources, if any)
    "memory",  # the value is in the server's store
    "error",  # ran here and raised
    "fetch",  # to copy from a peer; queued per holder
    "flight",  # being copied from a peer (one GatherDep)
    "missing",  # to copy from a peer, but no reachable peer holds it
    "forgotten",  # dropped from the state machine (terminal)
]

#: The states in the order used by snapshots and docs.
ALL_STATES: tuple[TaskStateName, ...] = (
    "released",
    "waiting",
    "ready",
    "constrained",
    "executing",
    "memory",
    "error",
    "fetch",
    "flight",
    "missing",
    "forgotten",
)

#: States of a task that still counts as a dependent of its dependencies.
#: Seconds under which a task counts as short, for ``WorkerState.prefetch``.
SHORT_TASK = 0.001

COMPUTING_STATES: frozenset[str] = frozenset({"waiting", "ready", "constrained", "executing"})

#: States of a computation that has not started: a scheduler may still take it away.
QUEUED_STATES: frozenset[str] = frozenset({"waiting", "ready", "constrained"})

#: Priority given to replicas fetched for ``AcquireReplicas``: after every computation.
REPLICA_PRIORITY: tuple[int | float, ...] = (float("inf"),)

#: Size assumed for a key whose ``nbytes`` nobody told us, when batching transfers.
DEFAULT_NBYTES = 1024


@dataclass(eq=False, slots=True)
class TaskState:
    """What the worker knows about one key.

    Identity is the object; ``__hash__`` is the creation counter ``id`` so that sets of
    tasks iterate in the same order on every run (the instructions a state machine
    emits must not depend on ``PYTHONHASHSEED``).
    """

    key: Key
    #: Creation counter, unique per :class:`WorkerState`; also the hash.
    id: int
    state: TaskStateName = "released"
    #: Lower runs (and is fetched) first.
    priority: tuple[int | float, ...] = (0,)
    #: The pickled callable with its arguments; ``None`` for data-only keys.
    run_spec: Opaque | None = None
    #: Abstract resources it holds while executing (positive amounts only), or ``None``:
    #: such a task queues in ``constrained`` instead of ``ready``. Set by the first
    #: ComputeTask and fixed until the task leaves the computing states.
    resources: dict[str, float] | None = None
    #: Seconds the scheduler expects it to run (negative: unknown): a short task may be
    #: queued on a busy thread (see ``WorkerState.prefetch``). Fixed while executing.
    duration: float = -1.0
    #: The scheduler wants the key here (see the module docstring).
    wanted: bool = False
    #: The scheduler asked us to compute it: the outcome is a TaskFinished/TaskFailed.
    assigned: bool = False
    #: Tasks this one needs (only while it is waiting, ready, constrained or executing).
    dependencies: set[TaskState] = field(default_factory=set)
    #: Tasks computing here that need this one (each in a computing state).
    dependents: set[TaskState] = field(default_factory=set)
    #: The dependencies not in memory yet (only while waiting).
    waiting_for_data: set[TaskState] = field(default_factory=set)
    #: Peers believed to hold the value (never this worker).
    who_has: set[Address] = field(default_factory=set)
    #: Peers that failed to deliver it, in order; reported with MissingData on giving up.
    failed_peers: tuple[Address, ...] = ()
    #: The transfer bringing it, while in flight.
    transfer_id: int | None = None
    #: Size of the value in bytes (known, or told by the scheduler).
    nbytes: int | None = None
    #: Type of the result, and when it ran (for TaskFinished).
    type_name: str = ""
    start: float = 0.0
    stop: float = 0.0
    #: The failure, kept so that a repeated ComputeTask is answered with TaskFailed.
    exception: Opaque | None = None
    traceback: Opaque | None = None
    exception_text: str = ""
    traceback_text: str = ""
    #: nbytes of a value put here (``DataUpdated``) while the task was executing.
    scattered_nbytes: int | None = None
    #: The value serialized (small values only), until TaskFinished carries it off.
    wire_value: bytes | None = None

    @property
    def short(self) -> bool:
        """Expected to run under ``SHORT_TASK`` seconds."""
        return 0.0 <= self.duration < SHORT_TASK

    def __hash__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"

    @property
    def needed(self) -> bool:
        """Whether the scheduler or a local computation still needs this key."""
        return self.wanted or bool(self.dependents)

    @property
    def fetch_nbytes(self) -> int:
        """Size used to batch transfers: the known size, else :data:`DEFAULT_NBYTES`."""
        return self.nbytes if self.nbytes is not None else DEFAULT_NBYTES


@dataclass(slots=True)
class Transfer:
    """One GatherDep in flight: the peer, the keys asked for, their expected size."""

    id: int
    worker: Address
    keys: tuple[Key, ...]
    nbytes: int


class TaskHeap:
    """A priority queue of tasks, ordered by ``(priority, insertion counter)``.

    ``add``, ``discard`` and ``pop`` are O(log n) amortized: a discarded task leaves a
    stale entry in the heap, recognised by its insertion counter and skipped (and the
    heap is rebuilt when stale entries outnumber live ones).
    """

    __slots__ = ("_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int | float, ...], int, TaskState]] = []
        self._live: dict[TaskState, int] = {}

    def add(self, ts: TaskState, seq: int) -> None:
        """Insert ``ts`` (or re-insert it at a new position); ``seq`` breaks ties."""
        self._live[ts] = seq
        heapq.heappush(self._heap, (ts.priority, seq, ts))

    def discard(self, ts: TaskState) -> None:
        """Remove ``ts`` if present."""
        if self._live.pop(ts, None) is not None and len(self._heap) > 2 * len(self._live) + 16:
            self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)

    def _prune(self) -> None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)

    def peek(self) -> TaskState:
        """Return the first task without removing it; IndexError if empty."""
        self._prune()
        return self._heap[0][2]

    def pop(self) -> TaskState:
        """Remove and return the first task; IndexError if empty."""
        self._prune()
        _, _, ts = heapq.heappop(self._heap)
        del self._live[ts]
        return ts

    def __contains__(self, ts: object) -> bool:
        return ts in self._live

    def __len__(self) -> int:
        return len(self._live)

    def __bool__(self) -> bool:
        return bool(self._live)

    def __iter__(self) -> Iterator[TaskState]:
        """Iterate in no particular order (for validation and debugging)."""
        return iter(self._live)
