"""A journal snapshot: the shortest list of events that rebuilds the scheduler's books.

A journal (``shoal/scheduler/journal.py``) that only ever grew would replay a long-lived
scheduler's whole history. Compacting it replaces that history by the events
:func:`snapshot_events` derives from the current state: the workers, every task's
spec, who wants what, which keys each worker holds, and which tasks erred (with their
failure). Replayed into a fresh :class:`~.machine.SchedulerState`, they give a state
that agrees with the original on everything a restart keeps: tasks and their specs,
clients' wants, the values in memory and where, and the errors. It may differ in what
the restart redoes anyway: which tasks are processing where, learned durations,
retries left and the count of workers a task killed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.protocol.messages import TaskSpec
from shoal.scheduler.state.events import (
    ClientConnected,
    ClientDisconnected,
    DataScattered,
    ErredRestored,
    Event,
    GraphSubmitted,
    KeysDesired,
    ReplicasAdded,
    WorkerAdded,
)
from shoal.scheduler.state.model import TaskState

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState

#: the pseudo-client that holds scattered keys and submits the tasks while a snapshot
#: is replayed (it wants what any client wants, until the clients want it themselves)
SNAPSHOT_CLIENT = "journal-snapshot"


def spec_of(ts: TaskState) -> TaskSpec:
    """The spec a client would submit to recreate ``ts``."""
    return TaskSpec(
        key=ts.key,
        dependencies=tuple(d.key for d in ts.dependencies),
        run_spec=ts.run_spec,
        priority=ts.priority,
        retries=ts.retries,
        workers=ts.worker_restrictions,
        allow_other_workers=ts.allow_other_workers,
        resources=ts.resources,
        actor=ts.actor,
    )


def _dependencies_first(tasks: list[TaskState]) -> list[TaskState]:
    """``tasks`` ordered so that each comes after its dependencies (iteratively)."""
    done: dict[TaskState, None] = {}
    for root in tasks:
        stack: list[tuple[TaskState, bool]] = [(root, False)]
        while stack:
            ts, expanded = stack.pop()
            if ts in done:
                continue
            if expanded:
                done[ts] = None
                continue
            stack.append((ts, True))
            stack.extend((d, False) for d in ts.dependencies if d not in done)
    return list(done)


def snapshot_events(s: SchedulerState, now: float) -> list[Event]:
    """Events that rebuild ``s``'s tasks, wants, replicas and errors in a fresh state."""
    sid = "journal-snapshot"
    events: list[Event] = [
        WorkerAdded(
            ws.address,
            ws.nthreads,
            ws.memory_limit,
            ws.name,
            dict(ws.resources),
            stimulus_id=sid,
            now=now,
        )
        for ws in s.workers.values()
    ]
    # Scattered values first: they have no recipe, only holders. A pseudo-client keeps
    # them until the graphs that use them and the clients that want them are back.
    scattered = {
        ts.key: tuple(ws.address for ws in ts.who_has)
        for ts in s.tasks.values()
        if ts.run_spec is None and ts.state == "memory"
    }
    if scattered:
        nbytes = {key: s.tasks[key].nbytes for key in scattered}
        events.append(DataScattered(SNAPSHOT_CLIENT, scattered, nbytes, stimulus_id=sid, now=now))
    # The specs once (not once per client: a snapshot's size does not grow with the
    # clients), wanted by the pseudo-client until each client wants its own keys.
    if s.clients:
        specs = tuple(spec_of(ts) for ts in s.tasks.values() if ts.run_spec is not None)
        wanted = tuple({ts.key: None for cs in s.clients.values() for ts in cs.wants_what})
        events.append(GraphSubmitted(SNAPSHOT_CLIENT, specs, wanted, stimulus_id=sid, now=now))
    for cs in s.clients.values():
        keys = tuple(ts.key for ts in cs.wants_what)
        events.append(ClientConnected(cs.client, stimulus_id=sid, now=now))
        if keys:
            events.append(KeysDesired(cs.client, keys, stimulus_id=sid, now=now))
    for ws in s.workers.values():
        held = tuple(ts.key for ts in ws.has_what if ts.run_spec is not None)
        if held:
            sizes = {ts.key: ts.nbytes for ts in ws.has_what if ts.run_spec is not None}
            events.append(ReplicasAdded(ws.address, held, sizes, stimulus_id=sid, now=now))
    erred = [ts for ts in s.tasks.values() if ts.state == "erred" and ts.failure is not None]
    for ts in _dependencies_first(erred):
        f = ts.failure
        if ts.state != "erred" or f is None:
            continue  # a dependency of an erred task that is not erred itself
        events.append(
            ErredRestored(
                ts.key,
                f.exception,
                f.traceback,
                f.exception_text,
                f.traceback_text,
                f.blame,
                stimulus_id=sid,
                now=now,
            )
        )
    if scattered or s.clients:
        events.append(ClientDisconnected(SNAPSHOT_CLIENT, stimulus_id=sid, now=now))
    return events
