"""The ops of the client's diagnostics: task stream, structured events, topic subscriptions.

Requests (one request, one reply, over a pooled connection) a client sends the
scheduler, and the one message the scheduler pushes on a subscribed client's stream.
Importing this module registers the ops: the scheduler imports it through
:mod:`shoal.scheduler.observe`, the client through :mod:`shoal.client.observe`.

Event messages (``msg`` of :class:`LogEvent`) are plain msgpack data: dicts, lists,
strings, numbers, booleans and ``None``; lists come back as tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from shoal.protocol.messages import Message

__all__ = [
    "GetEvents",
    "GetTaskStream",
    "LogEvent",
    "SubscribeTopic",
    "TopicEvent",
    "UnsubscribeTopic",
]


@dataclass(slots=True, unsafe_hash=True)
class GetTaskStream(Message):
    """Ask for task-stream records (which worker ran which task, when).

    With ``index``, the records numbered ``index`` and after; otherwise those of runs
    that ended between ``start`` and ``stop`` (Unix times, ``None``: unbounded). With
    ``count``, only the last ``count`` of those. Reply: ``OK({"index": next index,
    "records": [record, ...]})``, records as in :mod:`shoal.scheduler.task_stream`.
    """

    op: ClassVar[str] = "get-task-stream"
    start: float | None = None
    stop: float | None = None
    count: int | None = None
    index: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class LogEvent(Message):
    """Record ``msg`` under ``topic`` (a topic or several) in the scheduler's event log.

    Reply ``OK()``; subscribers of the topic receive a :class:`TopicEvent`.
    """

    op: ClassVar[str] = "log-event"
    topic: str | tuple[str, ...]
    msg: Any


@dataclass(slots=True, unsafe_hash=True)
class GetEvents(Message):
    """Ask for the logged events of ``topic`` (all topics if ``None``).

    Reply: ``OK([[time, msg], ...])`` for a topic, ``OK({topic: [[time, msg], ...]})``
    for all.
    """

    op: ClassVar[str] = "get-events"
    topic: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class SubscribeTopic(Message):
    """Send ``client`` (on its stream) every event logged under ``topic`` from now on.

    Reply ``OK()``, or an error if the client has no stream on this scheduler.
    """

    op: ClassVar[str] = "subscribe-topic"
    topic: str
    client: str


@dataclass(slots=True, unsafe_hash=True)
class UnsubscribeTopic(Message):
    """Stop sending ``client`` the events of ``topic``. Reply ``OK()``."""

    op: ClassVar[str] = "unsubscribe-topic"
    topic: str
    client: str


@dataclass(slots=True, unsafe_hash=True)
class TopicEvent(Message):
    """Scheduler → client stream: ``msg`` was logged under ``topic`` at ``time``."""

    op: ClassVar[str] = "topic-event"
    topic: str
    time: float
    msg: Any
