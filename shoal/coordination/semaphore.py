"""``Semaphore`` and ``Lock``: bounded leases on a name, given back when a holder dies.

Each ``acquire`` takes a lease (a fresh id) from the scheduler; the object that took
it keeps it until ``release``. While it holds leases, it tells the scheduler it is
alive every ``scheduler.locks.lease-timeout / 5`` seconds, from the client's event
loop (so a task busy computing still refreshes). If its process dies, the refreshes
stop and the scheduler gives the leases back after ``lease-timeout``. A ``Lock`` is
a ``Semaphore`` with one lease, as in distributed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from shoal.coordination.client_base import Primitive, seconds
from shoal.coordination.messages import (
    SemaphoreAcquire,
    SemaphoreCreate,
    SemaphoreRefresh,
    SemaphoreRelease,
    SemaphoreValue,
)
from shoal.errors import CommError, RemoteError

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["Lock", "Semaphore"]

logger = logging.getLogger("shoal.coordination")


class Semaphore(Primitive):
    """At most ``max_leases`` holders at a time, cluster-wide, for one ``name``.

    ``with Semaphore(max_leases=2, name="db"): ...`` in up to two tasks at once; the
    others wait in ``acquire``. Every Semaphore object of a name must agree on
    ``max_leases`` (``ValueError`` otherwise). A lease whose holder died is given back
    after ``scheduler.locks.lease-timeout`` seconds.
    """

    kind = "semaphore"

    def __init__(
        self,
        max_leases: int = 1,
        name: Any = None,
        scheduler_rpc: Any = None,
        loop: Any = None,
        client: Client | None = None,
    ) -> None:
        if isinstance(max_leases, bool) or not isinstance(max_leases, int) or max_leases < 1:
            raise ValueError(f"max_leases must be a positive int, not {max_leases!r}")
        super().__init__(name, client)
        self.max_leases = max_leases
        self._leases: list[str] = []
        #: leases this object took that the scheduler gave back (they had expired): a
        #: release() owed for each returns False
        self._expired = 0
        self._refresh_interval: float | None = None
        self._refresher: asyncio.Task[None] | None = None
        if client is not None and not client.asynchronous:
            client._sync(self._create)

    async def _create(self) -> float:
        if self._refresh_interval is None:
            reply = await self._request(SemaphoreCreate(self.name, self.max_leases))
            self._refresh_interval = float(reply["refresh_interval"])
        return self._refresh_interval

    # ------------------------------------------------------------------ acquire/release

    def acquire(self, timeout: float | str | None = None) -> Any:
        """Take a lease, waiting up to ``timeout`` s; return whether one was taken."""
        return self._call(self._acquire, seconds(timeout))

    async def _acquire(self, timeout: float | None) -> bool:
        await self._create()
        lease = uuid.uuid4().hex
        acquired = await self._blocking(
            lambda wait_id: SemaphoreAcquire(
                self.name, lease, self.max_leases, timeout, self.client.id, wait_id
            ),
            wait_id=lease,
            cleanup=SemaphoreRelease(self.name, lease),
        )
        if not acquired:
            return False
        self._leases.append(lease)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.ensure_future(self._refresh_leases())
        return True

    def release(self) -> Any:
        """Give back the oldest lease this object took; return whether the scheduler
        still counted it (``False``: it had expired, see ``lease-timeout``).

        ``RuntimeError`` if this object holds no lease.
        """
        if not self._leases and not self._expired:
            raise RuntimeError(self._not_held())
        return self._call(self._release)

    def _not_held(self) -> str:
        return (
            f"Released too often: this {type(self).__name__} ({self.name!r}) holds no "
            "lease. Release only what the same object acquired (each acquire() takes one "
            "lease, each release() gives one back)."
        )

    async def _release(self) -> bool:
        if not self._leases:
            if not self._expired:
                raise RuntimeError(self._not_held())
            self._expired -= 1  # its loss was logged when the refresh heard of it
            return False
        lease = self._leases.pop(0)
        held = bool(await self._request(SemaphoreRelease(self.name, lease)))
        if not held:
            logger.warning(
                "%r released a lease that had expired (its refreshes did not reach the "
                "scheduler within scheduler.locks.lease-timeout): someone else may have "
                "held it meanwhile",
                self,
            )
        return held

    def get_value(self) -> Any:
        """How many leases of this name are held, cluster-wide."""
        return self._call(self._request, SemaphoreValue(self.name))

    def close(self) -> Any:
        """Give back every lease this object holds."""
        return self._call(self._close)

    async def _close(self) -> None:
        while self._leases:
            await self._release()
        self._expired = 0

    # ------------------------------------------------------------------ leases

    async def _refresh_leases(self) -> None:
        """Tell the scheduler this holder is alive, while it holds leases."""
        interval = await self._create()
        while self._leases:
            await asyncio.sleep(interval)
            leases = tuple((self.name, lease) for lease in self._leases)
            if not leases:
                return
            try:
                unknown = await self._request(SemaphoreRefresh(leases))
            except (CommError, RemoteError, RuntimeError) as e:
                if self.client.status != "running":
                    return
                logger.warning("%r could not refresh its leases: %s", self, e)
                continue
            for _, lease in unknown:
                if lease in self._leases:
                    self._leases.remove(lease)
                    self._expired += 1
                    logger.warning(
                        "%r lost a lease: the scheduler had not heard from this holder "
                        "within scheduler.locks.lease-timeout and gave it back",
                        self,
                    )

    # ------------------------------------------------------------------ protocols

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Semaphore:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    def __reduce__(self) -> Any:
        return Semaphore, (self.max_leases, self.name)

    def __repr__(self) -> str:
        return f"<Semaphore: {self.name!r} max_leases={self.max_leases}>"


class Lock(Semaphore):
    """A cluster-wide mutual exclusion lock on ``name``: a Semaphore with one lease.

    ``with Lock("counter"): ...`` in any client or task. Only the Lock object that
    acquired it can release it; a holder that died frees it after
    ``scheduler.locks.lease-timeout`` seconds.
    """

    kind = "lock"

    def __init__(
        self,
        name: Any = None,
        client: Client | None = None,
        scheduler_rpc: Any = None,
        loop: Any = None,
    ) -> None:
        super().__init__(max_leases=1, name=name, client=client)

    def acquire(self, blocking: bool = True, timeout: float | str | None = None) -> Any:  # type: ignore[override]
        """Take the lock; return whether it was taken.

        ``blocking=False`` only tries; ``timeout`` bounds the wait (seconds).
        """
        if not blocking:
            if timeout is not None:
                raise ValueError("can't give a timeout to a non-blocking acquire")
            timeout = 0
        return super().acquire(timeout=timeout)

    def _not_held(self) -> str:
        return (
            f"Lock {self.name!r} released by a holder that did not acquire it: only the "
            "Lock object (in the same task or client) whose acquire() returned True can "
            "release it"
        )

    def locked(self) -> Any:
        """Whether someone holds the lock."""
        return self._call(self._locked)

    async def _locked(self) -> bool:
        return bool(await self._request(SemaphoreValue(self.name)) >= 1)

    def __reduce__(self) -> Any:
        return Lock, (self.name,)

    def __repr__(self) -> str:
        return f"<Lock: {self.name!r}>"
