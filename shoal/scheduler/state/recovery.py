"""Losing workers and data: recompute from lineage, reschedule, count suspicious deaths.

When a worker goes, every task it was running goes back to ``waiting`` (and is placed
again), and every key whose only copy it held goes back to ``released``: if a client
or a dependent still needs it, it is recomputed from its dependencies (its clients hear
``KeyLost`` now and ``KeyInMemory`` later); scattered data, which has no recipe, is
forgotten and its futures cancelled.

A task running on a worker that *dies* (``safe=False``) is suspicious: it may be what
kills workers. Once more than ``allowed_failures`` workers died running it, it errs
with ``KilledWorker`` instead of being tried again. The scheduler can't pickle an
exception, so the client gets ``KeyErred(exception=None, traceback=None,
exception_text="KilledWorker: <message naming the task and the workers>")`` and
rebuilds :class:`shoal.errors.KilledWorker` from it.

An actor (``TaskSpec.actor``) whose worker is lost is not recomputed while a client
holds it, as in distributed: its state is gone and a fresh object would silently start
over, so it errs with ``ActorLost`` (its dependents err with it). An actor that only
dependents need is computed again like any task.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from shoal._types import Key
from shoal.errors import KilledWorker, NoValidWorker
from shoal.scheduler.state.events import (
    DataMissing,
    ErredRestored,
    RescheduleRequested,
    RestartRequested,
    WorkerRemoved,
)
from shoal.scheduler.state.model import Context, Failure, TaskState, WorkerInfo
from shoal.scheduler.state.transitions import transition

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState


def actor_lost(ts: TaskState, address: str) -> Failure:
    """The failure of an actor whose worker was lost."""
    text = (
        f"ActorLost: worker {address}, which held actor {ts.key!r}, was lost, and the "
        "actor's state with it. Submit the actor again to make a new one."
    )
    return Failure(None, None, text, "", blame=ts.key)


def killed_worker(ts: TaskState) -> Failure:
    """The failure of a task that was running on too many workers that died."""
    text = f"KilledWorker: {KilledWorker(ts.key, list(ts.suspicious))}"
    return Failure(None, None, text, "", blame=ts.key)


def remove_worker(
    s: SchedulerState,
    ws: WorkerInfo,
    ctx: Context,
    *,
    safe: bool,
    survivors: Collection[Key] = (),
) -> None:
    """Forget ``ws``: reschedule what it ran, recompute or drop what only it held.

    ``survivors`` are keys the same worker, registering again, still holds: they stay in
    memory (the caller adds the new record as their holder before the event ends).
    """
    s.drop_worker(ws)
    ctx.out.forget_worker(ws.address)
    # Its copies go first, so no decision below counts them as local data.
    lost: list[TaskState] = []
    for ts in list(ws.has_what):
        s.remove_replica(ts, ws)
        if not ts.who_has and ts.key not in survivors:
            lost.append(ts)
    # Least urgent first: recommendations run last in, first out, so the most urgent
    # task is placed first and gets the first free slot.
    for ts in sorted(ws.processing, key=lambda t: t.priority, reverse=True):
        if not safe:
            ts.suspicious = (*ts.suspicious, ws.address)
        if len(ts.suspicious) > s.allowed_failures:
            ts.failure = killed_worker(ts)
            transition(s, ts, "erred", ctx)
        else:
            transition(s, ts, "released", ctx)  # recommends waiting if still needed
    # Every lost key leaves "memory" before any recommendation runs, so none of them
    # is taken for an available dependency.
    for ts in lost:
        transition(s, ts, "released", ctx)
        if ts.actor and ts.who_wants:
            ctx.recs.pop(ts, None)  # not made again: its state is lost (see above)
            ts.failure = actor_lost(ts, ws.address)
            transition(s, ts, "erred", ctx)


def worker_removed(s: SchedulerState, ev: WorkerRemoved, ctx: Context) -> None:
    """A worker left (``safe``) or died."""
    ws = s.workers.get(ev.address)
    if ws is not None:
        remove_worker(s, ws, ctx, safe=ev.safe)


def erred_restored(s: SchedulerState, ev: ErredRestored, ctx: Context) -> None:
    """Err a task again with the failure a journal snapshot kept for it."""
    ts = s.tasks.get(ev.key)
    if ts is None or ts.state in ("memory", "erred"):
        return
    if ts.state != "released":
        transition(s, ts, "released", ctx)
        ctx.recs.pop(ts, None)  # not to be run again: it errs right below
    ts.failure = Failure(
        ev.exception, ev.traceback, ev.exception_text, ev.traceback_text, blame=ev.blame
    )
    transition(s, ts, "erred", ctx)


def data_missing(s: SchedulerState, ev: DataMissing, ctx: Context) -> None:
    """A worker did not find ``ev.key`` on ``ev.errant_worker``: drop that copy."""
    ts = s.tasks.get(ev.key)
    if ts is None:
        return
    errant = s.workers.get(ev.errant_worker)
    if errant is not None and errant in ts.who_has:
        s.remove_replica(ts, errant)
    if ts.state == "memory" and not ts.who_has:
        ctx.recs[ts] = "released"


def reschedule_requested(s: SchedulerState, ev: RescheduleRequested, ctx: Context) -> None:
    """A worker gives a task back: place it again (maybe on the same worker)."""
    ts = s.tasks.get(ev.key)
    ws = s.workers.get(ev.worker)
    if ts is not None and ws is not None and ts.processing_on is ws:
        transition(s, ts, "waiting", ctx)


def _unrunnable_failure(s: SchedulerState, ts: TaskState, waited: float) -> Failure:
    needs = []
    if ts.resources:
        needs.append(f"resources {ts.resources}")
    if ts.worker_restrictions is not None:
        needs.append(f"one of the workers {list(ts.worker_restrictions)}")
    offers = {ws.name or ws.address: ws.resources for ws in s.workers.values()}
    err = NoValidWorker(
        f"task {ts.key!r} needs {' and '.join(needs) or 'a worker'}, and none of the "
        f"{len(s.workers)} connected workers could run it for {waited:.0f} s "
        f"(their resources: {offers}). Start a worker that has them (for example "
        "`shoal worker ... --resources NAME=AMOUNT`) or relax the task's restrictions."
    )
    return Failure(None, None, f"NoValidWorker: {err}", "", blame=ts.key)


def expire_unrunnable(s: SchedulerState, ctx: Context) -> None:
    """Err the tasks that no connected worker could run for ``no_workers_timeout``."""
    timeout = s.no_workers_timeout
    if timeout is None or not s.unrunnable or not s.workers:
        return
    for ts, since in list(s.unrunnable.items()):
        if ctx.now - since >= timeout:
            ts.failure = _unrunnable_failure(s, ts, ctx.now - since)
            transition(s, ts, "erred", ctx)


#: KeysCancelled reason of every key when the cluster restarts.
RESTARTED = "the cluster was restarted (client.restart())"


def restart(s: SchedulerState, ev: RestartRequested, ctx: Context) -> None:
    """Forget every task at once: clients hear their keys are cancelled; workers, which
    are restarting, are told nothing. Pending requests finish with what they did."""
    from shoal.scheduler.state.outgoing import RequestDone
    from shoal.scheduler.state.placement import TaskQueue

    for cs in s.clients.values():
        for ts in cs.wants_what:
            ctx.cancelled(cs.client, ts.key, RESTARTED)
        cs.wants_what.clear()
    s.tasks.clear()
    s.groups.clear()
    for name in s.counts:
        s.counts[name] = 0
    s.queued = TaskQueue()
    s.unrunnable.clear()
    s.steals.clear()
    s.unstealable.clear()
    s.pending_copies.clear()
    for ws in s.workers.values():
        ws.processing.clear()
        ws.occupancy = 0.0
        ws.used_resources.clear()
        ws.has_what.clear()
        ws.nbytes = 0
        s.workload_changed(ws)
    for req in s.moves.values():
        ctx.out.to_server(RequestDone(req.request, {"moved": req.moved}))
    s.moves.clear()
    for r in s.retirements.values():
        for ws in r.workers:
            ws.retiring = False
            s.update_accepting(ws)
        ctx.out.to_server(RequestDone(r.request, r.retired))
    s.retirements.clear()
