"""Watching the cluster from a client (Client methods): the task stream, structured
events and topic subscriptions, and the Jupyter summary.

Names and semantics of distributed's ``Client.get_task_stream``, ``log_event``,
``get_events``, ``subscribe_topic`` and ``unsubscribe_topic``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from shoal.config import parse_seconds
from shoal.errors import LocalProtocolError
from shoal.protocol.messages import Message
from shoal.protocol.observe import (
    GetEvents,
    GetTaskStream,
    LogEvent,
    SubscribeTopic,
    TopicEvent,
    UnsubscribeTopic,
)

logger = logging.getLogger("shoal.client")

__all__ = ["ObserveMixin"]


def _when(value: float | str | None) -> float | None:
    """A time from a Unix timestamp, or a duration ago such as ``"30s"`` (distributed's
    convention for ``get_task_stream``'s ``start`` and ``stop``)."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    if isinstance(value, str):
        return time.time() - parse_seconds(value)
    raise TypeError(
        f"start and stop must be Unix times or durations ago such as '30s', not {value!r}"
    )


def _topics(topic: str | Collection[str]) -> str | tuple[str, ...]:
    if isinstance(topic, str):
        return topic
    if isinstance(topic, Collection) and topic and all(isinstance(t, str) for t in topic):
        return tuple(topic)
    raise TypeError(f"topic must be a string or a collection of strings, not {topic!r}")


class ObserveMixin:
    """The part of :class:`~shoal.Client` that shows what the cluster does."""

    id: str
    status: str
    loop: asyncio.AbstractEventLoop | None
    _sync: Callable[..., Any]
    _request: Callable[[Message], Any]
    _background: set[asyncio.Task[Any]]

    # ------------------------------------------------------------------ task stream

    def get_task_stream(
        self,
        start: float | str | None = None,
        stop: float | str | None = None,
        count: int | None = None,
        plot: bool | str = False,
        filename: str = "task-stream.html",
        bokeh_resources: Any = None,
    ) -> Any:
        """The task runs the scheduler remembers: a list of dicts with ``key``,
        ``worker``, ``status``, ``nbytes`` and ``startstops``.

        ``start``/``stop`` keep runs that ended in that window (Unix times, or strings
        such as ``"30s"``: that long ago); ``count`` keeps the last ``count``.
        ``plot=True`` returns ``(records, figure)`` (a plotly figure); ``plot="save"``
        also writes it to ``filename`` as a self-contained HTML file.
        """
        if count is not None and count < 0:
            raise ValueError(f"count must be 0 or more, not {count}")
        return self._sync(self._get_task_stream, _when(start), _when(stop), count, plot, filename)

    async def _get_task_stream(
        self,
        start: float | None,
        stop: float | None,
        count: int | None,
        plot: bool | str,
        filename: str,
    ) -> Any:
        _, records = await self._task_stream(start=start, stop=stop, count=count)
        if not plot:
            return records
        from shoal.diagnostics.task_stream import task_stream_figure, write_figure

        fig = task_stream_figure(records)
        if plot == "save":
            write_figure(fig, filename)
        return records, fig

    async def _task_stream(
        self,
        start: float | None = None,
        stop: float | None = None,
        count: int | None = None,
        index: int | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """``(next index, records)`` from the scheduler's task stream."""
        from shoal.diagnostics.task_stream import record_from_wire

        reply = await self._request(GetTaskStream(start=start, stop=stop, count=count, index=index))
        return int(reply["index"]), [record_from_wire(r) for r in reply["records"]]

    async def _task_stream_index(self) -> int:
        """The number the scheduler will give the next task-stream record."""
        index, _ = await self._task_stream(count=0)
        return index

    # ------------------------------------------------------------------ events

    def log_event(self, topic: str | Collection[str], msg: Any) -> Any:
        """Log ``msg`` on the scheduler under ``topic`` (or each of several topics).

        ``msg`` must be plain data (dicts, lists, strings, numbers, booleans, None).
        Subscribers of the topic receive it; ``get_events(topic)`` returns it.
        """
        return self._sync(self._log_event, _topics(topic), msg)

    async def _log_event(self, topic: str | tuple[str, ...], msg: Any) -> None:
        try:
            await self._request(LogEvent(topic=topic, msg=msg))
        except LocalProtocolError as e:
            raise TypeError(
                f"log_event could not send {type(msg).__name__!s} {msg!r:.80}: an event must "
                f"be plain data (dicts, lists, strings, numbers, booleans, None) ({e})"
            ) from None

    def get_events(self, topic: str | None = None) -> Any:
        """The events logged under ``topic``: a tuple of ``(time, msg)``; without a
        topic, a dict of every topic's events."""
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic must be a string or None, not {topic!r}")
        return self._sync(self._get_events, topic)

    async def _get_events(self, topic: str | None) -> Any:
        reply = await self._request(GetEvents(topic=topic))
        if topic is not None:
            return tuple((t, msg) for t, msg in reply)
        return {name: tuple((t, msg) for t, msg in log) for name, log in reply.items()}

    def subscribe_topic(self, topic: str, handler: Callable[[Any], Any]) -> Any:
        """Call ``handler((time, msg))`` for every event logged under ``topic`` from now
        on (by any client, a task's through ``get_client()``, or the scheduler itself;
        workers have no ``log_event`` of their own).

        The handler runs on the client's event loop thread: keep it short. It may be a
        coroutine function. A second subscription to the topic replaces the first.
        """
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a string, not {topic!r}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {handler!r}")
        return self._sync(self._subscribe_topic, topic, handler)

    async def _subscribe_topic(self, topic: str, handler: Callable[[Any], Any]) -> None:
        self._topic_handlers[topic] = handler
        try:
            await self._request(SubscribeTopic(topic=topic, client=self.id))
        except BaseException:
            self._topic_handlers.pop(topic, None)
            raise

    def unsubscribe_topic(self, topic: str) -> Any:
        """Stop calling the handler of ``topic``."""
        if topic not in self._topic_handlers:
            raise ValueError(f"this client is not subscribed to topic {topic!r}")
        return self._sync(self._unsubscribe_topic, topic)

    async def _unsubscribe_topic(self, topic: str) -> None:
        self._topic_handlers.pop(topic, None)
        await self._request(UnsubscribeTopic(topic=topic, client=self.id))

    @property
    def _topic_handlers(self) -> dict[str, Callable[[Any], Any]]:
        handlers: dict[str, Callable[[Any], Any]] | None = self.__dict__.get("_topic_handlers_")
        if handlers is None:
            handlers = self.__dict__["_topic_handlers_"] = {}
        return handlers

    def _topic_event(self, msg: TopicEvent) -> None:
        """An event of a subscribed topic arrived on the stream (on the loop)."""
        handler = self._topic_handlers.get(msg.topic)
        if handler is None:
            return
        try:
            result = handler((msg.time, msg.msg))
        except Exception:
            logger.exception("the handler of topic %r failed", msg.topic)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._background.add(task)
            task.add_done_callback(self._topic_handler_done)

    def _topic_handler_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a topic handler failed", exc_info=task.exception())

    # ------------------------------------------------------------------ notebooks

    def _repr_html_(self) -> str:
        from shoal.diagnostics.html import client_html

        return client_html(self)
