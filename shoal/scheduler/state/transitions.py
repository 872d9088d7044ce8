"""The task life cycle: one function per edge, the table of edges, and the engine.

::

    released ──▶ waiting ──▶ processing ──▶ memory
       │  ▲         │  ▲  ▲       │           │
       │  │         ▼  │  │       ▼           │
       │  │  no-worker / queued  erred        │
       ▼  └───────────── (back to released) ◀─┘
    forgotten

A task whose dependencies are all in memory is *placed* (:func:`place`): it goes to a
worker (``processing``), waits for a free worker slot (``queued``, root tasks only), or
waits for a worker it may run on (``no-worker``).

A transition function moves one task and *recommends* moves for others (``ctx.recs``);
:func:`run_recommendations` applies them until none is left, last in first out. Each
function touches only the task and its direct neighbours, so a transition costs
O(dependencies + dependents) and a whole graph O(1) amortized per task.

A move that is not in :data:`TRANSITIONS` goes through ``released`` (for instance
``processing → waiting`` is ``processing → released → waiting``). On the way, the
``→ released`` edge may recommend a different next state for the task, which then
wins: a task still needed goes back to ``waiting`` rather than ``forgotten``, one that
can never be recomputed goes to ``forgotten``. Moves to ``memory`` and ``erred`` carry
data of their own and keep their target.

Release rules (from distributed): a task is *needed* while a client wants it or a
dependent in ``waiting``/``no-worker``/``processing`` waits for it. A task no longer
needed is released (its copies freed); a released or erred task with no client and no
dependent left is forgotten, which may make its dependencies forgettable in turn.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from shoal.protocol.messages import ComputeTask, KeyInMemory, KeyLost
from shoal.scheduler.state.model import (
    ACTIVE_STATES,
    NO_ENTRIES,
    READY_STATES,
    Arrival,
    Context,
    Failure,
    TaskState,
    TaskStateName,
    WorkerInfo,
)
from shoal.scheduler.state.placement import (
    ROOT_RUN_AHEAD,
    decide_worker,
    is_rootish,
    task_slots,
    worker_fits,
)

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState

Transition: TypeAlias = Callable[["SchedulerState", TaskState, Context, "Arrival | None"], None]

#: KeysCancelled reason when scattered data (which has no lineage) loses its last copy.
DATA_LOST = "its data was lost and it has no recipe to recompute it"


# ------------------------------------------------------------------------ engine


def transition(
    s: SchedulerState,
    ts: TaskState,
    finish: TaskStateName,
    ctx: Context,
    data: Arrival | None = None,
) -> None:
    """Move ``ts`` to ``finish`` now (through ``released`` if there is no direct edge)."""
    start = ts.state
    if start == finish or start == "forgotten":
        return
    func = TRANSITIONS.get((start, finish))
    if func is not None:
        func(s, ts, ctx, data)
        if ts.state != start:
            s.record_transition(ts, start, ctx)
        return
    transition(s, ts, "released", ctx)
    if ts.state != "released":
        return  # the release did not happen (a stale recommendation)
    own = ctx.recs.pop(ts, None)
    if own is not None and finish not in ("memory", "erred"):
        finish = own
    if finish != "released":
        transition(s, ts, finish, ctx, data)


def run_recommendations(s: SchedulerState, ctx: Context) -> None:
    """Apply recommendations until there are none left, then fill the freed slots."""
    recs, freed = ctx.recs, ctx.freed
    while True:
        while recs:
            ts, finish = recs.popitem()
            transition(s, ts, finish, ctx)
        if not freed:
            return
        ws = next(iter(freed))
        del freed[ws]
        fill_slots(s, ws, ctx)


# ------------------------------------------------------------------------ helpers


#: The pseudo-client that wants fire-and-forget keys until they finish or err.
FIRE_AND_FORGET = "fire-and-forget"


def drop_fire_and_forget(ts: TaskState, ctx: Context) -> None:
    """``ts`` finished or erred: the fire-and-forget claim on it ends."""
    for cs in ts.who_wants:
        if cs.client == FIRE_AND_FORGET:
            ts.drop_wanter(cs)
            del cs.wants_what[ts]
            release_if_unneeded(ts, ctx)
            return


def release_if_unneeded(ts: TaskState, ctx: Context) -> None:
    """Recommend releasing ``ts`` (or forgetting it) if nothing needs it any more."""
    if ts.who_wants or ts.waiters:
        return
    if ts.state in ("released", "erred"):
        if ts.state == "released" and ctx.recs.get(ts) == "waiting":
            del ctx.recs[ts]  # it was on its way back to waiting for a claim now gone
        if not ts.dependents:
            ctx.recs[ts] = "forgotten"
    elif ts.state == "memory" and not ts.dependents:
        ctx.recs[ts] = "forgotten"  # one step, not through released
    elif ts.state != "forgotten":
        ctx.recs[ts] = "released"


def recommend_in_order(tasks: list[TaskState], finish: TaskStateName, ctx: Context) -> None:
    """Recommend ``finish`` for ``tasks`` so they move by priority, ties in list order."""
    tasks.sort(key=lambda t: t.priority)
    # Recommendations pop last in, first out: insert the first-to-go last.
    for ts in reversed(tasks):
        ctx.recs[ts] = finish


def _drop_dependencies(ts: TaskState, ctx: Context) -> None:
    """``ts`` no longer waits for its dependencies: release the ones nobody else needs."""
    for dts in ts.dependencies:
        dts.waiters.pop(ts, None)
        if not dts.waiters:
            dts.waiters = NO_ENTRIES  # frees the emptied table: 224 bytes per task
        release_if_unneeded(dts, ctx)


def _enter_released(ts: TaskState, ctx: Context) -> None:
    """Common tail of every ``→ released`` edge: decide what comes next for ``ts``."""
    ts.state = "released"
    ts.failure = None  # an "erred" recommendation it had is moot
    needed = bool(ts.who_wants or ts.waiters)
    if ts.run_spec is None or (ts.lost_dependency is not None and not needed):
        ctx.recs[ts] = "forgotten"  # can never be recomputed: keeping it is useless
    elif needed:
        ctx.recs[ts] = "waiting"  # still needed: keep our claim on the dependencies
        return
    elif not ts.dependents:
        ctx.recs[ts] = "forgotten"
    _drop_dependencies(ts, ctx)


def place(s: SchedulerState, ts: TaskState, ctx: Context) -> None:
    """Send the ready task ``ts`` to a worker, queue it, or park it as ``no-worker``."""
    if is_rootish(s, ts):
        place_root(s, ts, ctx)
        return
    ws = decide_worker(s, ts)
    if ws is None:
        ts.state = "no-worker"
        s.unrunnable[ts] = ctx.now
        return
    assign(s, ts, ws, ctx)


def place_root(s: SchedulerState, ts: TaskState, ctx: Context) -> None:
    """Send the root task ``ts`` to a worker with a free slot, else queue it.

    Root tasks placed one after the other are neighbours in priority order, and
    neighbours share dependents (the two halves of a sum, the chunks of one output
    partition): dealt out in turn to the least loaded worker, every such dependent would
    need a transfer. So a root task goes where the previous one went while that worker
    has a free slot and is less than ``ROOT_RUN_AHEAD`` seconds of work per thread ahead
    of the least loaded worker: tiny tasks go in runs, longer ones are still spread.
    """
    ws = s.pool.least_loaded()
    if ws is None:
        ts.state = "no-worker"
        s.unrunnable[ts] = ctx.now
        return
    last = s.root_worker
    if (
        last is not None
        and last is not ws
        and last in s.open_workers
        and last.work_per_thread() - ws.work_per_thread() < ROOT_RUN_AHEAD
    ):
        ws = last
    elif ws not in s.open_workers:
        if not s.open_workers:
            ts.state = "queued"
            s.queued.push(ts)
            return
        ws = min(s.open_workers, key=WorkerInfo.load)
    s.root_worker = ws
    assign(s, ts, ws, ctx)


def assign(s: SchedulerState, ts: TaskState, ws: WorkerInfo, ctx: Context) -> None:
    """Make ``ts`` processing on ``ws`` and tell ``ws`` to compute it."""
    ts.state = "processing"
    ts.processing_on = ws
    duration = s.expected_duration(ts)
    ws.processing[ts] = duration
    ws.occupancy += duration
    if ts.resources:
        used = ws.used_resources
        for name, amount in ts.resources.items():
            used[name] = used.get(name, 0.0) + amount
    ws.last_assigned = s.next_assignment()
    s.workload_changed(ws)
    deps = ts.dependencies
    ctx.to_worker(
        ws,
        ComputeTask(
            key=ts.key,
            run_spec=ts.run_spec,
            who_has={d.key: tuple(w.address for w in d.who_has) for d in deps},
            nbytes={d.key: d.nbytes for d in deps},
            priority=ts.priority,
            resources=ts.resources,
            duration=ts.group.prefix.duration,
        ),
    )


def exit_processing(s: SchedulerState, ts: TaskState, ctx: Context) -> WorkerInfo:
    """Take ``ts`` off its worker's books; its slot goes to queued tasks once the event's
    other recommendations are done (see :func:`run_recommendations`)."""
    ws = ts.processing_on
    assert ws is not None
    ts.processing_on = None
    ws.occupancy -= ws.processing.pop(ts)
    if not ws.processing:
        ws.occupancy = 0.0  # no drift from float sums
    if ts.resources:
        used = ws.used_resources
        for name, amount in ts.resources.items():
            used[name] -= amount
    s.steals.pop(ts, None)
    s.unstealable.pop(ts, None)
    s.workload_changed(ws)
    if s.queued:
        ctx.freed[ws] = None
    return ws


def offer_worker(s: SchedulerState, ws: WorkerInfo, ctx: Context) -> None:
    """``ws`` joined or accepts work again: give it the no-worker tasks it may run and
    queued root tasks for its free slots."""
    ready = []
    for ts in s.unrunnable:
        if worker_fits(s, ts, ws):
            ready.append(ts)
        else:
            s.unrunnable[ts] = ctx.now  # the wait for a fitting worker starts again
    recommend_in_order(ready, "processing", ctx)
    fill_slots(s, ws, ctx)


def fill_slots(s: SchedulerState, ws: WorkerInfo, ctx: Context) -> None:
    """Recommend queued tasks for the free slots of ``ws``."""
    if s.queued:
        for _ in range(task_slots(s, ws)):
            qts = s.queued.pop()
            if qts is None:
                break
            ctx.recs[qts] = "processing"


def in_memory_message(ts: TaskState, value: bytes | None = None) -> KeyInMemory:
    """What a client that wants ``ts`` (in memory) is told: its type and holders, and
    the value itself when a worker just sent it along."""
    return KeyInMemory(
        key=ts.key,
        type_name=ts.type_name,
        who_has=tuple(ws.address for ws in ts.who_has),
        value=value,
    )


def _enter_memory(s: SchedulerState, ts: TaskState, ctx: Context, data: Arrival | None) -> None:
    assert data is not None, f"{ts.key!r} enters memory without data"
    ts.state = "memory"
    ts.waiting_on = NO_ENTRIES
    if data.type_name is not None:
        ts.type_name = sys.intern(data.type_name)  # a few names, repeated per task
    s.set_nbytes(ts, data.nbytes)
    for ws in data.holders:
        s.add_replica(ts, ws)
    ready = []
    for dts in ts.waiters:
        if dts.waiting_on.pop(ts, 0) is None and not dts.waiting_on:
            dts.waiting_on = NO_ENTRIES  # frees the emptied table
            ready.append(dts)
    recommend_in_order(ready, "processing", ctx)
    msg = in_memory_message(ts, data.value)
    for cs in ts.who_wants:
        ctx.to_client(cs, msg)
    drop_fire_and_forget(ts, ctx)
    release_if_unneeded(ts, ctx)


def _enter_erred(ts: TaskState, ctx: Context) -> None:
    failure = ts.failure
    assert failure is not None, f"{ts.key!r} errs without a failure"
    ts.state = "erred"
    ts.waiting_on = NO_ENTRIES
    _drop_dependencies(ts, ctx)
    for dts in ts.waiters:  # waiting dependents can never run: they err too
        dts.failure = failure
        ctx.recs[dts] = "erred"
    ts.waiters = NO_ENTRIES
    msg = failure.report(ts.key)
    for cs in ts.who_wants:
        ctx.to_client(cs, msg)
    drop_fire_and_forget(ts, ctx)


def missing_dependency(ts: TaskState) -> Failure:
    """The failure of a task whose dependency is gone for good."""
    text = (
        f"MissingDependency: dependency {ts.lost_dependency!r} of {ts.key!r} "
        "is not known to the scheduler (released?)"
    )
    return Failure(None, None, text, "", blame=ts.key)


def _forget(s: SchedulerState, ts: TaskState, ctx: Context) -> None:
    key = ts.key
    # Dependents exist only when ts can't be recomputed (scattered data, lost lineage).
    for dts in ts.dependents:
        del dts.dependencies[ts]
        dts.waiting_on.pop(ts, None)
        if dts.lost_dependency is None:
            dts.lost_dependency = key
        if dts.state in ACTIVE_STATES or (
            dts.state == "released" and (dts.who_wants or dts.waiters)
        ):
            # Needed, even if only on its way back to waiting: it can never run now.
            dts.failure = missing_dependency(dts)
            ctx.recs[dts] = "erred"
        elif dts.state == "released":
            ctx.recs[dts] = "forgotten"
    ts.dependents = NO_ENTRIES
    ts.waiters = NO_ENTRIES
    for dts in ts.dependencies:
        del dts.dependents[ts]
        dts.waiters.pop(ts, None)
        release_if_unneeded(dts, ctx)
    ts.dependencies = NO_ENTRIES
    for cs in ts.who_wants:
        del cs.wants_what[ts]
        ctx.cancelled(cs.client, key, DATA_LOST)
    ts.who_wants = ()
    ts.state = "forgotten"
    s.forget_task(ts)


# ------------------------------------------------------------------------ edges


def _released_waiting(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # A released task became needed: a client wants it or a dependent waits for it.
    if ts.lost_dependency is not None:
        ts.failure = missing_dependency(ts)
        ctx.recs[ts] = "erred"
        return
    for dts in ts.dependencies:
        if dts.state == "erred":
            ts.failure = dts.failure
            ctx.recs[ts] = "erred"
            return
    ts.state = "waiting"
    for dts in ts.dependencies:
        dts.add_waiter(ts)
        if dts.state != "memory":
            ts.wait_on(dts)
            if dts.state == "released":
                ctx.recs[dts] = "waiting"
    if not ts.waiting_on:
        ctx.recs[ts] = "processing"


def _released_forgotten(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # A released task has no client and no dependent left, or can never be recomputed.
    _forget(s, ts, ctx)


def _released_erred(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # A needed task can't run: a dependency erred, or is unknown / lost for good.
    _enter_erred(ts, ctx)


def _released_memory(s: SchedulerState, ts: TaskState, ctx: Context, data: Arrival | None) -> None:
    # A client scattered data under a new (or released) key.
    _enter_memory(s, ts, ctx, data)


def _waiting_processing(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # All dependencies of a waiting task are in memory: place it.
    if ts.waiting_on:
        return  # stale recommendation: a dependency was lost meanwhile
    place(s, ts, ctx)


def _waiting_released(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # Nobody needs a waiting task any more (released or cancelled by its clients).
    ts.waiting_on = NO_ENTRIES
    _enter_released(ts, ctx)


def _waiting_erred(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # A dependency of a waiting task erred (or was lost for good).
    _enter_erred(ts, ctx)


def _waiting_memory(s: SchedulerState, ts: TaskState, ctx: Context, data: Arrival | None) -> None:
    # The value arrived before the task ran: scattered, or finished by a worker it was
    # taken from when a dependency was lost.
    _drop_dependencies(ts, ctx)
    _enter_memory(s, ts, ctx, data)


def _no_worker_processing(
    s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None
) -> None:
    # A worker that may run a no-worker task joined.
    since = s.unrunnable.pop(ts)
    place(s, ts, ctx)
    if ts.state == "no-worker":
        s.unrunnable[ts] = since  # still nowhere to go: keep its waiting time


def _no_worker_erred(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # No connected worker could run it for too long (``no_workers_timeout``).
    del s.unrunnable[ts]
    _enter_erred(ts, ctx)


def _queued_processing(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # A worker slot freed up (or a worker joined): place the queued task again.
    s.queued.discard(ts)
    place_root(s, ts, ctx)  # back in the queue if every slot is taken again


def _queued_released(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # Nobody needs it any more, or a dependency was lost (then on to waiting).
    s.queued.discard(ts)
    _enter_released(ts, ctx)


def _queued_memory(s: SchedulerState, ts: TaskState, ctx: Context, data: Arrival | None) -> None:
    # Its value was scattered, or delivered by a worker it ran on before.
    s.queued.discard(ts)
    _drop_dependencies(ts, ctx)
    _enter_memory(s, ts, ctx, data)


def _no_worker_released(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # Nobody needs it any more, or a dependency was lost (then on to waiting).
    del s.unrunnable[ts]
    _enter_released(ts, ctx)


def _no_worker_memory(s: SchedulerState, ts: TaskState, ctx: Context, data: Arrival | None) -> None:
    # Its value was scattered, or delivered by a worker it ran on before.
    del s.unrunnable[ts]
    _drop_dependencies(ts, ctx)
    _enter_memory(s, ts, ctx, data)


def _processing_memory(
    s: SchedulerState, ts: TaskState, ctx: Context, data: Arrival | None
) -> None:
    # Its worker finished it (or another worker delivered the value: then the
    # assigned worker is told to drop the redundant run).
    ws = exit_processing(s, ts, ctx)
    if data is not None and ws not in data.holders:
        ctx.free(ws, ts.key)
    _drop_dependencies(ts, ctx)
    _enter_memory(s, ts, ctx, data)


def _processing_erred(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # It raised with no retries left, it killed too many workers, or a dependency was
    # lost for good. The worker drops its copy of the error (or stops the run).
    ctx.free(exit_processing(s, ts, ctx), ts.key)
    _enter_erred(ts, ctx)


def _processing_released(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # Nobody needs it any more; or its worker died, asked to reschedule it, or it
    # failed with retries left, or a dependency was lost: then on to waiting.
    ctx.free(exit_processing(s, ts, ctx), ts.key)
    _enter_released(ts, ctx)


def _free_replicas(s: SchedulerState, ts: TaskState, ctx: Context) -> None:
    """Tell every holder of ``ts`` to drop it, and forget they held it."""
    for ws in list(ts.who_has):
        ctx.free(ws, ts.key)
        s.remove_replica(ts, ws)


def _memory_released(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # Nobody needs the value any more (free every copy), or its last copy was lost
    # (its clients hear KeyLost; it is recomputed if still needed).
    if ts.who_has and (ts.who_wants or ts.waiters):
        return  # stale recommendation: still held and needed
    _free_replicas(s, ts, ctx)
    msg = KeyLost(key=ts.key)
    for cs in ts.who_wants:
        ctx.to_client(cs, msg)
    for dts in ts.dependents:
        if dts.state in READY_STATES:
            ctx.recs[dts] = "waiting"
        elif dts.state == "waiting":
            dts.wait_on(ts)
    _enter_released(ts, ctx)


def _memory_forgotten(s: SchedulerState, ts: TaskState, ctx: Context, data: Arrival | None) -> None:
    # Nobody needs the value and no task depends on it (a result its client dropped):
    # free every copy and forget it. Through released it would take two transitions.
    if ts.who_wants or ts.waiters or ts.dependents:  # needed again since the recommendation
        _memory_released(s, ts, ctx, data)
        return
    _free_replicas(s, ts, ctx)
    _forget(s, ts, ctx)


def _erred_released(s: SchedulerState, ts: TaskState, ctx: Context, _: Arrival | None) -> None:
    # It is retried (resubmitted), forgotten, or its value was scattered. Dependents
    # that erred because of it are retried too; their clients hear KeyLost, as when a
    # value is lost: the key is pending again.
    ts.failure = None
    ts.suspicious = ()  # a retry is a fresh start, KilledWorker included
    for dts in ts.dependents:
        if dts.state == "erred":
            ctx.recs[dts] = "waiting"
    msg = KeyLost(key=ts.key)  # "no longer erred: being computed again"
    for cs in ts.who_wants:
        ctx.to_client(cs, msg)
    _enter_released(ts, ctx)


#: Every direct edge of the task life cycle. Other moves go through "released".
TRANSITIONS: dict[tuple[TaskStateName, TaskStateName], Transition] = {
    ("released", "waiting"): _released_waiting,
    ("released", "forgotten"): _released_forgotten,
    ("released", "erred"): _released_erred,
    ("released", "memory"): _released_memory,
    ("waiting", "processing"): _waiting_processing,
    ("waiting", "released"): _waiting_released,
    ("waiting", "erred"): _waiting_erred,
    ("waiting", "memory"): _waiting_memory,
    ("no-worker", "processing"): _no_worker_processing,
    ("no-worker", "released"): _no_worker_released,
    ("no-worker", "memory"): _no_worker_memory,
    ("no-worker", "erred"): _no_worker_erred,
    ("queued", "processing"): _queued_processing,
    ("queued", "released"): _queued_released,
    ("queued", "memory"): _queued_memory,
    ("processing", "memory"): _processing_memory,
    ("processing", "erred"): _processing_erred,
    ("processing", "released"): _processing_released,
    ("memory", "released"): _memory_released,
    ("memory", "forgotten"): _memory_forgotten,
    ("erred", "released"): _erred_released,
}
