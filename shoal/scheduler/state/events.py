"""The stimuli the scheduler state machine reacts to.

Each event is a slotted dataclass, never modified once built (not frozen, for speed:
see :mod:`shoal.protocol.messages`). Every one carries ``stimulus_id`` (ties the
transitions it causes together in the story; ``""`` lets the state number it) and
``now`` (the only clock the state machine has), keyword-only and last. Events
round-trip through :meth:`Event.to_dict` / :meth:`Event.from_dict` as plain data
(``Opaque`` payloads stay as they are), so a journal can replay them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from shoal._types import Address, ClientId, Key, StimulusId
from shoal.protocol.messages import TaskSpec
from shoal.protocol.opaque import Opaque

_EVENTS: dict[str, type[Event]] = {}


@dataclass(slots=True, unsafe_hash=True)
class Event:
    """Base of all scheduler events."""

    stimulus_id: StimulusId = field(default="", kw_only=True)
    now: float = field(default=0.0, kw_only=True)

    def __init_subclass__(cls) -> None:
        # No super() here: slotted dataclasses are rebuilt, which breaks its cell.
        _EVENTS[cls.__name__] = cls

    def touched_keys(self) -> tuple[Key, ...]:
        """The keys this event names (for ``story``)."""
        return ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form: ``{"event": class name, field: value, ...}``."""
        d: dict[str, Any] = {"event": type(self).__name__}
        for f in fields(self):
            d[f.name] = getattr(self, f.name)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        cls = _EVENTS[d.pop("event")]
        return cls._decode(d)

    @classmethod
    def _decode(cls, d: dict[str, Any]) -> Event:
        return cls(**d)


# ----------------------------------------------------------------------------- clients


@dataclass(slots=True, unsafe_hash=True)
class ClientConnected(Event):
    """A client opened its stream."""

    client: ClientId


@dataclass(slots=True, unsafe_hash=True)
class ClientDisconnected(Event):
    """A client closed or lost its stream: it no longer wants any key."""

    client: ClientId


@dataclass(slots=True, unsafe_hash=True)
class GraphSubmitted(Event):
    """A client adds ``tasks`` and holds futures for ``keys``.

    A task whose key exists keeps its state, unless it is released or erred: then it
    takes the new spec (an erred one is retried, with the erred tasks it depends on).
    """

    client: ClientId
    tasks: tuple[TaskSpec, ...]
    keys: tuple[Key, ...]

    def touched_keys(self) -> tuple[Key, ...]:
        """The submitted keys and the wanted keys."""
        return (*(t.key for t in self.tasks), *self.keys)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form; task specs in their positional wire form."""
        d = Event.to_dict(self)
        d["tasks"] = tuple(t.to_wire() for t in self.tasks)
        return d

    @classmethod
    def _decode(cls, d: dict[str, Any]) -> Event:
        d["tasks"] = tuple(TaskSpec.from_wire(t) for t in d["tasks"])
        return cls(**d)


@dataclass(slots=True, unsafe_hash=True)
class KeysReleased(Event):
    """A client holds no more futures for ``keys``."""

    client: ClientId
    keys: tuple[Key, ...]

    def touched_keys(self) -> tuple[Key, ...]:
        """The released keys."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class KeysDesired(Event):
    """A client holds new futures for keys that may already exist."""

    client: ClientId
    keys: tuple[Key, ...]

    def touched_keys(self) -> tuple[Key, ...]:
        """The desired keys."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class FireAndForgetRequested(Event):
    """Run ``keys`` to completion even once no client holds them (``fire_and_forget``)."""

    client: ClientId
    keys: tuple[Key, ...]

    def touched_keys(self) -> tuple[Key, ...]:
        """The keys to finish."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class KeysCancelled(Event):
    """A client cancels ``keys`` (and their dependents); ``force`` cancels for everyone."""

    client: ClientId
    keys: tuple[Key, ...]
    force: bool = False

    def touched_keys(self) -> tuple[Key, ...]:
        """The cancelled keys."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class DataScattered(Event):
    """A client put values straight on workers; it wants those keys."""

    client: ClientId
    who_has: dict[Key, tuple[Address, ...]]
    nbytes: dict[Key, int]

    def touched_keys(self) -> tuple[Key, ...]:
        """The scattered keys."""
        return tuple(self.who_has)


# ----------------------------------------------------------------------------- workers


@dataclass(slots=True, unsafe_hash=True)
class WorkerAdded(Event):
    """A worker joined; it may already hold ``keys`` (a reconnect)."""

    address: Address
    nthreads: int
    memory_limit: int
    name: str
    resources: dict[str, float] = field(default_factory=dict)
    keys: tuple[Key, ...] = ()
    nbytes: dict[Key, int] = field(default_factory=dict)

    def touched_keys(self) -> tuple[Key, ...]:
        """The keys the worker brings."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class WorkerRemoved(Event):
    """A worker left or died.

    ``safe`` means it left on purpose after its work was moved away: the tasks it was
    running are not held against it (they do not count towards ``KilledWorker``).
    """

    address: Address
    reason: str = ""
    safe: bool = False


@dataclass(slots=True, unsafe_hash=True)
class TaskFinishedEvent(Event):
    """``worker`` ran ``key`` and holds its value (``nbytes`` bytes of ``type_name``)."""

    worker: Address
    key: Key
    nbytes: int
    type_name: str
    start: float
    stop: float
    #: The value, serialized, if small: for the clients that want it (see KeyInMemory).
    value: bytes | None = None

    def touched_keys(self) -> tuple[Key, ...]:
        """The finished key."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class TaskFailedEvent(Event):
    """``key`` raised on ``worker``; the exception travels pickled and as text."""

    worker: Address
    key: Key
    exception: Opaque | None
    traceback: Opaque | None
    exception_text: str
    traceback_text: str
    start: float
    stop: float

    def touched_keys(self) -> tuple[Key, ...]:
        """The failed key."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class ReplicasAdded(Event):
    """``worker`` now holds copies of ``keys`` (fetched from peers or acquired)."""

    worker: Address
    keys: tuple[Key, ...]
    nbytes: dict[Key, int] = field(default_factory=dict)

    def touched_keys(self) -> tuple[Key, ...]:
        """The replicated keys."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class DataMissing(Event):
    """``worker`` could not get ``key`` from ``errant_worker``, said to hold it."""

    worker: Address
    key: Key
    errant_worker: Address

    def touched_keys(self) -> tuple[Key, ...]:
        """The missing key."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class RescheduleRequested(Event):
    """``worker`` gives ``key`` back to be assigned again."""

    worker: Address
    key: Key

    def touched_keys(self) -> tuple[Key, ...]:
        """The rescheduled key."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class StealResponded(Event):
    """``worker`` answered a steal request: ``key`` was in ``state`` when it arrived.

    ``waiting``, ``ready`` or ``constrained`` mean the worker dropped the task.
    """

    worker: Address
    key: Key
    state: str | None

    def touched_keys(self) -> tuple[Key, ...]:
        """The key asked for."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class WorkerStatusChanged(Event):
    """``worker`` paused (short of memory: it starts no new task) or runs again."""

    worker: Address
    status: str


# ------------------------------------------------------------------ requests and time


@dataclass(slots=True, unsafe_hash=True)
class ErredRestored(Event):
    """A journal snapshot says ``key`` had erred (see :mod:`.snapshot`): err it again,
    with the same failure, instead of running it."""

    key: Key
    exception: Opaque | None
    traceback: Opaque | None
    exception_text: str
    traceback_text: str
    blame: Key

    def touched_keys(self) -> tuple[Key, ...]:
        """The restored key."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class RestartRequested(Event):
    """Forget every task (their futures are cancelled): the workers are restarting."""


@dataclass(slots=True, unsafe_hash=True)
class RetirementRequested(Event):
    """Retire ``workers`` (addresses or names), or ``n`` chosen ones, gracefully.

    Their tasks move to other workers and the keys only they hold are copied elsewhere;
    then each is removed and, with ``close``, told to shut down. ``request`` names the
    reply (:class:`~shoal.scheduler.state.outgoing.RequestDone`).
    """

    request: str
    workers: tuple[str, ...] | None = None
    n: int | None = None
    close: bool = True


@dataclass(slots=True, unsafe_hash=True)
class ReplicationRequested(Event):
    """Make each of ``keys`` held by ``n`` of ``workers`` (``None``: all of them)."""

    request: str
    keys: tuple[Key, ...]
    n: int | None = None
    workers: tuple[str, ...] | None = None

    def touched_keys(self) -> tuple[Key, ...]:
        """The keys to replicate."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class RebalanceRequested(Event):
    """Even out the bytes ``workers`` hold by moving ``keys`` (``None``: all)."""

    request: str
    keys: tuple[Key, ...] | None = None
    workers: tuple[str, ...] | None = None


@dataclass(slots=True, unsafe_hash=True)
class Tick(Event):
    """Time passed (sent periodically): balance work, retry moves, expire waits."""


def event_types() -> dict[str, type[Event]]:
    """Return a copy of the event name → class registry (for tests and tools)."""
    return dict(_EVENTS)


__all__ = [
    "ClientConnected",
    "ClientDisconnected",
    "DataMissing",
    "DataScattered",
    "Event",
    "FireAndForgetRequested",
    "GraphSubmitted",
    "KeysCancelled",
    "KeysDesired",
    "KeysReleased",
    "RebalanceRequested",
    "ReplicasAdded",
    "ReplicationRequested",
    "RescheduleRequested",
    "RestartRequested",
    "RetirementRequested",
    "StealResponded",
    "TaskFailedEvent",
    "TaskFinishedEvent",
    "Tick",
    "WorkerAdded",
    "WorkerRemoved",
    "WorkerStatusChanged",
    "event_types",
]
