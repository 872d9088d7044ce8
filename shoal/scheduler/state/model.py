"""The records the scheduler keeps: tasks, workers, clients, and one handle() call's work.

Relations between records are kept both ways (``dependencies``/``dependents``,
``who_has``/``has_what``, ``who_wants``/``wants_what``, ``processing_on``/``processing``)
so every question a transition asks is cheap. :mod:`.invariants` checks that both
sides always agree.

Sets of records are insertion-ordered dicts (``dict[X, None]``), never ``set``: records
hash by identity, so a ``set`` would iterate in memory-address order and two runs of the
same event log could make different decisions. With dicts, replay is exact. A task's
own sides are leaner, for memory: ``who_has`` and ``who_wants`` are tuples (nearly
always of one), and an empty dependency or waiter table is the shared
:data:`NO_ENTRIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from shoal._types import Address, ClientId, Key, StimulusId
from shoal.protocol.messages import KeyErred, Message, TaskSpec
from shoal.protocol.opaque import Opaque
from shoal.scheduler.state.outgoing import Outbox

TaskStateName = Literal[
    "released", "waiting", "queued", "no-worker", "processing", "memory", "erred", "forgotten"
]

#: Every state a task in ``SchedulerState.tasks`` can be in (``forgotten`` ones are gone).
LIVE_STATES: tuple[TaskStateName, ...] = (
    "released",
    "waiting",
    "queued",
    "no-worker",
    "processing",
    "memory",
    "erred",
)

#: States of a task that still needs its dependencies' values.
ACTIVE_STATES: tuple[TaskStateName, ...] = ("waiting", "queued", "no-worker", "processing")

#: States of a task whose dependencies are all in memory, waiting for (or on) a worker.
READY_STATES: tuple[TaskStateName, ...] = ("queued", "no-worker", "processing")


class TaskPrefix:
    """Tasks sharing a name prefix (``"inc"`` for ``"inc-<token>"``): how long they run.

    ``duration`` is an exponential moving average of measured run times, in seconds;
    negative while none has finished.
    """

    __slots__ = ("duration", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.duration = -1.0

    def record(self, seconds: float) -> None:
        """Fold in one measured run time."""
        seconds = max(seconds, 0.0)
        self.duration = seconds if self.duration < 0 else 0.5 * (self.duration + seconds)

    def __repr__(self) -> str:
        return f"<TaskPrefix {self.name} {self.duration:.3g}s>"


class TaskGroup:
    """Tasks of one layer of a graph (``"x-<token>"`` for ``("x-<token>", i)`` keys).

    ``size`` counts its tasks the scheduler still knows; queuing uses it to tell root
    layers (many tasks, few small dependencies) from the rest.
    """

    __slots__ = ("name", "prefix", "size")

    def __init__(self, name: str, prefix: TaskPrefix) -> None:
        self.name = name
        self.prefix = prefix
        self.size = 0

    def __repr__(self) -> str:
        return f"<TaskGroup {self.name} size={self.size}>"


@dataclass(frozen=True, slots=True, eq=False)
class Failure:
    """Why a task is erred: the pickled exception (never opened here) and its text.

    ``blame`` is the key whose run actually raised; dependents erred because of it
    share the same ``Failure``. ``exception is None`` marks a failure the scheduler made
    itself; then ``exception_text`` reads ``"<TypeName>: <message>"`` (for example
    ``"KilledWorker: ..."``) so a client can rebuild a matching exception.
    """

    exception: Opaque | None
    traceback: Opaque | None
    exception_text: str
    traceback_text: str
    blame: Key

    def report(self, key: Key) -> KeyErred:
        """The message telling a client that ``key`` erred because of this failure."""
        return KeyErred(
            key=key,
            exception=self.exception,
            traceback=self.traceback,
            exception_text=self.exception_text,
            traceback_text=self.traceback_text,
            blame=self.blame,
        )


@dataclass(slots=True, unsafe_hash=True)
class Arrival:
    """A task's value appeared on ``holders``: a worker finished it, or a client scattered it."""

    holders: tuple[WorkerInfo, ...]
    nbytes: int
    type_name: str | None
    #: The value itself, serialized, when a worker sent it along (small values only).
    value: bytes | None = None


class _NoEntries(dict):  # type: ignore[type-arg]
    """An empty table that refuses entries; see :data:`NO_ENTRIES`."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("NO_ENTRIES is shared by every task: give the task its own dict first")

    __setitem__ = _refuse  # type: ignore[assignment]
    setdefault = _refuse  # type: ignore[assignment]
    update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]


#: The one empty table a task's ``dependencies``, ``dependents``, ``waiting_on`` and
#: ``waiters`` hold while they have no entry: it reads as an empty dict and refuses
#: entries (``TaskState.add_dependency``, ``add_waiter`` and ``wait_on`` swap in a dict
#: of the task's own). Emptied tables are set back to it. Most tasks have an empty
#: table or two for good (a leaf has no dependencies, a finished task no waiters), and
#: each empty dict cost 64 bytes.
NO_ENTRIES: dict[Any, None] = _NoEntries()


class TaskState:
    """Everything the scheduler knows about one key.

    ``waiting_on`` holds the dependencies not yet in memory (only while ``waiting``);
    ``waiters`` holds the dependents that still need this task's value (those in
    ``waiting``, ``no-worker`` or ``processing``). A task is *needed* while it has a
    client in ``who_wants`` or a dependent in ``waiters``.
    """

    __slots__ = (
        "actor",
        "allow_other_workers",
        "dependencies",
        "dependents",
        "failure",
        "group",
        "key",
        "lost_dependency",
        "nbytes",
        "priority",
        "processing_on",
        "resources",
        "retries",
        "run_spec",
        "state",
        "suspicious",
        "type_name",
        "waiters",
        "waiting_on",
        "who_has",
        "who_wants",
        "worker_restrictions",
    )

    def __init__(self, key: Key, group: TaskGroup) -> None:
        self.key: Key = key
        self.group = group
        self.state: TaskStateName = "released"
        #: the pickled callable and arguments; ``None`` for scattered data (no lineage)
        self.run_spec: Opaque | None = None
        self.priority: tuple[int | float, ...] = (0,)
        self.retries = 0
        self.worker_restrictions: tuple[str, ...] | None = None
        self.allow_other_workers = False
        self.resources: dict[str, float] | None = None
        #: an actor: never stolen, copied or moved (its object lives on one worker)
        self.actor = False
        #: the shared empty table until a first entry (see :data:`NO_ENTRIES`)
        self.dependencies: dict[TaskState, None] = NO_ENTRIES
        self.dependents: dict[TaskState, None] = NO_ENTRIES
        self.waiting_on: dict[TaskState, None] = NO_ENTRIES
        self.waiters: dict[TaskState, None] = NO_ENTRIES
        #: the clients that want the value and the workers that hold it, in the order
        #: they came: tuples, since there is nearly always one (a one-entry dict costs
        #: 224 bytes, a one-item tuple 48), changed only through the methods below;
        #: adding or dropping one costs O(holders), which only a key replicated on
        #: hundreds of workers notices
        self.who_wants: tuple[ClientInfo, ...] = ()
        self.who_has: tuple[WorkerInfo, ...] = ()
        self.processing_on: WorkerInfo | None = None
        self.nbytes = 0
        self.type_name: str | None = None
        self.failure: Failure | None = None
        #: a dependency that is gone for good (unknown at submit, or lost scattered data)
        self.lost_dependency: Key | None = None
        #: addresses of the workers that died while running this task
        self.suspicious: tuple[Address, ...] = ()

    def adopt(self, spec: TaskSpec) -> None:
        """Take the run spec, priority and restrictions of a (re)submitted ``spec``."""
        self.run_spec = spec.run_spec
        self.priority = tuple(spec.priority)
        self.retries = spec.retries
        self.worker_restrictions = None if spec.workers is None else tuple(spec.workers)
        self.allow_other_workers = spec.allow_other_workers
        self.resources = dict(spec.resources) if spec.resources else None
        self.actor = spec.actor

    def add_dependency(self, dts: TaskState) -> None:
        """``self`` depends on ``dts`` (both sides)."""
        if self.dependencies is NO_ENTRIES:
            self.dependencies = {}
        self.dependencies[dts] = None
        if dts.dependents is NO_ENTRIES:
            dts.dependents = {}
        dts.dependents[self] = None

    def add_waiter(self, dts: TaskState) -> None:
        """``dts`` (a dependent) needs this value."""
        if self.waiters is NO_ENTRIES:
            self.waiters = {}
        self.waiters[dts] = None

    def wait_on(self, dts: TaskState) -> None:
        """This task waits for ``dts`` (a dependency) to be in memory."""
        if self.waiting_on is NO_ENTRIES:
            self.waiting_on = {}
        self.waiting_on[dts] = None

    def add_wanter(self, cs: ClientInfo) -> None:
        """``cs`` wants this value (its side, ``wants_what``, is the caller's)."""
        if cs not in self.who_wants:
            self.who_wants += (cs,)

    def drop_wanter(self, cs: ClientInfo) -> None:
        """``cs`` (which wants this value) no longer does."""
        i = self.who_wants.index(cs)
        self.who_wants = self.who_wants[:i] + self.who_wants[i + 1 :]

    def add_holder(self, ws: WorkerInfo) -> None:
        """``ws`` holds this value (its side, ``has_what``, is the caller's)."""
        self.who_has += (ws,)

    def drop_holder(self, ws: WorkerInfo) -> None:
        """``ws`` (which holds this value) no longer does."""
        i = self.who_has.index(ws)
        self.who_has = self.who_has[:i] + self.who_has[i + 1 :]

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


class WorkerInfo:
    """A live worker: its capacity, the tasks it runs and the keys it holds."""

    __slots__ = (
        "accepting",
        "address",
        "alive",
        "has_what",
        "last_assigned",
        "memory_limit",
        "name",
        "nbytes",
        "nthreads",
        "occupancy",
        "paused",
        "pool_version",
        "processing",
        "resources",
        "retiring",
        "serial",
        "slot_limit",
        "used_resources",
    )

    def __init__(
        self,
        address: Address,
        *,
        nthreads: int,
        memory_limit: int,
        name: str,
        resources: dict[str, float],
        serial: int,
    ) -> None:
        self.address = address
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.name = name
        self.resources = resources
        #: join order, the last tie-breaker of placement
        self.serial = serial
        #: tasks assigned here, each with the run time it was expected to take
        self.processing: dict[TaskState, float] = {}
        #: sum of the expected run times in ``processing``, in seconds
        self.occupancy = 0.0
        #: resources held by the tasks in ``processing``
        self.used_resources: dict[str, float] = {}
        self.has_what: dict[TaskState, None] = {}
        #: total bytes of the keys in ``has_what``
        self.nbytes = 0
        #: placement counter value of the last task assigned here (-1: none yet)
        self.last_assigned = -1
        #: bumped whenever this worker's entry in the placement heap is refreshed
        self.pool_version = 0
        self.alive = True
        #: short of memory (it says so): it starts no new task until it resumes
        self.paused = False
        #: being retired gracefully: its work and data are moving elsewhere
        self.retiring = False
        #: alive, neither paused nor retiring: new tasks and copies may be sent here
        self.accepting = True
        #: root tasks it may run or hold at once (set by the state when it joins)
        self.slot_limit = nthreads

    def work_per_thread(self) -> float:
        """Seconds of expected work per thread: the first part of :meth:`load`."""
        return self.occupancy / max(self.nthreads, 1)

    def load(self) -> tuple[float, int, int, int]:
        """Placement order: expected work per thread, bytes held, least recently
        assigned, join order (lowest first)."""
        return (
            self.work_per_thread(),
            self.nbytes,
            self.last_assigned,
            self.serial,
        )

    def __repr__(self) -> str:
        return f"<WorkerInfo {self.address} processing={len(self.processing)}>"


class ClientInfo:
    """A client and the keys it holds futures for."""

    __slots__ = ("client", "wants_what")

    def __init__(self, client: ClientId) -> None:
        self.client = client
        self.wants_what: dict[TaskState, None] = {}

    def __repr__(self) -> str:
        return f"<ClientInfo {self.client} wants={len(self.wants_what)}>"


class TransitionRecord(NamedTuple):
    """One line of the transition log: ``key`` went from ``start`` to ``finish``."""

    key: Key
    start: TaskStateName
    finish: TaskStateName
    stimulus_id: StimulusId
    now: float


class Context:
    """The work in progress of one event: pending recommendations and messages to send.

    ``recs`` maps a task to the state it should move to next; the transition engine
    pops from it (last in, first out) until it is empty. ``freed``: workers whose slots
    freed up, offered to queued root tasks once ``recs`` is empty (a task made ready
    meanwhile takes a freed slot first, as its priority says).
    """

    __slots__ = ("freed", "now", "out", "recs", "stimulus_id")

    def __init__(self, stimulus_id: StimulusId, now: float, out: Outbox) -> None:
        self.stimulus_id = stimulus_id
        self.now = now
        self.out = out
        self.recs: dict[TaskState, TaskStateName] = {}
        self.freed: dict[WorkerInfo, None] = {}

    def to_worker(self, ws: WorkerInfo, msg: Message) -> None:
        """Send ``msg`` to ``ws`` (dropped if the worker is gone)."""
        if ws.alive:
            self.out.to_worker(ws.address, msg)

    def free(self, ws: WorkerInfo, key: Key) -> None:
        """Tell ``ws`` to forget ``key`` (batched into one ``FreeKeys`` per worker)."""
        if ws.alive:
            self.out.free(ws.address, key)

    def to_client(self, cs: ClientInfo, msg: Message) -> None:
        """Send ``msg`` to client ``cs``."""
        self.out.to_client(cs.client, msg)

    def cancelled(self, client: ClientId, key: Key, reason: str) -> None:
        """Tell ``client`` its futures for ``key`` are cancelled (batched per reason)."""
        self.out.cancelled(client, key, reason)
