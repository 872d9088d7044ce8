"""The vocabulary every role speaks: one slotted dataclass per op.

A message travels as a msgpack map ``{"op": <op>, <field>: <value>, ...}`` (in a batch,
the per-task ops between scheduler and workers as arrays ``[op, <value>, ...]``: see
``Message.positional``); see
:mod:`shoal.protocol.wire` for how maps, batches and :class:`Opaque` payloads become
frames. msgpack arrays decode as tuples (so dask keys such as ``("x", 0)`` survive the
round trip), hence every sequence field is typed as a tuple.

Messages, and the events and instructions of the state machines, are never modified
once built, but they are not ``frozen`` dataclasses: a frozen ``__init__`` sets each
field through ``object.__setattr__``, four times the cost of a plain one, and several
of them are built per task on every hot path. They hash by value (``unsafe_hash``).

Naming: the class name says who sends it, the ``op`` is the wire name.
Streams (long-lived, batched): client⇄scheduler and worker⇄scheduler.
Requests (one request, one reply, over a pooled connection): everything else.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shoal._types import Address, Key
from shoal.errors import RemoteProtocolError
from shoal.protocol.opaque import Opaque

_REGISTRY: dict[str, type[Message]] = {}
#: each positional op's fields, read in one call (see Message.to_array)
_FIELDS: dict[type[Message], Callable[[Message], tuple[Any, ...]]] = {}


def _one(names: tuple[str, ...]) -> Callable[[Message], tuple[Any, ...]]:
    return lambda msg: tuple(getattr(msg, name) for name in names)


class Message:
    """Base of all ops. Subclasses are slotted dataclasses with an ``op``, never
    modified once built (see the module docstring)."""

    __slots__ = ()
    op: ClassVar[str]
    #: Passed as the object itself over an in-process connection (a client and the
    #: scheduler in its process): only ops on the per-task hot path, built by shoal
    #: (keys are checked; run specs own their bytes: ``dumps_run_spec`` copies views
    #: of the caller's memory). Field values are not normalized as msgpack would (a
    #: numpy int stays one). Everything else is encoded, even in process.
    hand_over: ClassVar[bool] = False
    #: Sent as an array ``[op, field, ...]`` in field order rather than a map: only the
    #: ops of the per-task hot path between scheduler and workers (a map's field names
    #: cost a third of the message and most of its encoding time).
    positional: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        op = cls.__dict__.get("op")
        if op is not None:
            if op in _REGISTRY and _REGISTRY[op].__qualname__ != cls.__qualname__:
                raise TypeError(f"op {op!r} registered twice")
            _REGISTRY[op] = cls

    def to_wire(self) -> dict[str, Any]:
        """Return the msgpack-ready map for this message."""
        d: dict[str, Any] = {"op": self.op}
        name: str
        for name in self.__slots__:
            d[name] = getattr(self, name)
        return d

    def to_array(self) -> tuple[Any, ...]:
        """This message as ``(op, field, ...)`` (for :attr:`positional` ops)."""
        fields = _FIELDS.get(type(self))
        if fields is None:
            names: tuple[str, ...] = tuple(type(self).__slots__)
            fields = operator.attrgetter(*names) if len(names) > 1 else _one(names)
            _FIELDS[type(self)] = fields
        return (self.op, *fields(self))

    @staticmethod
    def from_wire(d: Any) -> Message:
        """Build the message for a decoded map (which it takes: its ``op`` is removed),
        or array of a positional op; raise RemoteProtocolError if invalid."""
        if type(d) is tuple and d and type(d[0]) is str:
            cls = _REGISTRY.get(d[0])
            if cls is None or not cls.positional:
                raise RemoteProtocolError(f"no positional op {d[0]!r}")
            try:
                return cls(*d[1:])
            except TypeError as e:
                raise RemoteProtocolError(f"malformed {d[0]!r} message: {e}") from None
        if not isinstance(d, dict):
            raise RemoteProtocolError(f"a message must be a map, got {type(d).__name__}")
        op = d.pop("op", None)
        cls = _REGISTRY.get(op) if isinstance(op, str) else None
        if cls is None:
            raise RemoteProtocolError(f"unknown op {op!r}")
        try:
            return cls(**d)
        except TypeError as e:
            raise RemoteProtocolError(f"malformed {op!r} message: {e}") from None


def registered_ops() -> dict[str, type[Message]]:
    """Return a copy of the op → class registry (for tests and docs)."""
    return dict(_REGISTRY)


# --------------------------------------------------------------------------- tasks


@dataclass(slots=True, unsafe_hash=True)
class TaskSpec:
    """One task as the client submits it.

    ``run_spec`` is the pickled callable with its arguments (``None`` for a task whose
    value is scattered data). ``dependencies`` are the keys its arguments reference.
    ``priority`` is a tuple compared lexicographically: lower runs first.
    """

    key: Key
    dependencies: tuple[Key, ...]
    run_spec: Opaque | None
    priority: tuple[int | float, ...] = (0,)
    retries: int = 0
    workers: tuple[str, ...] | None = None
    allow_other_workers: bool = False
    resources: dict[str, float] | None = None
    #: an actor: its value is a stateful object that never leaves its worker
    actor: bool = False

    def to_wire(self) -> tuple[Any, ...]:
        """Compact positional form."""
        return TaskSpec.wire(
            self.key,
            self.dependencies,
            self.run_spec,
            self.priority,
            self.retries,
            self.workers,
            self.allow_other_workers,
            self.resources,
            self.actor,
        )

    @staticmethod
    def wire(
        key: Key,
        dependencies: tuple[Key, ...],
        run_spec: Opaque | None,
        priority: tuple[int | float, ...],
        retries: int,
        workers: tuple[str, ...] | None,
        allow_other_workers: bool,
        resources: dict[str, float] | None,
        actor: bool = False,
    ) -> tuple[Any, ...]:
        """The compact positional form of a task spec, without making the spec first
        (0.1 µs instead of 0.6 here: the client's per-task path)."""
        return (
            key,
            dependencies,
            run_spec,
            priority,
            retries,
            workers,
            allow_other_workers,
            resources,
            actor,
        )

    @classmethod
    def from_wire(cls, t: Any) -> TaskSpec:
        """Inverse of :meth:`to_wire`; raise RemoteProtocolError if malformed."""
        try:
            return cls(*t)
        except TypeError as e:
            raise RemoteProtocolError(f"malformed task spec: {e}") from None


# ------------------------------------------------------------ client → scheduler stream


@dataclass(slots=True, unsafe_hash=True)
class RegisterClient(Message):
    """First message on a client's stream; the scheduler answers ``ClientRegistered``."""

    op: ClassVar[str] = "register-client"
    client: str
    versions: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, unsafe_hash=True)
class UpdateGraph(Message):
    """Add tasks (wire-form :class:`TaskSpec` tuples); the client wants ``keys``."""

    op: ClassVar[str] = "update-graph"
    hand_over: ClassVar[bool] = True
    tasks: tuple[Any, ...]
    keys: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class ClientReleasesKeys(Message):
    """The client holds no more futures for these keys."""

    op: ClassVar[str] = "client-releases-keys"
    hand_over: ClassVar[bool] = True
    keys: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class ClientDesiresKeys(Message):
    """The client holds new futures for keys that already exist on the scheduler."""

    op: ClassVar[str] = "client-desires-keys"
    hand_over: ClassVar[bool] = True
    keys: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class CancelKeys(Message):
    """Cancel these keys (and, with ``force``, also for other clients)."""

    op: ClassVar[str] = "cancel-keys"
    hand_over: ClassVar[bool] = True
    keys: tuple[Key, ...]
    force: bool = False


@dataclass(slots=True, unsafe_hash=True)
class ScatteredData(Message):
    """The client put data straight on workers: ``who_has`` maps key → addresses.

    Sent as a request (reply ``OK``) so that the keys exist on the scheduler before
    the client hands out their futures.
    """

    op: ClassVar[str] = "scattered-data"
    who_has: dict[Key, tuple[Address, ...]]
    nbytes: dict[Key, int]
    client: str = ""


@dataclass(slots=True, unsafe_hash=True)
class FireAndForget(Message):
    """Run these keys to completion even if no client holds them any more."""

    op: ClassVar[str] = "fire-and-forget"
    hand_over: ClassVar[bool] = True
    keys: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class CloseClient(Message):
    """The client is closing on purpose; release everything it holds."""

    op: ClassVar[str] = "close-client"


# ------------------------------------------------------------ scheduler → client stream


@dataclass(slots=True, unsafe_hash=True)
class ClientRegistered(Message):
    """Answer to ``RegisterClient``/``RegisterWorker``: the scheduler's identity."""

    op: ClassVar[str] = "registered"
    address: Address
    versions: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, unsafe_hash=True)
class KeyInMemory(Message):
    """A key the client wants has a value on these workers (``who_has``)."""

    op: ClassVar[str] = "key-in-memory"
    hand_over: ClassVar[bool] = True
    key: Key
    type_name: str | None = None
    who_has: tuple[Address, ...] = ()
    #: The value itself, serialized, when it is small (``worker.inline-result-bytes``):
    #: the client then needs no request to a worker to read it.
    value: bytes | None = None


@dataclass(slots=True, unsafe_hash=True)
class KeyErred(Message):
    """A key the client wants failed (``blame`` is the key that actually raised)."""

    op: ClassVar[str] = "task-erred"
    hand_over: ClassVar[bool] = True
    key: Key
    exception: Opaque | None
    traceback: Opaque | None
    exception_text: str
    traceback_text: str
    blame: Key


@dataclass(slots=True, unsafe_hash=True)
class KeyLost(Message):
    """A key that was in memory is gone (worker lost) and will be recomputed."""

    op: ClassVar[str] = "key-lost"
    hand_over: ClassVar[bool] = True
    key: Key


@dataclass(slots=True, unsafe_hash=True)
class KeysCancelled(Message):
    """These keys were cancelled; their futures must fail with a cancellation."""

    op: ClassVar[str] = "keys-cancelled"
    hand_over: ClassVar[bool] = True
    keys: tuple[Key, ...]
    reason: str = ""


def unknown_key_reason(key: Key) -> str:
    """Why a future fails when the scheduler does not know its key."""
    return (
        f"key {key!r} is not known to the scheduler: it was released, or the scheduler "
        "restarted without a journal and lost it (`shoal scheduler --journal PATH` keeps "
        "tasks across restarts); submit the computation again"
    )


# ------------------------------------------------------------ scheduler → worker stream


@dataclass(slots=True, unsafe_hash=True)
class ComputeTask(Message):
    """Run ``key``; ``who_has`` says where each dependency not on this worker lives."""

    op: ClassVar[str] = "compute-task"
    positional: ClassVar[bool] = True
    key: Key
    run_spec: Opaque | None
    who_has: dict[Key, tuple[Address, ...]]
    nbytes: dict[Key, int]
    priority: tuple[int | float, ...]
    resources: dict[str, float] | None = None
    #: Seconds the scheduler expects it to run (its prefix's average); negative: unknown.
    duration: float = -1.0


@dataclass(slots=True, unsafe_hash=True)
class FreeKeys(Message):
    """Forget these keys: drop their data and cancel them if queued or running."""

    op: ClassVar[str] = "free-keys"
    keys: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class AcquireReplicas(Message):
    """Fetch copies of these keys from the listed holders and keep them."""

    op: ClassVar[str] = "acquire-replicas"
    who_has: dict[Key, tuple[Address, ...]]
    nbytes: dict[Key, int]


@dataclass(slots=True, unsafe_hash=True)
class StealRequest(Message):
    """Give ``key`` back if it has not started: the scheduler wants it to run elsewhere.

    The worker answers ``StealResponse`` on its stream. It drops the task only if it was
    still waiting for data or for a thread (``waiting``, ``ready`` or ``constrained``),
    so a stolen task never runs twice.
    """

    op: ClassVar[str] = "steal-request"
    key: Key


# ------------------------------------------------------------ worker → scheduler stream


@dataclass(slots=True, unsafe_hash=True)
class RegisterWorker(Message):
    """First message on a worker's stream; the scheduler answers ``ClientRegistered``."""

    op: ClassVar[str] = "register-worker"
    address: Address
    nthreads: int
    memory_limit: int
    name: str
    versions: dict[str, Any] = field(default_factory=dict)
    keys: tuple[Key, ...] = ()
    nbytes: dict[Key, int] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    #: address of the nanny supervising this worker ("" without one)
    nanny: str = ""


@dataclass(slots=True, unsafe_hash=True)
class TaskFinished(Message):
    """``key`` ran here and its result (``nbytes``) is held by this worker."""

    op: ClassVar[str] = "task-finished"
    positional: ClassVar[bool] = True
    key: Key
    nbytes: int
    type_name: str
    start: float
    stop: float
    #: The value, serialized, when at most ``worker.inline-result-bytes``: the scheduler
    #: passes it on to the clients that want the key (its state keeps none of it; the
    #: bounded event log and the journal hold the event as received).
    value: bytes | None = None


@dataclass(slots=True, unsafe_hash=True)
class TaskFailed(Message):
    """``key`` raised; the exception travels pickled and as text."""

    op: ClassVar[str] = "task-failed"
    key: Key
    exception: Opaque | None
    traceback: Opaque | None
    exception_text: str
    traceback_text: str
    start: float
    stop: float


@dataclass(slots=True, unsafe_hash=True)
class AddKeys(Message):
    """This worker now holds copies of ``keys`` (fetched or acquired)."""

    op: ClassVar[str] = "add-keys"
    keys: tuple[Key, ...]
    nbytes: dict[Key, int]


@dataclass(slots=True, unsafe_hash=True)
class MissingData(Message):
    """``errant_worker`` did not have ``key`` although the scheduler said it did."""

    op: ClassVar[str] = "missing-data"
    key: Key
    errant_worker: Address


@dataclass(slots=True, unsafe_hash=True)
class Reschedule(Message):
    """Take ``key`` back and assign it again (e.g. its dependencies became unreachable)."""

    op: ClassVar[str] = "reschedule"
    key: Key


@dataclass(slots=True, unsafe_hash=True)
class StealResponse(Message):
    """Answer to ``StealRequest``: the state ``key`` was in when the request arrived.

    ``waiting``, ``ready`` or ``constrained`` mean the worker dropped the task; any
    other state (``executing``, ``memory``, ``error``, or ``None`` for an unknown key)
    means it kept going and will report the outcome as usual.
    """

    op: ClassVar[str] = "steal-response"
    key: Key
    state: str | None


@dataclass(slots=True, unsafe_hash=True)
class WorkerStatus(Message):
    """The worker's status changed: ``"running"``, or ``"paused"`` (memory is short: it
    runs no new task until it is ``"running"`` again; the scheduler sends it none)."""

    op: ClassVar[str] = "worker-status"
    status: str


@dataclass(slots=True, unsafe_hash=True)
class Heartbeat(Message):
    """Periodic liveness and load report from a worker."""

    op: ClassVar[str] = "heartbeat"
    metrics: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------ requests and replies


@dataclass(slots=True, unsafe_hash=True)
class OK(Message):
    """Generic successful reply; ``value`` is op-specific and msgpack-able."""

    op: ClassVar[str] = "ok"
    value: Any = None


@dataclass(slots=True, unsafe_hash=True)
class ErrorReply(Message):
    """Generic failure reply: a human-readable error for whoever sent the request."""

    op: ClassVar[str] = "error"
    message: str
    exception: Opaque | None = None


@dataclass(slots=True, unsafe_hash=True)
class Identity(Message):
    """Ask a server who it is (type, address, workers...). Reply: ``OK(value=dict)``."""

    op: ClassVar[str] = "identity"


@dataclass(slots=True, unsafe_hash=True)
class WhoHas(Message):
    """Ask the scheduler where keys live (all keys if ``None``). Reply: ``OK({key: [addr]})``."""

    op: ClassVar[str] = "who-has"
    keys: tuple[Key, ...] | None = None


@dataclass(slots=True, unsafe_hash=True)
class HasWhat(Message):
    """Ask which keys each worker holds. Reply: ``OK({addr: [key]})``."""

    op: ClassVar[str] = "has-what"
    workers: tuple[Address, ...] | None = None


@dataclass(slots=True, unsafe_hash=True)
class Processing(Message):
    """Ask which keys each worker is processing. Reply: ``OK({addr: [key]})``."""

    op: ClassVar[str] = "processing"
    workers: tuple[Address, ...] | None = None


@dataclass(slots=True, unsafe_hash=True)
class NThreads(Message):
    """Ask how many threads each worker has. Reply: ``OK({addr: n})``."""

    op: ClassVar[str] = "nthreads"
    workers: tuple[Address, ...] | None = None


@dataclass(slots=True, unsafe_hash=True)
class GatherKeys(Message):
    """Ask for the status and holders of keys a client wants to gather.

    Reply: ``OK({key: {"status": state, "who_has": [addr]}})``.
    """

    op: ClassVar[str] = "gather-keys"
    keys: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class Broadcast(Message):
    """Ask the scheduler to forward ``msg`` (a message map) to workers (or with
    ``nanny``, to their nannies) and collect replies.

    Reply: ``OK({worker addr: reply-map})``.
    """

    op: ClassVar[str] = "broadcast"
    msg: dict[str, Any]
    workers: tuple[Address, ...] | None = None
    nanny: bool = False


@dataclass(slots=True, unsafe_hash=True)
class GetData(Message):
    """Ask a worker for the values of keys. Reply: ``DataReply``.

    ``same_host``: the asker's :func:`shoal.comm.same_host.process_identity` (host, pid
    namespace, user); a worker with the same one may then answer in ways only a
    process there can use: references to memory files, with ``map_files`` (see
    :mod:`shoal.comm.shared_memory`), and buffers lent to copy out of its memory, with
    ``cross_memory`` (the asker's random nonce, see :mod:`shoal.comm.cross_memory`).
    """

    op: ClassVar[str] = "get-data"
    keys: tuple[Key, ...]
    who: Address | None = None
    same_host: str | None = None
    map_files: bool = False
    cross_memory: bytes | None = None


@dataclass(slots=True, unsafe_hash=True)
class DataReply(Message):
    """Values a worker holds (``data``), the keys it did not have (``missing``),
    references to the memory files of values the asker maps itself (``shared``, see
    :mod:`shoal.comm.shared_memory`), and values it lends the asker to copy out of its
    memory (``lent``: header and spans by key, all under one ``lease``: the worker's
    pid, the address of the asker's nonce there and how many seconds the lease lasts,
    see :mod:`shoal.comm.cross_memory`)."""

    op: ClassVar[str] = "data"
    data: dict[Key, Opaque]
    missing: tuple[Key, ...] = ()
    shared: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    lent: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    lease: tuple[Any, ...] = ()


@dataclass(slots=True, unsafe_hash=True)
class ReleaseData(Message):
    """The asker is done with what a ``DataReply`` lent (under its ``nonce``). Reply:
    ``OK(held)``: whether the lease still held, i.e. whether the copy can be used."""

    op: ClassVar[str] = "release-data"
    nonce: bytes


@dataclass(slots=True, unsafe_hash=True)
class UpdateData(Message):
    """Put values straight into a worker's memory (scatter). Reply: ``OK({key: nbytes})``."""

    op: ClassVar[str] = "update-data"
    data: dict[Key, Opaque]


@dataclass(slots=True, unsafe_hash=True)
class RunFunction(Message):
    """Run a pickled ``(function, args, kwargs)`` on a worker. Reply: ``OK(Opaque)``."""

    op: ClassVar[str] = "run"
    function: Opaque


@dataclass(slots=True, unsafe_hash=True)
class RetireWorkers(Message):
    """Retire workers gracefully: copy the keys only they hold elsewhere, then close them.

    ``workers`` are addresses or names; with ``workers=None``, ``n`` workers are chosen
    (those holding the least data). ``close_workers=False`` keeps the processes running
    but removes them from the scheduler. Reply: ``OK({address: worker-info})`` naming the
    workers actually retired.
    """

    op: ClassVar[str] = "retire-workers"
    workers: tuple[str, ...] | None = None
    n: int | None = None
    close_workers: bool = True


@dataclass(slots=True, unsafe_hash=True)
class Replicate(Message):
    """Make each key be held by ``n`` workers (``None``: all of ``workers``).

    Copies are added on, or extra copies removed from, ``workers`` (``None``: all
    workers). Reply ``OK()`` once the copies exist.
    """

    op: ClassVar[str] = "replicate"
    keys: tuple[Key, ...]
    n: int | None = None
    workers: tuple[str, ...] | None = None


@dataclass(slots=True, unsafe_hash=True)
class Rebalance(Message):
    """Even out the bytes held by ``workers`` (all if ``None``), moving ``keys`` (all if
    ``None``). Reply ``OK({"moved": count})`` once the moves are done."""

    op: ClassVar[str] = "rebalance"
    keys: tuple[Key, ...] | None = None
    workers: tuple[str, ...] | None = None


@dataclass(slots=True, unsafe_hash=True)
class AdaptiveTarget(Message):
    """Ask how many workers the current load wants, and which could go.

    Reply: ``OK({"target": int, "workers_to_close": [address]})``.
    """

    op: ClassVar[str] = "adaptive-target"


@dataclass(slots=True, unsafe_hash=True)
class Restart(Message):
    """Client → scheduler: forget every task and restart every worker (through its
    nanny; workers without one are closed). Reply ``OK()`` once as many workers as before
    are back, or ``ErrorReply`` after ``timeout`` seconds."""

    op: ClassVar[str] = "restart"
    timeout: float = 120.0
    wait_for_workers: bool = True


@dataclass(slots=True, unsafe_hash=True)
class RestartWorker(Message):
    """Scheduler → nanny: kill the worker process and start a fresh one. Reply ``OK()``
    once the new worker process is started."""

    op: ClassVar[str] = "restart-worker"
    timeout: float = 30.0


@dataclass(slots=True, unsafe_hash=True)
class RunOnScheduler(Message):
    """Run a pickled ``(function, args, kwargs)`` in the scheduler process: refused
    unless the scheduler was started with ``--allow-run-on-scheduler``.
    Reply: ``OK(Opaque)``."""

    op: ClassVar[str] = "run-on-scheduler"
    function: Opaque


@dataclass(slots=True, unsafe_hash=True)
class Terminate(Message):
    """Ask a server to close."""

    op: ClassVar[str] = "terminate"
