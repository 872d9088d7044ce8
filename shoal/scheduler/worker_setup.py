"""Files uploaded by clients and worker plugins: kept here, given to every worker.

``client.upload_file`` and ``client.register_plugin(WorkerPlugin)`` send their payload
to the scheduler, which keeps it as opaque bytes (it never loads or imports it: see
STYLE.md, rule 3) and forwards it:

- to every connected worker, as a request; the client gets each worker's answer, so an
  import that fails on the workers raises in the client;
- to every worker that joins later, on its stream, from the ``add_worker`` hook of
  :class:`WorkerSetup` (a scheduler plugin installed on first use). The worker handles
  these before the tasks that arrive with them, so no task runs without them.

Items are given in the order they were registered (a plugin may import an uploaded
module); registering a name again replaces the item and moves it last.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from shoal.errors import CommError, RemoteError
from shoal.protocol.messages import OK, ErrorReply, Message
from shoal.protocol.setup_ops import RegisterWorkerPlugin, UnregisterWorkerPlugin, UploadFile
from shoal.scheduler.plugins import SchedulerPlugin

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

logger = logging.getLogger("shoal.scheduler.worker_setup")

__all__ = ["WorkerSetup", "install"]

SetupItem = UploadFile | RegisterWorkerPlugin


class WorkerSetup(SchedulerPlugin):
    """What every worker must have: uploaded files and worker plugins, in order."""

    name = "shoal-worker-setup"

    def __init__(self) -> None:
        #: ``("file", filename)`` or ``("plugin", name)`` → the message to forward
        self.items: dict[tuple[str, str], SetupItem] = {}

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """A worker joined: send it everything, ahead of any task on its stream."""
        sender = scheduler.worker_streams.get(worker)
        if self.items and sender is not None and not sender.closed:
            sender.send(*self.items.values())

    def plugin_names(self) -> list[str]:
        """The names of the registered worker plugins."""
        return [name for kind, name in self.items if kind == "plugin"]

    async def answer(self, scheduler: Scheduler, msg: Message) -> Message:
        """Keep (or drop) the item ``msg`` names and forward ``msg`` to every worker."""
        if scheduler.hooks.plugins.get(self.name) is not self:
            await scheduler.add_plugin(self)
        if isinstance(msg, UnregisterWorkerPlugin):
            if self.items.pop(("plugin", msg.name), None) is None:
                return ErrorReply(
                    f"no worker plugin named {msg.name!r} is registered "
                    f"(registered: {self.plugin_names()})"
                )
            return OK(await forward(scheduler, msg))
        if isinstance(msg, UploadFile):
            key = ("file", msg.filename)
        elif isinstance(msg, RegisterWorkerPlugin):
            key = ("plugin", msg.name)
            if msg.idempotent and key in self.items:
                return OK({})
        else:  # pragma: no cover - install() routes only the three ops
            return ErrorReply(f"unexpected {msg.op!r}")
        self.items.pop(key, None)
        self.items[key] = msg
        replies = await forward(scheduler, msg)
        failed = any(r.get("op") == ErrorReply.op for r in replies.values())
        if failed and self.items.get(key) is msg:
            # The client raises: workers that join later don't get it either.
            del self.items[key]
        return OK(replies)


async def forward(scheduler: Scheduler, msg: Message) -> dict[str, Any]:
    """Send ``msg`` to every connected worker; ``{address: reply-map}``.

    Workers that can't be reached are left out: one that comes back gets the item when
    it registers again.
    """

    async def one(addr: str) -> dict[str, Any] | None:
        try:
            return (await scheduler.pool.request(addr, msg)).to_wire()
        except RemoteError as e:
            reply = e.reply if isinstance(e.reply, ErrorReply) else ErrorReply(str(e))
            return reply.to_wire()
        except CommError as e:
            logger.info("could not give %r to worker %s: %s", msg.op, addr, e)
            return None

    workers = list(scheduler.worker_streams)
    replies = await asyncio.gather(*(one(w) for w in workers))
    return {w: r for w, r in zip(workers, replies) if r is not None}


def install(scheduler: Scheduler) -> WorkerSetup:
    """Answer the worker-setup ops on ``scheduler``; return the keeper of the items."""
    setup = WorkerSetup()
    for op in (UploadFile.op, RegisterWorkerPlugin.op, UnregisterWorkerPlugin.op):
        scheduler.extra_handlers[op] = setup.answer
    return setup
