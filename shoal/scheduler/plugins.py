"""Scheduler plugins: code that watches the scheduler from inside its process.

A plugin subclasses :class:`SchedulerPlugin` (the hook names of distributed's
``SchedulerPlugin``) and is installed with ``Scheduler(plugins=[...])`` or
``await scheduler.add_plugin(plugin)``. Hooks run on the scheduler's event loop, after
the state machine handled the event: they see the new state, and what they do can't
change the decision already taken. A hook that raises is logged and the scheduler goes
on. Plugins are trusted code of whoever starts the scheduler; clients can't install one
(the scheduler never unpickles what a client sends).

The hooks are driven by :class:`PluginHooks`, which the server calls with the events it
feeds the state machine and with each transition the machine records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shoal.scheduler.state import (
    ClientConnected,
    ClientDisconnected,
    Event,
    GraphSubmitted,
    RestartRequested,
    TaskFailedEvent,
    TaskFinishedEvent,
    TransitionRecord,
    WorkerAdded,
    WorkerRemoved,
)

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

logger = logging.getLogger("shoal.scheduler.plugins")


class SchedulerPlugin:
    """Base class of scheduler plugins: override the hooks you need.

    ``name`` identifies the plugin (a second plugin of the same name replaces the
    first); it defaults to the class name.
    """

    name: str | None = None

    async def start(self, scheduler: Scheduler) -> None:
        """Called once, when the plugin is installed on a running scheduler."""

    async def close(self) -> None:
        """Called when the plugin is removed or the scheduler closes."""

    def update_graph(
        self, scheduler: Scheduler, *, client: str, keys: set[Any], tasks: list[Any]
    ) -> None:
        """A client submitted ``tasks`` (keys) and wants ``keys``."""

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any
    ) -> None:
        """Task ``key`` went from state ``start`` to ``finish``.

        When a worker's report caused it (``processing → memory`` or ``→ erred``), the
        keyword arguments hold ``worker``, ``startstops`` (a tuple of
        ``{"action": "compute", "start": s, "stop": s}``) and, for memory, ``nbytes``
        and ``type``; for erred, ``exception_text`` and ``traceback_text``.
        """

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """A worker joined."""

    def remove_worker(
        self, scheduler: Scheduler, worker: str, *, stimulus_id: str, **kwargs: Any
    ) -> None:
        """A worker left (``reason`` in the keyword arguments)."""

    def add_client(self, scheduler: Scheduler, client: str) -> None:
        """A client connected."""

    def remove_client(self, scheduler: Scheduler, client: str) -> None:
        """A client left (or did not come back in time)."""

    def restart(self, scheduler: Scheduler) -> None:
        """``client.restart()`` forgot every task."""

    def task_failed(
        self, scheduler: Scheduler, key: Any, *, worker: str, exception_text: str, **kwargs: Any
    ) -> None:
        """A worker reported that running ``key`` raised (shoal's own hook; the task
        errs, or runs again if it has retries left). ``traceback_text`` is in the
        keyword arguments. Unlike ``transition``, it costs nothing per successful task."""

    def log_event(self, topic: str, msg: Any) -> None:
        """The scheduler logged ``msg`` under ``topic`` (see ``Scheduler.log_event``)."""


def _overrides(plugin: SchedulerPlugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(SchedulerPlugin, hook)


def _worker_report(event: Event | None, key: Any) -> dict[str, Any]:
    """What a worker's report of ``key`` says, for ``transition``'s keyword arguments."""
    if not isinstance(event, TaskFinishedEvent | TaskFailedEvent) or event.key != key:
        return {}
    report: dict[str, Any] = {
        "worker": event.worker,
        "startstops": ({"action": "compute", "start": event.start, "stop": event.stop},),
    }
    if isinstance(event, TaskFinishedEvent):
        report.update(nbytes=event.nbytes, type=event.type_name)
    else:
        report.update(exception_text=event.exception_text, traceback_text=event.traceback_text)
    return report


#: the events that call a hook
_HOOKED = frozenset(
    {
        GraphSubmitted,
        WorkerAdded,
        WorkerRemoved,
        ClientConnected,
        ClientDisconnected,
        RestartRequested,
        TaskFailedEvent,
    }
)


class PluginHooks:
    """The installed plugins of one scheduler, and the calls into their hooks."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.plugins: dict[str, SchedulerPlugin] = {}
        self._watching: list[SchedulerPlugin] = []

    def add(self, plugin: SchedulerPlugin, name: str | None = None) -> str:
        """Install ``plugin`` (replacing one of the same name); return its name."""
        name = name or plugin.name or type(plugin).__name__
        self.plugins[name] = plugin
        self._refresh()
        return name

    def remove(self, name: str) -> SchedulerPlugin:
        """Uninstall the plugin called ``name``; raise KeyError if there is none."""
        plugin = self.plugins.pop(name)
        self._refresh()
        return plugin

    def _refresh(self) -> None:
        self._watching = [p for p in self.plugins.values() if _overrides(p, "transition")]
        state = self.scheduler.state
        state.transition_listener = self._on_transition if self._watching else None

    def _call(self, plugin: SchedulerPlugin, hook: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(plugin, hook)(*args, **kwargs)
        except Exception:
            logger.exception("plugin %r failed in %s", plugin, hook)

    def _on_transition(self, record: TransitionRecord, event: Event | None) -> None:
        extra = _worker_report(event, record.key) if record.start == "processing" else {}
        for plugin in self._watching:
            self._call(
                plugin,
                "transition",
                record.key,
                record.start,
                record.finish,
                stimulus_id=record.stimulus_id,
                **extra,
            )

    def events(self, events: Iterable[Event]) -> None:
        """Call the hooks that follow from ``events`` (already handled)."""
        if not self.plugins:
            return
        for event in events:
            if type(event) in _HOOKED:  # most events (tasks finishing) have no hook
                for plugin in list(self.plugins.values()):
                    self._event_hook(plugin, event)

    def _event_hook(self, plugin: SchedulerPlugin, event: Event) -> None:
        s = self.scheduler
        if isinstance(event, GraphSubmitted):
            tasks = [t.key for t in event.tasks]
            self._call(
                plugin, "update_graph", s, client=event.client, keys=set(event.keys), tasks=tasks
            )
        elif isinstance(event, WorkerAdded):
            self._call(plugin, "add_worker", s, event.address)
        elif isinstance(event, WorkerRemoved):
            self._call(
                plugin,
                "remove_worker",
                s,
                event.address,
                stimulus_id=event.stimulus_id,
                reason=event.reason,
            )
        elif isinstance(event, ClientConnected):
            self._call(plugin, "add_client", s, event.client)
        elif isinstance(event, ClientDisconnected):
            self._call(plugin, "remove_client", s, event.client)
        elif isinstance(event, RestartRequested):
            self._call(plugin, "restart", s)
        elif isinstance(event, TaskFailedEvent):
            self._call(
                plugin,
                "task_failed",
                s,
                event.key,
                worker=event.worker,
                exception_text=event.exception_text,
                traceback_text=event.traceback_text,
            )

    def log_event(self, topic: str, msg: Any) -> None:
        """Tell every plugin about a logged event."""
        for plugin in list(self.plugins.values()):
            self._call(plugin, "log_event", topic, msg)
