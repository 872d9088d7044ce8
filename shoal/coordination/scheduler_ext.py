"""Install the coordination primitives on a scheduler.

:func:`install` (called by ``Scheduler.__init__``) registers one request handler per
op in ``scheduler.extra_handlers`` and a :class:`CoordinationPlugin`, which hears when
clients leave (their leases, waiters and subscriptions go) and runs the lease
validation loop while the scheduler runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from shoal import config
from shoal.coordination.messages import CancelWait  # (importing it registers the ops)
from shoal.coordination.scheduler_common import WaitRegistry
from shoal.coordination.scheduler_sync import SyncStore
from shoal.coordination.scheduler_values import ValueStore
from shoal.protocol.messages import OK, Message
from shoal.scheduler.plugins import SchedulerPlugin

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

__all__ = ["CoordinationPlugin", "install"]

logger = logging.getLogger("shoal.coordination")


class CoordinationPlugin(SchedulerPlugin):
    """The state of every coordination primitive of one scheduler."""

    name = "shoal-coordination"

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.registry = WaitRegistry()
        self.values = ValueStore(scheduler, self.registry)
        lease_timeout = float(config.get("scheduler.locks.lease-timeout"))
        self.sync = SyncStore(scheduler, self.registry, lease_timeout)
        self.validation_interval = float(config.get("scheduler.locks.lease-validation-interval"))
        self._task: asyncio.Task[None] | None = None

    async def start(self, scheduler: Scheduler) -> None:
        """Start the lease validation loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._validate_leases())

    async def close(self) -> None:
        """Stop the loop; wake every waiter."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.values.close()
        self.sync.close()

    async def cancel_wait(self, scheduler: Scheduler, msg: Message) -> Message:
        """A caller stopped waiting: its blocking request ends, taking nothing."""
        assert isinstance(msg, CancelWait)
        self.registry.cancel(msg.wait_id)
        return OK()

    def remove_client(self, scheduler: Scheduler, client: str) -> None:
        """A client left: it gives back its leases and stops waiting."""
        self.values.remove_client(client)
        self.sync.remove_client(client)

    async def _validate_leases(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.validation_interval)
            try:
                self.sync.expire_leases(loop.time())
            except Exception:  # never let a bug here stop the validation
                logger.exception("lease validation failed")


def install(scheduler: Scheduler) -> CoordinationPlugin:
    """Serve the coordination primitives' requests on ``scheduler``."""
    plugin = CoordinationPlugin(scheduler)
    handlers: dict[str, Any] = {
        **plugin.values.handlers(),
        **plugin.sync.handlers(),
        CancelWait.op: plugin.cancel_wait,
    }
    scheduler.extra_handlers.update(handlers)
    scheduler.hooks.add(plugin)
    return plugin
