"""Work stealing: idle workers take over tasks queued on busy ones.

Every :class:`~.events.Tick`, :func:`balance` looks for *thieves* (workers with idle
threads) and *victims* (workers with more tasks than threads). For each idle thread it
picks one of the victim's most recently assigned tasks (those it will run last) whose
dependencies are cheap to move: the time to copy the bytes the thief lacks, at
``bandwidth`` bytes per second, must not exceed the task's expected run time.

Stealing is a two-step protocol, so that a task never runs twice:

1. the scheduler sends ``StealRequest(key)`` to the victim and notes the steal; the task
   stays ``processing`` on the victim meanwhile;
2. the victim answers ``StealResponse(key, state)``. If the task had not started
   (``waiting``, ``ready``, ``constrained``) the victim has dropped it, and
   :func:`steal_responded` assigns it to the thief, or places it anew when the thief is
   gone or can no longer take it. Otherwise the victim keeps it and reports its outcome
   as usual; the steal is forgotten.

A task that leaves ``processing`` in between (finished, released, its victim died)
drops its steal record (:func:`~.transitions.exit_processing`), so a late answer
changes nothing. Retiring workers use the same protocol with no thief, to hand back the
tasks they have not started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.protocol.messages import StealRequest
from shoal.scheduler.state.events import StealResponded
from shoal.scheduler.state.model import Context, TaskState, WorkerInfo
from shoal.scheduler.state.placement import worker_fits
from shoal.scheduler.state.transitions import assign, exit_processing, transition

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState

#: The worker states in which a steal request makes the worker drop the task.
DROPPED_STATES = frozenset({"waiting", "ready", "constrained"})

#: How many of a victim's tasks one balance pass examines, at most.
MAX_CANDIDATES = 64


@dataclass(slots=True)
class Steal:
    """A steal request in flight: from ``victim`` to ``thief`` (None: anywhere)."""

    victim: WorkerInfo
    thief: WorkerInfo | None


def request_steal(s: SchedulerState, ts: TaskState, thief: WorkerInfo | None, ctx: Context) -> None:
    """Ask the worker running ``ts`` to give it back, for ``thief`` or for placing anew."""
    victim = ts.processing_on
    assert victim is not None
    if ts in s.steals:
        s.steals[ts].thief = thief
        return
    s.steals[ts] = Steal(victim, thief)
    ctx.to_worker(victim, StealRequest(key=ts.key))


def steal_responded(s: SchedulerState, ev: StealResponded, ctx: Context) -> None:
    """The victim answered: move the task if it dropped it, else forget the steal."""
    ts = s.tasks.get(ev.key)
    if ts is None:
        return
    steal = s.steals.get(ts)
    if steal is None or steal.victim.address != ev.worker or ts.processing_on is not steal.victim:
        return  # the task moved on meanwhile; the victim reports its outcome as usual
    del s.steals[ts]
    if ev.state not in DROPPED_STATES:
        s.unstealable[ts] = None  # running already: don't ask again while it runs there
        return
    thief = steal.thief
    if thief is not None and thief.alive and worker_fits(s, ts, thief):
        exit_processing(s, ts, ctx)
        assign(s, ts, thief, ctx)
        s.record_transition(ts, "processing", ctx)
    else:
        transition(s, ts, "waiting", ctx)  # placed anew, among the workers still accepting


def transfer_seconds(s: SchedulerState, ts: TaskState, thief: WorkerInfo) -> float:
    """Time to copy to ``thief`` the dependencies of ``ts`` it does not hold."""
    nbytes = sum(dts.nbytes for dts in ts.dependencies if thief not in dts.who_has)
    return nbytes / s.bandwidth


def _worth_stealing(s: SchedulerState, ts: TaskState, thief: WorkerInfo) -> bool:
    if ts.actor or ts in s.steals or ts in s.unstealable or not worker_fits(s, ts, thief):
        return False  # an actor stays where it was placed
    return transfer_seconds(s, ts, thief) <= s.expected_duration(ts)


def balance(s: SchedulerState, ctx: Context) -> None:
    """Move tasks from workers with a backlog to workers with idle threads."""
    incoming: dict[WorkerInfo, int] = {}
    leaving: dict[WorkerInfo, int] = {}
    for steal in s.steals.values():
        leaving[steal.victim] = leaving.get(steal.victim, 0) + 1
        if steal.thief is not None:
            incoming[steal.thief] = incoming.get(steal.thief, 0) + 1
    thieves: list[tuple[WorkerInfo, int]] = []
    victims: list[WorkerInfo] = []
    for ws in s.workers.values():
        # A paused worker starts nothing: everything it has not started is backlog.
        backlog = len(ws.processing) - leaving.get(ws, 0) - (0 if ws.paused else ws.nthreads)
        if backlog > 0:
            victims.append(ws)
        elif ws.accepting:
            idle = -backlog - incoming.get(ws, 0)
            if idle > 0:
                thieves.append((ws, idle))
    if not thieves or not victims:
        return
    victims.sort(key=lambda ws: ws.occupancy / ws.nthreads, reverse=True)
    thieves.sort(key=lambda pair: pair[0].load())
    for thief, idle in thieves:
        for victim in victims:
            if idle == 0:
                break
            idle -= _steal_from(s, victim, thief, idle, leaving, ctx)


def _steal_from(
    s: SchedulerState,
    victim: WorkerInfo,
    thief: WorkerInfo,
    wanted: int,
    leaving: dict[WorkerInfo, int],
    ctx: Context,
) -> int:
    """Request up to ``wanted`` of ``victim``'s backlog for ``thief``; return how many."""
    taken = 0
    for examined, ts in enumerate(reversed(victim.processing)):
        backlog = (
            len(victim.processing)
            - leaving.get(victim, 0)
            - (0 if victim.paused else victim.nthreads)
        )
        if taken == wanted or backlog <= 0 or examined == MAX_CANDIDATES:
            break
        if _worth_stealing(s, ts, thief):
            request_steal(s, ts, thief, ctx)
            leaving[victim] = leaving.get(victim, 0) + 1
            taken += 1
    return taken
