"""The ops of the coordination primitives: client (or task) → scheduler requests.

Each is a request answered by ``OK(value)``. When an operation fails in a way the
caller must see as a Python exception (a timeout, an unknown dataset, a release without
an acquire), the value is ``{"error": <exception type name>, "message": <text>}`` and
the client raises that type (see :func:`shoal.coordination.client_base.check`).

Values are ``Opaque`` (pickled by the sender); ``keys`` are the keys of the Futures
found inside a value, which the scheduler keeps alive while it holds the value.
``client`` is the id of the client asking: keys handed to it are marked as wanted by it
before the reply leaves, so they can't be forgotten before its Futures exist.
Blocking operations take a ``timeout`` in seconds (``None``: wait forever) that the
scheduler enforces, so that a value is never taken from a queue for a caller that
stopped waiting, and a ``wait_id``: a caller that stops waiting early (its coroutine
cancelled) sends ``CancelWait(wait_id)``, and the request ends without taking anything.

Importing this module registers the ops; the scheduler imports it when it installs
the coordination extension, before any request can arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from shoal._types import Key
from shoal.protocol.messages import Message
from shoal.protocol.opaque import Opaque

# --------------------------------------------------------------------------- waiting


@dataclass(slots=True, unsafe_hash=True)
class CancelWait(Message):
    """The caller of the blocking request ``wait_id`` stopped waiting. Reply ``OK()``."""

    op: ClassVar[str] = "coordination-cancel-wait"
    wait_id: str


# --------------------------------------------------------------------------- Variable


@dataclass(slots=True, unsafe_hash=True)
class VariableSet(Message):
    """Set variable ``name`` to ``value``. Reply ``OK()``."""

    op: ClassVar[str] = "variable-set"
    name: Any
    value: Opaque
    keys: tuple[Key, ...] = ()
    client: str = ""


@dataclass(slots=True, unsafe_hash=True)
class VariableGet(Message):
    """The value of ``name``, waiting up to ``timeout`` s for one to be set.

    Reply ``OK({"value": Opaque, "keys": [key]})``."""

    op: ClassVar[str] = "variable-get"
    name: Any
    timeout: float | None = None
    client: str = ""
    wait_id: str = ""


@dataclass(slots=True, unsafe_hash=True)
class VariableDelete(Message):
    """Forget variable ``name`` and release the keys its value held. Reply ``OK()``."""

    op: ClassVar[str] = "variable-delete"
    name: Any


# --------------------------------------------------------------------------- Queue


@dataclass(slots=True, unsafe_hash=True)
class QueueCreate(Message):
    """Create queue ``name`` holding at most ``maxsize`` items (0: unbounded), unless it
    exists already. Reply ``OK()``."""

    op: ClassVar[str] = "queue-create"
    name: Any
    maxsize: int = 0


@dataclass(slots=True, unsafe_hash=True)
class QueuePut(Message):
    """Append ``value``, waiting up to ``timeout`` s for room. Reply ``OK()``."""

    op: ClassVar[str] = "queue-put"
    name: Any
    value: Opaque
    keys: tuple[Key, ...] = ()
    timeout: float | None = None
    maxsize: int = 0
    client: str = ""
    wait_id: str = ""


@dataclass(slots=True, unsafe_hash=True)
class QueueGet(Message):
    """Take items: one (waiting up to ``timeout`` s), ``batch=True`` every item there
    (without waiting), or ``batch=n`` n items (waiting for them).

    Reply ``OK({"items": [[Opaque, [key]], ...]})``."""

    op: ClassVar[str] = "queue-get"
    name: Any
    timeout: float | None = None
    batch: bool | int = False
    maxsize: int = 0
    client: str = ""
    wait_id: str = ""


@dataclass(slots=True, unsafe_hash=True)
class QueueSize(Message):
    """How many items queue ``name`` holds. Reply ``OK(int)``."""

    op: ClassVar[str] = "queue-size"
    name: Any


# --------------------------------------------------------------------------- Semaphore


@dataclass(slots=True, unsafe_hash=True)
class SemaphoreCreate(Message):
    """Create semaphore ``name`` with ``max_leases`` (an existing one must agree).

    Reply ``OK({"refresh_interval": seconds})``: how often holders refresh leases."""

    op: ClassVar[str] = "semaphore-create"
    name: Any
    max_leases: int


@dataclass(slots=True, unsafe_hash=True)
class SemaphoreAcquire(Message):
    """Take lease ``lease`` of ``name``, waiting up to ``timeout`` s. Reply ``OK(bool)``."""

    op: ClassVar[str] = "semaphore-acquire"
    name: Any
    lease: str
    max_leases: int
    timeout: float | None = None
    client: str = ""
    wait_id: str = ""


@dataclass(slots=True, unsafe_hash=True)
class SemaphoreRelease(Message):
    """Give lease ``lease`` of ``name`` back. Reply ``OK(bool)``: whether it was held
    (``False``: it had expired and was already given to someone else)."""

    op: ClassVar[str] = "semaphore-release"
    name: Any
    lease: str


@dataclass(slots=True, unsafe_hash=True)
class SemaphoreRefresh(Message):
    """The holder of these ``(name, lease)`` pairs is alive. Reply ``OK([[name, lease]])``
    naming those the scheduler no longer knows (expired)."""

    op: ClassVar[str] = "semaphore-refresh"
    leases: tuple[tuple[Any, str], ...]


@dataclass(slots=True, unsafe_hash=True)
class SemaphoreValue(Message):
    """How many leases of ``name`` are held. Reply ``OK(int)``."""

    op: ClassVar[str] = "semaphore-value"
    name: Any


# --------------------------------------------------------------------------- Event


@dataclass(slots=True, unsafe_hash=True)
class EventSet(Message):
    """Set event ``name``: every waiter wakes. Reply ``OK()``."""

    op: ClassVar[str] = "event-set"
    name: Any


@dataclass(slots=True, unsafe_hash=True)
class EventClear(Message):
    """Clear event ``name``. Reply ``OK()``."""

    op: ClassVar[str] = "event-clear"
    name: Any


@dataclass(slots=True, unsafe_hash=True)
class EventWait(Message):
    """Wait up to ``timeout`` s for ``name`` to be set. Reply ``OK(bool)``: whether it is.

    The wait ends when ``client`` (the waiting client) leaves."""

    op: ClassVar[str] = "event-wait"
    name: Any
    timeout: float | None = None
    wait_id: str = ""
    client: str = ""


# --------------------------------------------------------------------------- Pub/Sub


@dataclass(slots=True, unsafe_hash=True)
class SubRegister(Message):
    """Subscriber ``sub`` (of client ``client``) receives what is published on ``name``
    from now on. Reply ``OK()``."""

    op: ClassVar[str] = "sub-register"
    name: Any
    sub: str
    client: str = ""


@dataclass(slots=True, unsafe_hash=True)
class SubUnregister(Message):
    """Subscriber ``sub`` is gone; drop what waits for it. Reply ``OK()``."""

    op: ClassVar[str] = "sub-unregister"
    sub: str


@dataclass(slots=True, unsafe_hash=True)
class SubGet(Message):
    """The next message for subscriber ``sub``, waiting up to ``timeout`` s.

    Reply ``OK(Opaque)``."""

    op: ClassVar[str] = "sub-get"
    sub: str
    timeout: float | None = None
    wait_id: str = ""


@dataclass(slots=True, unsafe_hash=True)
class PubPut(Message):
    """Publish ``value`` on ``name`` to every current subscriber. Reply ``OK(int)``: how
    many subscribers it reached."""

    op: ClassVar[str] = "pub-put"
    name: Any
    value: Opaque


# --------------------------------------------------------------------------- datasets


@dataclass(slots=True, unsafe_hash=True)
class DatasetPublish(Message):
    """Publish ``datasets``, each ``[name, Opaque, [key]]``, all or none: an existing
    name is refused unless ``override``. Reply ``OK()``."""

    op: ClassVar[str] = "dataset-publish"
    datasets: tuple[tuple[Any, Opaque, tuple[Key, ...]], ...]
    override: bool = False
    client: str = ""


@dataclass(slots=True, unsafe_hash=True)
class DatasetGet(Message):
    """The dataset called ``name``. Reply ``OK({"value": Opaque, "keys": [key]})``."""

    op: ClassVar[str] = "dataset-get"
    name: Any
    client: str = ""


@dataclass(slots=True, unsafe_hash=True)
class DatasetDelete(Message):
    """Unpublish ``name`` and release its keys. Reply ``OK()``."""

    op: ClassVar[str] = "dataset-delete"
    name: Any


@dataclass(slots=True, unsafe_hash=True)
class DatasetList(Message):
    """The names of the published datasets. Reply ``OK([name])``."""

    op: ClassVar[str] = "dataset-list"
