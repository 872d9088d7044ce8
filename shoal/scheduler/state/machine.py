"""``SchedulerState``: the scheduler's pure state machine.

``handle(*events)`` takes events (see :mod:`.events`) and returns what to send (see
:mod:`.outgoing`). Nothing here does I/O, reads a clock or draws a random number, so an
event log replayed into a fresh ``SchedulerState`` makes exactly the same decisions.

Each event goes through a handler (:mod:`.clients`, :mod:`.workers`, :mod:`.recovery`)
that adjusts bookkeeping and makes the first transitions; then the recommendations they
produce run to completion (:mod:`.transitions`); then, with ``validate=True``, every
invariant is checked (:mod:`.invariants`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from shoal._types import Address, ClientId, Key, StimulusId
from shoal.scheduler.state import clients, recovery, workers
from shoal.scheduler.state.events import (
    ClientConnected,
    ClientDisconnected,
    DataMissing,
    DataScattered,
    Event,
    FireAndForgetRequested,
    GraphSubmitted,
    KeysCancelled,
    KeysDesired,
    KeysReleased,
    ReplicasAdded,
    RescheduleRequested,
    TaskFailedEvent,
    TaskFinishedEvent,
    WorkerAdded,
    WorkerRemoved,
)
from shoal.scheduler.state.invariants import validate as validate_state
from shoal.scheduler.state.model import (
    LIVE_STATES,
    ClientInfo,
    Context,
    TaskState,
    TaskStateName,
    TransitionRecord,
    WorkerInfo,
)
from shoal.scheduler.state.outgoing import Outbox, Outgoing
from shoal.scheduler.state.placement import WorkerPool
from shoal.scheduler.state.transitions import run_recommendations

_HANDLERS: dict[type[Event], Callable[[SchedulerState, Any, Context], None]] = {
    ClientConnected: clients.client_connected,
    ClientDisconnected: clients.client_disconnected,
    GraphSubmitted: clients.graph_submitted,
    KeysReleased: clients.keys_released,
    KeysDesired: clients.keys_desired,
    FireAndForgetRequested: clients.fire_and_forget,
    KeysCancelled: clients.keys_cancelled,
    DataScattered: clients.data_scattered,
    WorkerAdded: workers.worker_added,
    TaskFinishedEvent: workers.task_finished,
    TaskFailedEvent: workers.task_failed,
    ReplicasAdded: workers.replicas_added,
    WorkerRemoved: recovery.worker_removed,
    DataMissing: recovery.data_missing,
    RescheduleRequested: recovery.reschedule_requested,
}


class SchedulerState:
    """Every task, worker and client the scheduler knows, and the rules that move them.

    ``allowed_failures``: how many workers may die while running one task before it
    errs with ``KilledWorker``. ``validate``: check every invariant after each event
    (tests always do). ``log_size``: how many events and transitions the logs keep.
    """

    def __init__(
        self, *, allowed_failures: int = 3, validate: bool = False, log_size: int = 100_000
    ) -> None:
        self.allowed_failures = allowed_failures
        self.validate = validate
        #: every task not forgotten, by key
        self.tasks: dict[Key, TaskState] = {}
        #: live workers by address, and by name
        self.workers: dict[Address, WorkerInfo] = {}
        self.aliases: dict[str, WorkerInfo] = {}
        #: live workers declaring each resource
        self.resource_index: dict[str, dict[WorkerInfo, None]] = {}
        self.clients: dict[ClientId, ClientInfo] = {}
        #: tasks in the no-worker state, retried when a worker joins
        self.unrunnable: dict[TaskState, None] = {}
        #: number of tasks in each live state
        self.counts: dict[TaskStateName, int] = dict.fromkeys(LIVE_STATES, 0)
        self.pool = WorkerPool()
        #: ``(stimulus_id, event)`` for each handled event, oldest first
        self.event_log: deque[tuple[StimulusId, Event]] = deque(maxlen=log_size)
        self.transition_log: deque[TransitionRecord] = deque(maxlen=log_size)
        self._stimuli = 0
        self._assignments = 0
        self._workers_seen = 0

    # -------------------------------------------------------------- entry point

    def handle(self, *events: Event) -> list[Outgoing]:
        """Apply ``events`` in order; return the messages to send, in order."""
        out = Outbox()
        for event in events:
            sid = event.stimulus_id
            if not sid:
                self._stimuli += 1
                sid = f"{type(event).__name__}-{self._stimuli}"
            self.event_log.append((sid, event))
            ctx = Context(sid, event.now, out)
            _HANDLERS[type(event)](self, event, ctx)
            run_recommendations(self, ctx)
            if self.validate:
                validate_state(self)
        return out.drain()

    # -------------------------------------------------------------- bookkeeping

    def new_task(self, key: Key) -> TaskState:
        """Create a released task for ``key``."""
        ts = TaskState(key)
        self.tasks[key] = ts
        self.counts["released"] += 1
        return ts

    def client(self, client: ClientId) -> ClientInfo:
        """The record of ``client``, created on first use."""
        cs = self.clients.get(client)
        if cs is None:
            cs = self.clients[client] = ClientInfo(client)
        return cs

    def add_worker(self, ws: WorkerInfo) -> None:
        """Register a new live worker."""
        self.workers[ws.address] = ws
        if ws.name and ws.name not in self.aliases:
            self.aliases[ws.name] = ws
        for name in ws.resources:
            self.resource_index.setdefault(name, {})[ws] = None
        self.pool.add(ws)

    def drop_worker(self, ws: WorkerInfo) -> None:
        """Unregister ``ws``: from now on nothing is decided for it or sent to it."""
        ws.alive = False
        del self.workers[ws.address]
        if self.aliases.get(ws.name) is ws:
            del self.aliases[ws.name]
        for name in ws.resources:
            holders = self.resource_index[name]
            del holders[ws]
            if not holders:
                del self.resource_index[name]
        self.pool.remove(ws)

    def next_worker_serial(self) -> int:
        """A number ordering workers by when they joined."""
        self._workers_seen += 1
        return self._workers_seen

    def next_assignment(self) -> int:
        """A number ordering task assignments (for round-robin placement)."""
        self._assignments += 1
        return self._assignments

    def add_replica(self, ts: TaskState, ws: WorkerInfo) -> None:
        """Record that ``ws`` holds ``ts``'s value."""
        if ws not in ts.who_has:
            ts.who_has[ws] = None
            ws.has_what[ts] = None
            ws.nbytes += ts.nbytes
            self.pool.touch(ws)

    def remove_replica(self, ts: TaskState, ws: WorkerInfo) -> None:
        """Record that ``ws`` no longer holds ``ts``'s value."""
        del ts.who_has[ws]
        del ws.has_what[ts]
        ws.nbytes -= ts.nbytes
        self.pool.touch(ws)

    def set_nbytes(self, ts: TaskState, nbytes: int) -> None:
        """Set the size of ``ts``'s value, keeping its holders' totals right."""
        diff = nbytes - ts.nbytes
        if diff:
            ts.nbytes = nbytes
            for ws in ts.who_has:
                ws.nbytes += diff
                self.pool.touch(ws)

    def record_transition(self, ts: TaskState, start: TaskStateName, ctx: Context) -> None:
        """Count and log that ``ts`` moved from ``start`` to its current state."""
        finish = ts.state
        self.counts[start] -= 1
        if finish != "forgotten":
            self.counts[finish] += 1
        self.transition_log.append(
            TransitionRecord(ts.key, start, finish, ctx.stimulus_id, ctx.now)
        )
