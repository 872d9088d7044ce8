"""What the scheduler state machine asks its server to send.

``SchedulerState.handle`` returns a list of :data:`Outgoing`, in the order they must be
sent. The server routes each to the worker's or the client's batched stream; it never
needs to look inside ``msg``.

Messages to workers (:class:`ToWorker`):

- ``ComputeTask``: run a task; ``who_has`` lists every holder of every dependency.
- ``FreeKeys``: drop these keys (data, queued or running task, or a stored error).

Messages to clients (:class:`ToClient`):

- ``KeyInMemory``: a wanted key has a value on some worker.
- ``KeyErred``: a wanted key failed; ``blame`` names the key that raised. When
  ``exception is None`` the scheduler made the error itself and ``exception_text`` reads
  ``"<TypeName>: <message>"``: ``"KilledWorker: ..."`` (rebuild
  :class:`shoal.errors.KilledWorker`) or ``"MissingDependency: ..."``.
- ``KeyLost``: a wanted key is pending again: its last copy is gone, or it erred and
  is being retried (resubmitted); it is being recomputed.
- ``KeysCancelled``: the futures for these keys must fail as cancelled (``reason`` says why).

To the server itself:

- :class:`RequestDone`: a request made as an event (retire, replicate, rebalance) is
  complete; its reply carries ``value``.
- :class:`CloseWorker`: a worker was retired; shut its process down (``close``) or just
  stop talking to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from shoal._types import Address, ClientId, Key
from shoal.protocol.messages import FreeKeys, KeysCancelled, Message


@dataclass(slots=True, unsafe_hash=True)
class ToWorker:
    """Send ``msg`` on the stream of the worker at ``worker``."""

    worker: Address
    msg: Message


@dataclass(slots=True, unsafe_hash=True)
class ToClient:
    """Send ``msg`` on the stream of client ``client``."""

    client: ClientId
    msg: Message


@dataclass(slots=True, unsafe_hash=True)
class RequestDone:
    """The request named ``request`` is complete; answer it with ``value``."""

    request: str
    #: ``Any``, not ``object``: compiled with mypyc (``SHOAL_COMPILE=1``), a dataclass
    #: looks its field types up among the module's names, where ``object`` is not.
    value: Any


@dataclass(slots=True, unsafe_hash=True)
class CloseWorker:
    """``worker`` was retired and removed; shut it down if ``close``."""

    worker: Address
    close: bool


#: One output of ``SchedulerState.handle``.
Outgoing: TypeAlias = ToWorker | ToClient | RequestDone | CloseWorker


class Outbox:
    """Collects the outputs of one ``handle()`` call, batching what can be batched.

    ``FreeKeys`` are gathered per worker and sent as one message, but always before any
    later message to that worker, so "free x" never overtakes "compute x". Cancellations
    are gathered per client and reason and sent last.
    """

    __slots__ = ("_cancelled", "_free", "_out")

    def __init__(self) -> None:
        self._out: list[Outgoing] = []
        self._free: dict[Address, dict[Key, None]] = {}
        self._cancelled: dict[tuple[ClientId, str], dict[Key, None]] = {}

    def to_worker(self, worker: Address, msg: Message) -> None:
        """Queue ``msg`` for ``worker``, after the keys it was already told to free."""
        self._flush_free(worker)
        self._out.append(ToWorker(worker, msg))

    def free(self, worker: Address, key: Key) -> None:
        """Queue ``key`` in this call's ``FreeKeys`` for ``worker``."""
        self._free.setdefault(worker, {})[key] = None

    def forget_worker(self, worker: Address) -> None:
        """Drop what is still queued for a worker that has just left."""
        self._free.pop(worker, None)

    def to_client(self, client: ClientId, msg: Message) -> None:
        """Queue ``msg`` for ``client``."""
        self._out.append(ToClient(client, msg))

    def to_server(self, item: RequestDone | CloseWorker) -> None:
        """Queue an instruction for the server itself."""
        self._out.append(item)

    def cancelled(self, client: ClientId, key: Key, reason: str) -> None:
        """Queue ``key`` in this call's ``KeysCancelled`` for ``client`` with ``reason``."""
        self._cancelled.setdefault((client, reason), {})[key] = None

    def drain(self) -> list[Outgoing]:
        """Return everything queued, batches included, and start afresh."""
        for worker in list(self._free):
            self._flush_free(worker)
        for (client, reason), keys in self._cancelled.items():
            self._out.append(ToClient(client, KeysCancelled(keys=tuple(keys), reason=reason)))
        out, self._out, self._cancelled = self._out, [], {}
        return out

    def _flush_free(self, worker: Address) -> None:
        keys = self._free.pop(worker, None)
        if keys:
            self._out.append(ToWorker(worker, FreeKeys(keys=tuple(keys))))
