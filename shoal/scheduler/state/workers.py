"""Handlers for what workers report: joining, finished and failed tasks, new replicas.

Worker messages race with the scheduler's decisions: a worker may report on a task
that was meanwhile released, reassigned or finished elsewhere. Such *stale* reports
are never errors: a value nobody needs is freed on that worker, a value that is still
useful is kept, and the rest is ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.scheduler.state import moves, recovery
from shoal.scheduler.state.events import (
    ReplicasAdded,
    TaskFailedEvent,
    TaskFinishedEvent,
    WorkerAdded,
    WorkerStatusChanged,
)
from shoal.scheduler.state.model import Arrival, Context, Failure, WorkerInfo
from shoal.scheduler.state.transitions import (
    offer_worker,
    run_recommendations,
    transition,
)

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState


def worker_added(s: SchedulerState, ev: WorkerAdded, ctx: Context) -> None:
    """Register a worker, adopt the keys it already holds, retry no-worker tasks."""
    old = s.workers.get(ev.address)
    if old is not None:
        # Registering again (a reconnect, or a scheduler recovered from its journal):
        # forget the old record, but not the values the worker says it still holds.
        recovery.remove_worker(s, old, ctx, safe=True, survivors=frozenset(ev.keys))
    ws = WorkerInfo(
        ev.address,
        nthreads=ev.nthreads,
        memory_limit=ev.memory_limit,
        name=ev.name,
        resources=dict(ev.resources),
        serial=s.next_worker_serial(),
    )
    s.add_worker(ws)
    if old is not None:
        for key in ev.keys:
            ts = s.tasks.get(key)
            if ts is not None and ts.state == "memory":
                s.add_replica(ts, ws)  # kept through remove_worker: holder again
        # What the old record ran is placed again only now, with every kept key held.
        run_recommendations(s, ctx)
    for key in ev.keys:
        ts = s.tasks.get(key)
        if ts is None or ts.state in ("released", "erred"):
            ctx.free(ws, key)
        elif ts.state == "memory":
            s.add_replica(ts, ws)
        else:
            # Lost when the worker's connection broke, and being recomputed: the worker
            # is back with the value (a reconnect), so nothing needs to run again.
            nbytes = ev.nbytes.get(key, ts.nbytes)
            transition(s, ts, "memory", ctx, Arrival((ws,), nbytes, None))
    offer_worker(s, ws, ctx)


def task_finished(s: SchedulerState, ev: TaskFinishedEvent, ctx: Context) -> None:
    """A worker holds the value of ``ev.key``."""
    ws = s.workers.get(ev.worker)
    if ws is None:
        return  # the worker is gone, and its value with it
    ts = s.tasks.get(ev.key)
    if ts is not None and ev.stop > ev.start:
        ts.group.prefix.record(ev.stop - ev.start)
    if ts is None or ts.state in ("released", "erred"):
        ctx.free(ws, ev.key)  # nobody needs it (any more)
    elif ts.state == "memory":
        s.add_replica(ts, ws)  # finished twice: keep the extra copy
    else:
        # processing here (the normal case) or elsewhere, or waiting / no-worker after
        # being taken back: the value is good either way.
        transition(s, ts, "memory", ctx, Arrival((ws,), ev.nbytes, ev.type_name, ev.value))


def task_failed(s: SchedulerState, ev: TaskFailedEvent, ctx: Context) -> None:
    """``ev.key`` raised on a worker: retry it if it has retries left, else err."""
    ws = s.workers.get(ev.worker)
    if ws is None:
        return
    ts = s.tasks.get(ev.key)
    if ts is None or ts.processing_on is not ws:
        if ts is None or ws not in ts.who_has:
            ctx.free(ws, ev.key)  # stale: the worker drops the error it keeps
        return
    if ts.retries > 0:
        ts.retries -= 1
        transition(s, ts, "waiting", ctx)
        return
    ts.failure = Failure(
        ev.exception, ev.traceback, ev.exception_text, ev.traceback_text, blame=ts.key
    )
    transition(s, ts, "erred", ctx)


def replicas_added(s: SchedulerState, ev: ReplicasAdded, ctx: Context) -> None:
    """A worker holds more copies; keep those still needed, free the others."""
    ws = s.workers.get(ev.worker)
    if ws is None:
        return
    added = []
    for key in ev.keys:
        ts = s.tasks.get(key)
        if ts is None or ts.state in ("released", "erred") or ts.actor:
            # nobody needs it (any more); or a proxy to an actor, fetched by a task
            # there: not a copy of its object (the worker keeps it while tasks need it)
            ctx.free(ws, key)
        elif ts.state == "memory":
            s.add_replica(ts, ws)
            added.append(ts)
        else:
            # Being computed again (its last copy was lost) while a copy arrived late:
            # the copy is the value, as if a worker had finished it.
            nbytes = ev.nbytes.get(key, ts.nbytes)
            transition(s, ts, "memory", ctx, Arrival((ws,), nbytes, None))
            added.append(ts)
    if s.pending_copies:
        moves.copies_arrived(s, ws, added, ctx)


def worker_status_changed(s: SchedulerState, ev: WorkerStatusChanged, ctx: Context) -> None:
    """A worker paused (it gets no new work; idle workers may steal what it holds) or
    resumed (it takes work again)."""
    ws = s.workers.get(ev.worker)
    if ws is None:
        return
    ws.paused = ev.status == "paused"
    s.update_accepting(ws)
    if ws.accepting:
        offer_worker(s, ws, ctx)
