"""The scheduler's side of the client diagnostics: task stream, events, subscriptions.

:func:`install` (called by every :class:`~shoal.scheduler.server.Scheduler`) answers
the requests of :mod:`shoal.protocol.observe` and installs :class:`EventLogPlugin`,
which writes the structured log distributed's users know from ``client.get_events()``:

- a worker joins: ``{"action": "add-worker"}`` under its address and
  ``{"action": "add-worker", "worker": address}`` under ``"all"``;
- a worker leaves: ``"remove-worker"`` the same way, with the ``reason``;
- a client connects or leaves: ``{"action": "add-client" | "remove-client",
  "client": id}`` under ``"all"`` and the client's id;
- a worker reports that a task raised: ``{"action": "task-erred", "key": key,
  "worker": address, "exception": text}`` under ``"all"`` and the worker's address.

The plugin also forwards every logged event to the clients subscribed to its topic
(``client.subscribe_topic``). It hooks only joins, leaves and failures, never each
transition, so it costs nothing per successful task.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack

from shoal.protocol.messages import OK, ErrorReply, Message
from shoal.protocol.observe import (
    GetEvents,
    GetTaskStream,
    LogEvent,
    SubscribeTopic,
    TopicEvent,
    UnsubscribeTopic,
)
from shoal.scheduler.plugins import SchedulerPlugin

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

__all__ = ["EventLogPlugin", "install"]

#: the name of the internal plugin in ``scheduler.hooks.plugins``
PLUGIN_NAME = "shoal-event-log"


class EventLogPlugin(SchedulerPlugin):
    """Log joins, leaves and task failures as events; push events to subscribers."""

    name = PLUGIN_NAME

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        #: topic → ids of the clients subscribed to it
        self.subscribers: dict[str, set[str]] = {}

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """Log the join under the worker's address and ``"all"``."""
        scheduler.log_event(worker, {"action": "add-worker"})
        scheduler.log_event("all", {"action": "add-worker", "worker": worker})

    def remove_worker(
        self, scheduler: Scheduler, worker: str, *, stimulus_id: str, **kwargs: Any
    ) -> None:
        """Log the departure (and why) under the worker's address and ``"all"``."""
        reason = str(kwargs.get("reason", ""))
        scheduler.log_event(worker, {"action": "remove-worker", "reason": reason})
        scheduler.log_event("all", {"action": "remove-worker", "worker": worker, "reason": reason})

    def add_client(self, scheduler: Scheduler, client: str) -> None:
        """Log the connection under ``"all"`` and the client's id."""
        scheduler.log_event(["all", client], {"action": "add-client", "client": client})

    def remove_client(self, scheduler: Scheduler, client: str) -> None:
        """Log the departure, and drop the client's subscriptions."""
        scheduler.log_event(["all", client], {"action": "remove-client", "client": client})
        for topic in list(self.subscribers):
            self.unsubscribe(topic, client)

    def task_failed(
        self, scheduler: Scheduler, key: Any, *, worker: str, exception_text: str, **kwargs: Any
    ) -> None:
        """Log the failure under ``"all"`` and the worker's address."""
        scheduler.log_event(
            ["all", worker],
            {"action": "task-erred", "key": key, "worker": worker, "exception": exception_text},
        )

    def log_event(self, topic: str, msg: Any) -> None:
        """Send the event just logged under ``topic`` to the topic's subscribers."""
        clients = self.subscribers.get(topic)
        if not clients:
            return
        log = self.scheduler.events.get(topic)
        if not log:
            return
        when, logged = log[-1]
        for client in list(clients):
            sender = self.scheduler.client_streams.get(client)
            if sender is not None and not sender.closed:
                sender.send(TopicEvent(topic=topic, time=when, msg=plain(logged)))

    def subscribe(self, topic: str, client: str) -> None:
        """Send ``client`` the events of ``topic`` from now on."""
        self.subscribers.setdefault(topic, set()).add(client)

    def unsubscribe(self, topic: str, client: str) -> None:
        """Stop sending ``client`` the events of ``topic``."""
        clients = self.subscribers.get(topic)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self.subscribers[topic]


def plain(msg: Any) -> Any:
    """``msg`` if msgpack can send it, else its ``repr``: a plugin may log any object,
    and one that can't be encoded must not break a client's stream or a reply."""
    try:
        msgpack.packb(msg, use_bin_type=True)
    except Exception:
        return repr(msg)
    return msg


def install(scheduler: Scheduler) -> EventLogPlugin:
    """Answer the diagnostics requests on ``scheduler`` and install its event log."""
    plugin = EventLogPlugin(scheduler)
    scheduler.hooks.add(plugin, PLUGIN_NAME)
    handlers: dict[str, Callable[[Scheduler, Message], Awaitable[Message]]] = {
        GetTaskStream.op: _task_stream,
        LogEvent.op: _log_event,
        GetEvents.op: _get_events,
        SubscribeTopic.op: _subscribe,
        UnsubscribeTopic.op: _unsubscribe,
    }
    scheduler.extra_handlers.update(handlers)
    return plugin


def _plugin(scheduler: Scheduler) -> EventLogPlugin | None:
    plugin = scheduler.hooks.plugins.get(PLUGIN_NAME)
    return plugin if isinstance(plugin, EventLogPlugin) else None


async def _task_stream(scheduler: Scheduler, msg: Message) -> Message:
    assert isinstance(msg, GetTaskStream)
    stream = scheduler.task_stream
    if msg.index is not None:
        index, records = stream.since(max(int(msg.index), 0))
    else:
        index = stream.count
        records = stream.between(-math.inf if msg.start is None else msg.start, msg.stop)
    if msg.count is not None:
        records = records[-msg.count :] if msg.count > 0 else []
    return OK({"index": index, "records": records})


async def _log_event(scheduler: Scheduler, msg: Message) -> Message:
    assert isinstance(msg, LogEvent)
    topics = msg.topic
    if isinstance(topics, str):
        scheduler.log_event(topics, msg.msg)
    elif isinstance(topics, tuple) and topics and all(isinstance(t, str) for t in topics):
        scheduler.log_event(list(topics), msg.msg)
    else:
        return ErrorReply(f"an event topic must be a string or strings, not {topics!r}")
    return OK()


async def _get_events(scheduler: Scheduler, msg: Message) -> Message:
    assert isinstance(msg, GetEvents)
    if msg.topic is not None:
        return OK([(t, plain(m)) for t, m in scheduler.events.get(msg.topic, ())])
    return OK({topic: [(t, plain(m)) for t, m in log] for topic, log in scheduler.events.items()})


async def _subscribe(scheduler: Scheduler, msg: Message) -> Message:
    assert isinstance(msg, SubscribeTopic)
    plugin = _plugin(scheduler)
    if plugin is None:
        return ErrorReply("this scheduler's event log plugin was removed: no subscriptions")
    if msg.client not in scheduler.client_streams:
        return ErrorReply(f"unknown client {msg.client!r}: subscribe from a connected shoal Client")
    plugin.subscribe(msg.topic, msg.client)
    return OK()


async def _unsubscribe(scheduler: Scheduler, msg: Message) -> Message:
    assert isinstance(msg, UnsubscribeTopic)
    plugin = _plugin(scheduler)
    if plugin is not None:
        plugin.unsubscribe(msg.topic, msg.client)
    return OK()
