"""Read-only views of the scheduler state, as plain data the RPC layer can send.

Nothing here changes the state. ``None`` for ``keys``/``workers`` means "all of them";
unknown keys and workers are left out, except in :func:`gather_info`, which reports
them as ``"forgotten"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shoal._types import Address, Key
from shoal.scheduler.state.events import Event
from shoal.scheduler.state.model import TaskState, TransitionRecord, WorkerInfo

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState


def _tasks(state: SchedulerState, keys: Iterable[Key] | None) -> list[TaskState]:
    if keys is None:
        return list(state.tasks.values())
    return [ts for k in keys if (ts := state.tasks.get(k)) is not None]


def _workers(state: SchedulerState, workers: Iterable[Address] | None) -> list[WorkerInfo]:
    if workers is None:
        return list(state.workers.values())
    return [ws for a in workers if (ws := state.workers.get(a)) is not None]


def who_has(state: SchedulerState, keys: Iterable[Key] | None = None) -> dict[Key, list[Address]]:
    """Where each key's value lives (an empty list while it has none)."""
    return {ts.key: [ws.address for ws in ts.who_has] for ts in _tasks(state, keys)}


def has_what(
    state: SchedulerState, workers: Iterable[Address] | None = None
) -> dict[Address, list[Key]]:
    """The keys each worker holds."""
    return {ws.address: [ts.key for ts in ws.has_what] for ws in _workers(state, workers)}


def processing(
    state: SchedulerState, workers: Iterable[Address] | None = None
) -> dict[Address, list[Key]]:
    """The keys each worker is running (or has queued)."""
    return {ws.address: [ts.key for ts in ws.processing] for ws in _workers(state, workers)}


def nthreads(state: SchedulerState, workers: Iterable[Address] | None = None) -> dict[Address, int]:
    """The number of threads of each worker."""
    return {ws.address: ws.nthreads for ws in _workers(state, workers)}


def gather_info(state: SchedulerState, keys: Iterable[Key]) -> dict[Key, dict[str, Any]]:
    """For each key: ``{"status": state name, "who_has": [addresses]}``."""
    out: dict[Key, dict[str, Any]] = {}
    for key in keys:
        ts = state.tasks.get(key)
        if ts is None:
            out[key] = {"status": "forgotten", "who_has": []}
        else:
            out[key] = {"status": ts.state, "who_has": [ws.address for ws in ts.who_has]}
    return out


def identity(state: SchedulerState) -> dict[str, Any]:
    """Shaped like distributed's ``scheduler_info()``; the server adds address and id."""
    return {
        "type": "Scheduler",
        "workers": {
            ws.address: {
                "type": "Worker",
                "id": ws.name,
                "name": ws.name,
                "nthreads": ws.nthreads,
                "memory_limit": ws.memory_limit,
                "resources": dict(ws.resources),
                "nbytes": ws.nbytes,
                "processing": len(ws.processing),
                "keys": len(ws.has_what),
            }
            for ws in state.workers.values()
        },
        "n_tasks": len(state.tasks),
        "n_clients": len(state.clients),
    }


def task_counts(state: SchedulerState) -> dict[str, int]:
    """How many tasks are in each state (every live state listed, zeros included)."""
    return {name: n for name, n in state.counts.items()}


def story(state: SchedulerState, *keys: Key) -> list[tuple[str, Event] | TransitionRecord]:
    """What happened to ``keys``, oldest first, from the bounded logs.

    Each event that names one of the keys or caused one of their transitions appears as
    ``(stimulus_id, event)``, followed by those transitions (:class:`TransitionRecord`).
    Transitions whose event already left the log come first.
    """
    wanted = set(keys)
    by_stimulus: dict[str, list[TransitionRecord]] = {}
    for rec in state.transition_log:
        if rec.key in wanted:
            by_stimulus.setdefault(rec.stimulus_id, []).append(rec)
    events: list[tuple[str, Event] | TransitionRecord] = []
    for sid, ev in state.event_log:
        recs = by_stimulus.pop(sid, None)
        if recs is not None or wanted.intersection(ev.touched_keys()):
            events.append((sid, ev))
            events.extend(recs or ())
    orphans: list[tuple[str, Event] | TransitionRecord] = [
        rec for recs in by_stimulus.values() for rec in recs
    ]
    return orphans + events
