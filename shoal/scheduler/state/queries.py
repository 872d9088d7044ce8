"""Read-only views of the scheduler state, as plain data the RPC layer can send.

Nothing here changes the state. ``None`` for ``keys``/``workers`` means "all of them";
unknown keys and workers are left out, except in :func:`gather_info`, which reports
them as ``"forgotten"``.
"""

from __future__ import annotations

import math
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
                "occupancy": ws.occupancy,
                "status": (
                    "closing_gracefully" if ws.retiring else "paused" if ws.paused else "running"
                ),
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


def adaptive_target(state: SchedulerState, target_duration: float = 5.0) -> dict[str, Any]:
    """How many workers the load wants, and which idle workers could go.

    Enough threads to finish the work assigned and waiting (queued and no-worker tasks,
    at their expected durations) within ``target_duration`` seconds, never more than
    there are tasks to run; twice the workers when they hold more than 60% of their
    memory limit. ``workers_to_close`` lists idle workers, fewest bytes first, that the
    others could hold the data of.
    """
    workers = list(state.workers.values())
    waiting = [*state.queued, *state.unrunnable]
    pending = sum(state.expected_duration(ts) for ts in waiting[:100])
    if len(waiting) > 100:
        pending *= len(waiting) / 100
    occupancy = sum(ws.occupancy for ws in workers) + pending
    runnable = len(waiting) + sum(len(ws.processing) for ws in workers)
    threads_per_worker = state.total_nthreads / len(workers) if workers else 1.0
    cores = min(math.ceil(occupancy / target_duration), runnable)
    target = math.ceil(cores / max(threads_per_worker, 1.0))
    if waiting and not workers:
        target = max(target, 1)
    limit = sum(ws.memory_limit for ws in workers)
    if limit and sum(ws.nbytes for ws in workers) > 0.6 * limit:
        target = max(target, 2 * len(workers))
    idle = sorted(
        (ws for ws in workers if ws.accepting and not ws.processing),
        key=lambda ws: (ws.nbytes, -ws.serial),
    )
    to_close = []
    spare = sum(ws.memory_limit - ws.nbytes for ws in workers)
    for ws in idle[: max(len(workers) - target, 0)]:
        if ws.memory_limit and spare - (ws.memory_limit - ws.nbytes) < ws.nbytes:
            break  # the others could not hold its data
        spare -= ws.memory_limit - ws.nbytes
        to_close.append(ws.address)
    return {"target": max(target, len(workers) - len(to_close)), "workers_to_close": to_close}
