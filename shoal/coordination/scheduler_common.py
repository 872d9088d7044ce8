"""What the scheduler side of every coordination primitive shares.

- :class:`Waiters`: callers parked in a long-poll request until something changes, or
  their deadline passes; the scheduler enforces timeouts, so a caller never stops
  waiting while the scheduler still acts for it.
- :class:`KeyHolder`: keys a primitive holds (a Future stored in a Variable, a Queue, a
  dataset), wanted on the scheduler by a pseudo-client named after the primitive, so
  that they outlive the client that stored them.
- :func:`hand_over`: keys given to a client are marked as wanted by it before the reply
  leaves, so they can't be forgotten before its Futures exist.
- :func:`failure`: the reply of an operation that must raise a given exception type
  in the caller.

Nothing here unpickles: values are ``Opaque`` and stay so.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shoal._types import Key
from shoal.protocol.messages import OK
from shoal.scheduler.state import KeysDesired, KeysReleased

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

_ids = itertools.count()

#: exception type names a reply may ask the caller to raise
ERRORS = ("TimeoutError", "KeyError", "ValueError", "RuntimeError")


def failure(kind: str, message: str) -> OK:
    """The reply of a request that must raise ``kind(message)`` in the caller."""
    assert kind in ERRORS, kind
    return OK({"error": kind, "message": message})


def stimulus(prefix: str) -> str:
    """A unique stimulus id for an event a primitive feeds the state machine."""
    return f"{prefix}-{next(_ids)}"


class Gone(Exception):
    """The caller a waiter waited for left the cluster or stopped waiting."""


class WaitRegistry:
    """Blocking requests by the ``wait_id`` their caller gave them, so that a caller
    that stops waiting (its coroutine cancelled) can say so with ``CancelWait``: the
    request then ends without taking anything (no queue item, no lease).

    A cancellation may arrive before its request (they travel on different
    connections): the last ``memory`` cancelled ids are remembered.
    """

    def __init__(self, memory: int = 10_000) -> None:
        self.parked: dict[str, asyncio.Future[None]] = {}
        self.cancelled: OrderedDict[str, None] = OrderedDict()
        self.memory = memory

    def is_cancelled(self, wait_id: str) -> bool:
        """Whether the caller of ``wait_id`` stopped waiting."""
        return bool(wait_id) and wait_id in self.cancelled

    def cancel(self, wait_id: str) -> None:
        """The caller of ``wait_id`` stopped waiting: wake its request with Gone."""
        if not wait_id:
            return
        self.cancelled[wait_id] = None
        while len(self.cancelled) > self.memory:
            self.cancelled.popitem(last=False)
        fut = self.parked.get(wait_id)
        if fut is not None and not fut.done():
            fut.set_exception(Gone("the caller stopped waiting"))


class Caller:
    """Who waits in a blocking request: its client and, when given, its wait id."""

    __slots__ = ("client", "registry", "wait_id")

    def __init__(self, client: str, wait_id: str, registry: WaitRegistry) -> None:
        self.client = client
        self.wait_id = wait_id
        self.registry = registry

    def check(self) -> None:
        """Raise Gone if this caller already stopped waiting."""
        if self.registry.is_cancelled(self.wait_id):
            raise Gone("the caller stopped waiting")


class Waiters:
    """Callers waiting for a change, each until its deadline (loop time) or forever."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[asyncio.Future[None], str] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    async def wait(self, deadline: float | None, caller: Caller | None = None) -> bool:
        """Wait for :meth:`notify_all`; return False once ``deadline`` has passed.

        Raise :class:`Gone` if the caller's client left (:meth:`drop_client`) or the
        caller cancelled its wait, before or meanwhile.
        """
        if caller is not None:
            caller.check()
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else deadline - loop.time()
        if timeout is not None and timeout <= 0:
            return False
        fut: asyncio.Future[None] = loop.create_future()
        self._waiting[fut] = "" if caller is None else caller.client
        parked = caller is not None and bool(caller.wait_id)
        if parked:
            assert caller is not None
            caller.registry.parked[caller.wait_id] = fut
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            self._waiting.pop(fut, None)
            if parked:
                assert caller is not None
                caller.registry.parked.pop(caller.wait_id, None)
        if not fut.done():
            fut.cancel()
            return False
        fut.result()  # raises Gone
        return True

    def notify_all(self) -> None:
        """Wake every waiter (each checks again whether what it waits for happened)."""
        for fut in self._waiting:
            if not fut.done():
                fut.set_result(None)

    def drop_client(self, client: str) -> None:
        """Wake the waiters of ``client`` (gone) with :class:`Gone`."""
        for fut, who in self._waiting.items():
            if who == client and not fut.done():
                fut.set_exception(Gone(f"client {client} left"))

    def close(self) -> None:
        """Wake everyone: the scheduler closes."""
        for fut in self._waiting:
            if not fut.done():
                fut.set_exception(Gone("the scheduler closed"))


def deadline_of(timeout: float | None) -> float | None:
    """The loop time ``timeout`` seconds from now (``None``: never)."""
    if timeout is None:
        return None
    return asyncio.get_running_loop().time() + max(float(timeout), 0.0)


def gone_reply(exc: Gone) -> OK:
    """The reply of a request whose caller left or stopped waiting."""
    return failure("RuntimeError", f"no longer waiting: {exc}")


async def ensure_known(
    scheduler: Scheduler, keys: Iterable[Key], patience: float = 10.0
) -> OK | None:
    """Wait (up to ``patience`` s) until the scheduler knows ``keys``.

    A client sends new tasks on its batched stream and a request on another
    connection: the request may arrive first, by a few milliseconds. Returns ``None``
    when all are known, else the error reply to send.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + patience
    missing = [k for k in keys if k not in scheduler.state.tasks]
    while missing:
        if loop.time() > end:
            return failure(
                "ValueError",
                f"the futures of keys {missing!r} are not known to the scheduler (released "
                "or cancelled?): keep a reference to a future until it is stored",
            )
        await asyncio.sleep(0.01)
        missing = [k for k in missing if k not in scheduler.state.tasks]
    return None


def hand_over(scheduler: Scheduler, client: str, keys: Iterable[Key]) -> None:
    """Mark ``keys`` as wanted by ``client`` (connected), which is being sent them."""
    keys = tuple(k for k in keys if k in scheduler.state.tasks)
    if keys and client in scheduler.client_streams:
        scheduler.handle(
            KeysDesired(
                client=client, keys=keys, stimulus_id=stimulus("hand-over"), now=time.time()
            )
        )


class KeyHolder:
    """Keys kept alive on behalf of one primitive, counted: the same key stored twice
    is released when the last copy goes.

    The pseudo-client is ``name`` and the scheduler's id: a scheduler recovered from
    its journal releases the pseudo-clients of the one before it (whose primitives were
    not journaled) once the clients' grace ends, and must not release with them the keys
    a primitive of the same name holds since the restart.
    """

    __slots__ = ("counts", "name", "scheduler")

    def __init__(self, scheduler: Scheduler, name: str) -> None:
        self.scheduler = scheduler
        self.name = f"{name} ({scheduler.id})"
        self.counts: Counter[Any] = Counter()

    def hold(self, keys: Iterable[Key]) -> None:
        """Keep ``keys`` (known to the scheduler) alive."""
        new = []
        for k in keys:
            if not self.counts[k]:
                new.append(k)
            self.counts[k] += 1
        if new:
            self.scheduler.handle(
                KeysDesired(
                    client=self.name,
                    keys=tuple(new),
                    stimulus_id=stimulus(self.name),
                    now=time.time(),
                )
            )

    def drop(self, keys: Iterable[Key]) -> None:
        """Stop holding one copy of each of ``keys``."""
        gone = []
        for k in keys:
            n = self.counts.get(k, 0)
            if n <= 1:
                self.counts.pop(k, None)
                if n == 1:
                    gone.append(k)
            else:
                self.counts[k] = n - 1
        if gone and self.scheduler.status == "running":
            self.scheduler.handle(
                KeysReleased(
                    client=self.name,
                    keys=tuple(gone),
                    stimulus_id=stimulus(self.name),
                    now=time.time(),
                )
            )

    def drop_all(self) -> None:
        """Release every key held."""
        self.drop([k for k, n in self.counts.items() for _ in range(n)])
