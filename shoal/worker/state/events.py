"""Stimuli the worker state machine reacts to.

Each event is a slotted dataclass, never modified once built (not frozen, for speed:
see :mod:`shoal.protocol.messages`). Every event ends with ``stimulus_id`` (the
cause, threaded through logs and stories) and ``now`` (the only clock the state
machine ever sees). Events round-trip through :meth:`Event.to_dict` /
:func:`event_from_dict` as JSON-ready data, so event logs can be stored and replayed.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from shoal._types import Address, Key
from shoal.protocol.messages import ComputeTask
from shoal.protocol.opaque import Opaque

_EVENT_TYPES: dict[str, type[Event]] = {}


class Event:
    """Base of every event; subclasses are slotted dataclasses, never modified."""

    __slots__ = ()
    stimulus_id: str
    now: float
    #: Name used in logs and in :meth:`to_dict`.
    name: ClassVar[str] = "event"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _EVENT_TYPES[cls.__dict__["name"]] = cls

    def story_keys(self) -> Iterable[Key]:
        """The keys this event is about (for stories)."""
        return ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; :func:`event_from_dict` is its inverse."""
        d: dict[str, Any] = {"event": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            d[f.name] = _encode(getattr(self, f.name))
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output."""
        return event_from_dict(d)


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from :meth:`Event.to_dict` output."""
    cls = _EVENT_TYPES[d["event"]]
    return cls(**{k: _decode(v) for k, v in d.items() if k != "event"})


# Encoding: every JSON object produced here is a tagged value, so a user key such as
# "__tuple__" can never be mistaken for a tag.
def _encode(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, tuple):
        return {"t": [_encode(x) for x in v]}
    if isinstance(v, list):
        return {"l": [_encode(x) for x in v]}
    if isinstance(v, dict):
        return {"d": [[_encode(k), _encode(x)] for k, x in v.items()]}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"b": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, Opaque):
        return {"o": [base64.b64encode(bytes(f)).decode("ascii") for f in v.frames]}
    raise TypeError(f"cannot encode {type(v).__name__} in an event")


def _decode(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    ((tag, x),) = v.items()
    if tag == "t":
        return tuple(_decode(y) for y in x)
    if tag == "l":
        return [_decode(y) for y in x]
    if tag == "d":
        return {_decode(k): _decode(y) for k, y in x}
    if tag == "b":
        return base64.b64decode(x)
    if tag == "o":
        return Opaque([base64.b64decode(f) for f in x])
    raise ValueError(f"unknown tag {tag!r} in an encoded event")


# --------------------------------------------------------------------- from the scheduler


@dataclass(slots=True, unsafe_hash=True)
class ComputeTaskEvent(Event):
    """Compute ``key`` here. ``who_has`` lists every dependency with its holders.

    A dependency already in memory here may be listed with any holders (this worker's
    own address is ignored). ``nbytes`` gives the sizes of dependencies.
    """

    name: ClassVar[str] = "compute-task"
    key: Key
    run_spec: Opaque | None
    who_has: dict[Key, tuple[Address, ...]]
    nbytes: dict[Key, int]
    priority: tuple[int | float, ...]
    resources: dict[str, float] | None = None
    stimulus_id: str = ""
    now: float = 0.0
    #: Seconds the scheduler expects it to run; negative: unknown.
    duration: float = -1.0

    @classmethod
    def from_message(cls, msg: ComputeTask, stimulus_id: str, now: float) -> ComputeTaskEvent:
        """Build the event for a ``ComputeTask`` message received from the scheduler."""
        return cls(
            key=msg.key,
            run_spec=msg.run_spec,
            who_has=msg.who_has,
            nbytes=msg.nbytes,
            priority=tuple(msg.priority),
            resources=msg.resources,
            stimulus_id=stimulus_id,
            now=now,
            duration=msg.duration,
        )

    def story_keys(self) -> Iterable[Key]:
        """The task and its dependencies."""
        return (self.key, *self.who_has)


@dataclass(slots=True, unsafe_hash=True)
class FreeKeysEvent(Event):
    """The scheduler no longer wants these keys here: drop, cancel or discard them."""

    name: ClassVar[str] = "free-keys"
    keys: tuple[Key, ...]
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The freed keys."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class AcquireReplicasEvent(Event):
    """Fetch these keys from their holders and keep them (report with AddKeys)."""

    name: ClassVar[str] = "acquire-replicas"
    who_has: dict[Key, tuple[Address, ...]]
    nbytes: dict[Key, int]
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The keys to acquire."""
        return self.who_has.keys()


@dataclass(slots=True, unsafe_hash=True)
class StealRequestEvent(Event):
    """The scheduler wants ``key`` to run elsewhere (``StealRequest``).

    The worker drops the task only if the scheduler assigned it here and it has not
    started (``waiting``, ``ready`` or ``constrained``); either way it answers with a
    ``StealResponse`` naming the state the task was in (``None`` if unknown).
    """

    name: ClassVar[str] = "steal-request"
    key: Key
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The task to steal."""
        return (self.key,)


# --------------------------------------------------------------------- from the thread pool


@dataclass(slots=True, unsafe_hash=True)
class ExecuteSuccess(Event):
    """``key`` ran; its value (``nbytes``) is now in the server's store."""

    name: ClassVar[str] = "execute-success"
    key: Key
    nbytes: int
    type_name: str
    start: float
    stop: float
    stimulus_id: str = ""
    now: float = 0.0
    #: The value serialized, if small: it goes to the scheduler with TaskFinished.
    value: bytes | None = None

    def story_keys(self) -> Iterable[Key]:
        """The task that ran."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class ExecuteFailure(Event):
    """``key`` raised (or its run spec or arguments could not be loaded)."""

    name: ClassVar[str] = "execute-failure"
    key: Key
    exception: Opaque | None
    traceback: Opaque | None
    exception_text: str
    traceback_text: str
    start: float
    stop: float
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The task that ran."""
        return (self.key,)


@dataclass(slots=True, unsafe_hash=True)
class RescheduleTask(Event):
    """The running task asked to be given back to the scheduler (``Reschedule``)."""

    name: ClassVar[str] = "reschedule-task"
    key: Key
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The task."""
        return (self.key,)


# --------------------------------------------------------------------- from transfers


@dataclass(slots=True, unsafe_hash=True)
class GatherDepSuccess(Event):
    """Every key of a GatherDep to ``worker`` arrived and is in the server's store."""

    name: ClassVar[str] = "gather-dep-success"
    worker: Address
    data_nbytes: dict[Key, int]
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The keys received."""
        return self.data_nbytes.keys()


@dataclass(slots=True, unsafe_hash=True)
class GatherDepMissing(Event):
    """``worker`` answered a GatherDep but lacked ``missing``; the rest arrived."""

    name: ClassVar[str] = "gather-dep-missing"
    worker: Address
    keys_received: dict[Key, int]
    missing: tuple[Key, ...]
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The keys received and the keys missing."""
        return (*self.keys_received, *self.missing)


@dataclass(slots=True, unsafe_hash=True)
class GatherDepNetworkFailure(Event):
    """``worker`` could not be reached for a GatherDep of ``keys``."""

    name: ClassVar[str] = "gather-dep-network-failure"
    worker: Address
    keys: tuple[Key, ...]
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The keys asked for."""
        return self.keys


@dataclass(slots=True, unsafe_hash=True)
class GatherDepFailed(Event):
    """``worker`` answered but could not give ``keys`` (e.g. a value it can't serialize),
    or what it sent could not be loaded here. Refetching would fail the same way, so the
    tasks here that need these keys fail with this error.
    """

    name: ClassVar[str] = "gather-dep-failed"
    worker: Address
    keys: tuple[Key, ...]
    exception: Opaque | None
    traceback: Opaque | None
    exception_text: str
    traceback_text: str
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The keys asked for."""
        return self.keys


# --------------------------------------------------------------------- from clients


@dataclass(slots=True, unsafe_hash=True)
class DataUpdated(Event):
    """Values were put in this worker's store directly (scatter)."""

    name: ClassVar[str] = "data-updated"
    data_nbytes: dict[Key, int]
    stimulus_id: str = ""
    now: float = 0.0

    def story_keys(self) -> Iterable[Key]:
        """The keys stored."""
        return self.data_nbytes.keys()


# --------------------------------------------------------------------- from the memory monitor


@dataclass(slots=True, unsafe_hash=True)
class PauseEvent(Event):
    """The worker is short of memory: start no new task until :class:`UnpauseEvent`.

    Tasks already running finish; fetches go on; tasks that become ready wait. The
    scheduler is told (``WorkerStatus("paused")``). Pausing a paused worker does nothing.
    """

    name: ClassVar[str] = "pause"
    stimulus_id: str = ""
    now: float = 0.0


@dataclass(slots=True, unsafe_hash=True)
class UnpauseEvent(Event):
    """Memory is back below the pause threshold: start the ready tasks again.

    The scheduler is told (``WorkerStatus("running")``). Unpausing a running worker
    does nothing.
    """

    name: ClassVar[str] = "unpause"
    stimulus_id: str = ""
    now: float = 0.0
