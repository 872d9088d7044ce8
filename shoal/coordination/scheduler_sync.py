"""The scheduler side of Semaphore (and Lock), Event and Pub/Sub.

Semaphore leases expire: a holder refreshes its leases every ``lease-timeout / 5``
seconds (the scheduler tells it the interval), and every
``scheduler.locks.lease-validation-interval`` the scheduler drops the leases not
refreshed for ``scheduler.locks.lease-timeout`` seconds, so a holder that died (its
process killed, its network gone) blocks the others for that long at most. A client
that leaves gives its leases back at once.

Pub/Sub goes through the scheduler: each subscriber has a buffer there that ``Sub.get``
drains; what is published before a subscriber registers is not delivered to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from shoal.coordination.messages import (
    EventClear,
    EventSet,
    EventWait,
    PubPut,
    SemaphoreAcquire,
    SemaphoreCreate,
    SemaphoreRefresh,
    SemaphoreRelease,
    SemaphoreValue,
    SubGet,
    SubRegister,
    SubUnregister,
)
from shoal.coordination.scheduler_common import (
    Caller,
    Gone,
    Waiters,
    WaitRegistry,
    deadline_of,
    failure,
    gone_reply,
)
from shoal.protocol.messages import OK, Message
from shoal.protocol.opaque import Opaque

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

logger = logging.getLogger("shoal.coordination")


class _Semaphore:
    __slots__ = ("leases", "max_leases", "waiters")

    def __init__(self, max_leases: int) -> None:
        self.max_leases = max_leases
        #: lease id → (client, loop time of the last refresh)
        self.leases: dict[str, tuple[str, float]] = {}
        self.waiters = Waiters()


class _Event:
    __slots__ = ("flag", "waiters")

    def __init__(self) -> None:
        self.flag = False
        self.waiters = Waiters()


class _Subscriber:
    __slots__ = ("buffer", "client", "name", "waiters")

    def __init__(self, name: Any, client: str) -> None:
        self.name = name
        self.client = client
        self.buffer: deque[Opaque] = deque()
        self.waiters = Waiters()


class SyncStore:
    """Semaphores, events and subscriptions of one scheduler, by name."""

    def __init__(self, scheduler: Scheduler, registry: WaitRegistry, lease_timeout: float) -> None:
        self.scheduler = scheduler
        self.registry = registry
        self.lease_timeout = lease_timeout
        self.semaphores: dict[Any, _Semaphore] = {}
        self.events: dict[Any, _Event] = {}
        self.subscribers: dict[str, _Subscriber] = {}
        self.topics: dict[Any, set[str]] = {}

    def handlers(self) -> dict[str, Any]:
        """Request handlers by op."""
        return {
            SemaphoreCreate.op: self.semaphore_create,
            SemaphoreAcquire.op: self.semaphore_acquire,
            SemaphoreRelease.op: self.semaphore_release,
            SemaphoreRefresh.op: self.semaphore_refresh,
            SemaphoreValue.op: self.semaphore_value,
            EventSet.op: self.event_set,
            EventClear.op: self.event_clear,
            EventWait.op: self.event_wait,
            SubRegister.op: self.sub_register,
            SubUnregister.op: self.sub_unregister,
            SubGet.op: self.sub_get,
            PubPut.op: self.pub_put,
        }

    def remove_client(self, client: str) -> None:
        """``client`` left: its leases go back, its event waits and subscriptions end."""
        for name, sem in self.semaphores.items():
            mine = [lease for lease, (who, _) in sem.leases.items() if who == client]
            for lease in mine:
                del sem.leases[lease]
            if mine:
                logger.info("client %s left holding %d lease(s) of %r", client, len(mine), name)
                sem.waiters.notify_all()
            sem.waiters.drop_client(client)
        for ev in self.events.values():
            ev.waiters.drop_client(client)
        for sub in [s for s in self.subscribers if self.subscribers[s].client == client]:
            self._unregister(sub)

    def close(self) -> None:
        """The scheduler closes: wake every waiter."""
        for sem in self.semaphores.values():
            sem.waiters.close()
        for ev in self.events.values():
            ev.waiters.close()
        for sub in self.subscribers.values():
            sub.waiters.close()

    # ------------------------------------------------------------------ Semaphore

    def expire_leases(self, now: float) -> None:
        """Drop the leases not refreshed for ``lease_timeout`` s (loop time ``now``)."""
        for name, sem in self.semaphores.items():
            stale = [
                lease for lease, (_, seen) in sem.leases.items() if now - seen > self.lease_timeout
            ]
            for lease in stale:
                client, _ = sem.leases.pop(lease)
                logger.warning(
                    "a lease of semaphore %r held by %s was not refreshed for %.1f s "
                    "(scheduler.locks.lease-timeout): its holder is taken for dead and "
                    "the lease is given back",
                    name,
                    client,
                    self.lease_timeout,
                )
            if stale:
                sem.waiters.notify_all()

    def _check_leases(self, name: Any, max_leases: int) -> _Semaphore | Message:
        if isinstance(max_leases, bool) or not isinstance(max_leases, int) or max_leases < 1:
            return failure("ValueError", f"max_leases must be a positive int, not {max_leases!r}")
        sem = self.semaphores.get(name)
        if sem is None:
            sem = self.semaphores[name] = _Semaphore(max_leases)
        elif sem.max_leases != max_leases:
            return failure(
                "ValueError",
                f"Semaphore {name!r} exists with max_leases={sem.max_leases}, not "
                f"{max_leases}: use the same max_leases everywhere, or another name",
            )
        return sem

    async def semaphore_create(self, scheduler: Scheduler, msg: Message) -> Message:
        """Create a semaphore (or check an existing one agrees)."""
        assert isinstance(msg, SemaphoreCreate)
        sem = self._check_leases(msg.name, msg.max_leases)
        if isinstance(sem, Message):
            return sem
        return OK({"refresh_interval": self.lease_timeout / 5})

    async def semaphore_acquire(self, scheduler: Scheduler, msg: Message) -> Message:
        """Grant a lease once fewer than ``max_leases`` are held."""
        assert isinstance(msg, SemaphoreAcquire)
        sem = self._check_leases(msg.name, msg.max_leases)
        if isinstance(sem, Message):
            return sem
        loop = asyncio.get_running_loop()
        deadline = deadline_of(msg.timeout)
        caller = Caller(msg.client, msg.wait_id, self.registry)
        try:
            caller.check()
            while msg.lease not in sem.leases:
                if len(sem.leases) < sem.max_leases:
                    sem.leases[msg.lease] = (msg.client, loop.time())
                    break
                if not await sem.waiters.wait(deadline, caller):
                    return OK(False)
        except Gone as e:
            return gone_reply(e)
        return OK(True)

    async def semaphore_release(self, scheduler: Scheduler, msg: Message) -> Message:
        """Give a lease back; ``False`` if it had expired."""
        assert isinstance(msg, SemaphoreRelease)
        sem = self.semaphores.get(msg.name)
        if sem is None or sem.leases.pop(msg.lease, None) is None:
            return OK(False)
        sem.waiters.notify_all()
        return OK(True)

    async def semaphore_refresh(self, scheduler: Scheduler, msg: Message) -> Message:
        """Mark leases as alive; answer those that are unknown (expired)."""
        assert isinstance(msg, SemaphoreRefresh)
        now = asyncio.get_running_loop().time()
        unknown = []
        for name, lease in msg.leases:
            sem = self.semaphores.get(name)
            held = None if sem is None else sem.leases.get(lease)
            if sem is None or held is None:
                unknown.append((name, lease))
            else:
                sem.leases[lease] = (held[0], now)
        return OK(unknown)

    async def semaphore_value(self, scheduler: Scheduler, msg: Message) -> Message:
        """How many leases are held."""
        assert isinstance(msg, SemaphoreValue)
        sem = self.semaphores.get(msg.name)
        return OK(0 if sem is None else len(sem.leases))

    # ------------------------------------------------------------------ Event

    def _event(self, name: Any) -> _Event:
        ev = self.events.get(name)
        if ev is None:
            ev = self.events[name] = _Event()
        return ev

    async def event_set(self, scheduler: Scheduler, msg: Message) -> Message:
        """Set an event and wake its waiters."""
        assert isinstance(msg, EventSet)
        ev = self._event(msg.name)
        ev.flag = True
        ev.waiters.notify_all()
        return OK()

    async def event_clear(self, scheduler: Scheduler, msg: Message) -> Message:
        """Clear an event (forgotten when nobody waits for it)."""
        assert isinstance(msg, EventClear)
        ev = self.events.get(msg.name)
        if ev is not None:
            ev.flag = False
            if not len(ev.waiters):
                del self.events[msg.name]
        return OK()

    async def event_wait(self, scheduler: Scheduler, msg: Message) -> Message:
        """Wait for an event to be set; answer whether it was (as ``threading.Event``:
        a waiter woken by ``set`` says True even if the event was cleared since)."""
        assert isinstance(msg, EventWait)
        deadline = deadline_of(msg.timeout)
        caller = Caller(msg.client, msg.wait_id, self.registry)
        ev = self._event(msg.name)
        flag = ev.flag
        try:
            caller.check()
            if not flag:  # only event_set wakes these waiters
                flag = await ev.waiters.wait(deadline, caller)
        except Gone as e:
            self._forget_unset(msg.name, ev)
            return gone_reply(e)
        self._forget_unset(msg.name, ev)
        return OK(flag)

    def _forget_unset(self, name: Any, ev: _Event) -> None:
        """Forget an event that is not set and that nobody waits for."""
        if not ev.flag and not len(ev.waiters) and self.events.get(name) is ev:
            del self.events[name]

    # ------------------------------------------------------------------ Pub/Sub

    async def sub_register(self, scheduler: Scheduler, msg: Message) -> Message:
        """Start buffering what is published on a topic for a subscriber."""
        assert isinstance(msg, SubRegister)
        if msg.sub not in self.subscribers:
            self.subscribers[msg.sub] = _Subscriber(msg.name, msg.client)
            self.topics.setdefault(msg.name, set()).add(msg.sub)
        return OK()

    def _unregister(self, sub_id: str) -> None:
        sub = self.subscribers.pop(sub_id, None)
        if sub is None:
            return
        subs = self.topics.get(sub.name)
        if subs is not None:
            subs.discard(sub_id)
            if not subs:
                del self.topics[sub.name]
        sub.waiters.close()

    async def sub_unregister(self, scheduler: Scheduler, msg: Message) -> Message:
        """End a subscription."""
        assert isinstance(msg, SubUnregister)
        self._unregister(msg.sub)
        return OK()

    async def sub_get(self, scheduler: Scheduler, msg: Message) -> Message:
        """The next message of a subscriber, once there is one."""
        assert isinstance(msg, SubGet)
        sub = self.subscribers.get(msg.sub)
        if sub is None:
            return failure("RuntimeError", "this Sub is closed: make a new Sub to receive again")
        deadline = deadline_of(msg.timeout)
        caller = Caller(sub.client, msg.wait_id, self.registry)
        try:
            caller.check()
            while not sub.buffer:
                if not await sub.waiters.wait(deadline, caller):
                    return failure(
                        "TimeoutError",
                        f"nothing was published on {sub.name!r} within {msg.timeout} s",
                    )
        except Gone as e:
            return failure("RuntimeError", f"the Sub stopped waiting: {e}")
        return OK(sub.buffer.popleft())

    async def pub_put(self, scheduler: Scheduler, msg: Message) -> Message:
        """Deliver a message to every subscriber of its topic."""
        assert isinstance(msg, PubPut)
        subs = self.topics.get(msg.name, ())
        for sub_id in subs:
            sub = self.subscribers[sub_id]
            sub.buffer.append(msg.value)
            sub.waiters.notify_all()
        return OK(len(subs))
