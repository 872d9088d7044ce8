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

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from shoal._types import Address, ClientId, Key, StimulusId
from shoal.scheduler.state import clients, moves, recovery, stealing, workers
from shoal.scheduler.state.events import (
    ClientConnected,
    ClientDisconnected,
    DataMissing,
    DataScattered,
    ErredRestored,
    Event,
    FireAndForgetRequested,
    GraphSubmitted,
    KeysCancelled,
    KeysDesired,
    KeysReleased,
    RebalanceRequested,
    ReplicasAdded,
    ReplicationRequested,
    RescheduleRequested,
    RestartRequested,
    RetirementRequested,
    StealResponded,
    TaskFailedEvent,
    TaskFinishedEvent,
    Tick,
    WorkerAdded,
    WorkerRemoved,
    WorkerStatusChanged,
)
from shoal.scheduler.state.invariants import validate as validate_state
from shoal.scheduler.state.model import (
    LIVE_STATES,
    ClientInfo,
    Context,
    TaskGroup,
    TaskPrefix,
    TaskState,
    TaskStateName,
    TransitionRecord,
    WorkerInfo,
)
from shoal.scheduler.state.names import key_group, key_prefix
from shoal.scheduler.state.outgoing import Outbox, Outgoing
from shoal.scheduler.state.placement import TaskQueue, WorkerPool, task_slots
from shoal.scheduler.state.transitions import run_recommendations


def _tick(s: SchedulerState, ev: Tick, ctx: Context) -> None:
    """Periodic work: balance load, retry copies, expire tasks no worker can run."""
    if s.work_stealing:
        stealing.balance(s, ctx)
    moves.tick(s, ctx)
    recovery.expire_unrunnable(s, ctx)


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
    StealResponded: stealing.steal_responded,
    RetirementRequested: moves.retirement_requested,
    ReplicationRequested: moves.replication_requested,
    RebalanceRequested: moves.rebalance_requested,
    Tick: _tick,
    WorkerStatusChanged: workers.worker_status_changed,
    RestartRequested: recovery.restart,
    ErredRestored: recovery.erred_restored,
}


_new_tuple = tuple.__new__


class SchedulerState:
    """Every task, worker and client the scheduler knows, and the rules that move them.

    ``allowed_failures``: how many workers may die while running one task before it
    errs with ``KilledWorker``. ``validate``: check every invariant after each event
    (tests always do). ``log_size``: how many events and transitions the logs keep (and
    how many submitted tasks, at most, the event log's graphs hold).
    ``worker_saturation``: root tasks sent to a worker at once, per thread, before the
    rest are queued (``inf``: no queuing). ``unknown_duration``: seconds assumed for a
    task whose prefix never finished yet. ``bandwidth``: bytes per second assumed
    between workers (work stealing). ``no_workers_timeout``: seconds a task may wait
    while no connected worker can run it before it errs (``None``: forever).
    ``work_stealing``: let idle workers take tasks from busy ones at each ``Tick``.
    ``pipeline``: seconds of expected work per thread a worker may hold beyond its
    saturation limit, so tiny root tasks are not sent one round trip at a time.
    """

    def __init__(
        self,
        *,
        allowed_failures: int = 3,
        validate: bool = False,
        log_size: int = 100_000,
        worker_saturation: float = 1.1,
        unknown_duration: float = 0.5,
        bandwidth: float = 100e6,
        no_workers_timeout: float | None = None,
        work_stealing: bool = True,
        pipeline: float = 0.02,
    ) -> None:
        if not worker_saturation > 0:
            raise ValueError(f"worker_saturation must be > 0, got {worker_saturation}")
        self.allowed_failures = allowed_failures
        self.validate = validate
        self.worker_saturation = float(worker_saturation)
        #: whether root tasks are queued (``worker_saturation`` is finite)
        self.queuing = not math.isinf(self.worker_saturation)
        self.unknown_duration = unknown_duration
        self.bandwidth = bandwidth
        self.no_workers_timeout = no_workers_timeout
        self.work_stealing = work_stealing
        self.pipeline = pipeline
        #: every task not forgotten, by key
        self.tasks: dict[Key, TaskState] = {}
        #: live workers by address, and by name
        self.workers: dict[Address, WorkerInfo] = {}
        self.aliases: dict[str, WorkerInfo] = {}
        #: live workers declaring each resource
        self.resource_index: dict[str, dict[WorkerInfo, None]] = {}
        self.clients: dict[ClientId, ClientInfo] = {}
        #: tasks in the no-worker state (with when they got there), retried when a
        #: worker joins
        self.unrunnable: dict[TaskState, float] = {}
        #: root tasks waiting for a free worker slot, most urgent first
        self.queued = TaskQueue()
        #: accepting workers with a free slot for a root task
        self.open_workers: dict[WorkerInfo, None] = {}
        #: the worker the last root task was placed on (see :func:`.transitions.place_root`)
        self.root_worker: WorkerInfo | None = None
        #: sum of the threads of live workers
        self.total_nthreads = 0
        #: task groups by name, prefixes (with learned run times) by name
        self.groups: dict[str, TaskGroup] = {}
        self.prefixes: dict[str, TaskPrefix] = {}
        #: steal requests in flight, by task (see :mod:`.stealing`)
        self.steals: dict[TaskState, stealing.Steal] = {}
        #: processing tasks whose worker said they already run: not worth asking again
        self.unstealable: dict[TaskState, None] = {}
        #: copies asked for by retirements, replicate and rebalance (see :mod:`.moves`)
        self.pending_copies: dict[TaskState, dict[moves.Copy, None]] = {}
        self.moves: dict[str, moves.MoveRequest] = {}
        self.retirements: dict[str, moves.Retirement] = {}
        #: number of tasks in each live state
        self.counts: dict[TaskStateName, int] = dict.fromkeys(LIVE_STATES, 0)
        self.pool = WorkerPool()
        #: ``(stimulus_id, event)`` for each handled event, oldest first; it also holds
        #: at most ``log_size`` submitted tasks (see :meth:`_log_event`)
        self.event_log: deque[tuple[StimulusId, Event]] = deque(maxlen=log_size)
        self._log_size = log_size
        self._logged_tasks = 0
        self.transition_log: deque[TransitionRecord] = deque(maxlen=log_size)
        #: called with each transition and the event being handled (the server's plugins)
        self.transition_listener: Callable[[TransitionRecord, Event | None], None] | None = None
        self.current_event: Event | None = None
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
            self._log_event(sid, event)
            self.current_event = event
            ctx = Context(sid, event.now, out)
            _HANDLERS[type(event)](self, event, ctx)
            run_recommendations(self, ctx)
            if self.moves or self.retirements:
                moves.progress(self, ctx)
                run_recommendations(self, ctx)
            if self.validate:
                validate_state(self)
        self.current_event = None
        return out.drain()

    # -------------------------------------------------------------- bookkeeping

    def new_task(self, key: Key) -> TaskState:
        """Create a released task for ``key``."""
        name = key_group(key)
        tg = self.groups.get(name)
        if tg is None:
            prefix_name = key_prefix(key)
            tp = self.prefixes.get(prefix_name)
            if tp is None:
                tp = self.prefixes[prefix_name] = TaskPrefix(prefix_name)
            tg = self.groups[name] = TaskGroup(name, tp)
        tg.size += 1
        ts = TaskState(key, tg)
        self.tasks[key] = ts
        self.counts["released"] += 1
        return ts

    def forget_task(self, ts: TaskState) -> None:
        """Drop ``ts`` (now ``forgotten``) from the books."""
        del self.tasks[ts.key]
        tg = ts.group
        tg.size -= 1
        if not tg.size:
            del self.groups[tg.name]

    def expected_duration(self, ts: TaskState) -> float:
        """Seconds ``ts`` is expected to run: its prefix's average, else a default."""
        duration = ts.group.prefix.duration
        return duration if duration >= 0 else self.unknown_duration

    def update_accepting(self, ws: WorkerInfo) -> None:
        """Recompute whether ``ws`` takes new work (after ``paused``/``retiring`` change)."""
        ws.accepting = ws.alive and not ws.paused and not ws.retiring
        self.workload_changed(ws)

    def workload_changed(self, ws: WorkerInfo) -> None:
        """``ws``'s tasks changed, or whether it accepts work: refresh placement books."""
        self.pool.touch(ws)
        if ws.alive and task_slots(self, ws) > 0:
            self.open_workers[ws] = None
        else:
            self.open_workers.pop(ws, None)

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
        self.total_nthreads += ws.nthreads
        if self.queuing:
            # (the small epsilon keeps 1.1 * 50 = 55.000000000000007 from rounding up to 56)
            ws.slot_limit = max(math.ceil(self.worker_saturation * ws.nthreads - 1e-9), 1)
        self.pool.add(ws)
        self.workload_changed(ws)

    def drop_worker(self, ws: WorkerInfo) -> None:
        """Unregister ``ws``: from now on nothing is decided for it or sent to it."""
        ws.alive = ws.accepting = False
        del self.workers[ws.address]
        if self.aliases.get(ws.name) is ws:
            del self.aliases[ws.name]
        for name in ws.resources:
            holders = self.resource_index[name]
            del holders[ws]
            if not holders:
                del self.resource_index[name]
        self.total_nthreads -= ws.nthreads
        self.pool.remove(ws)
        self.open_workers.pop(ws, None)
        if self.root_worker is ws:
            self.root_worker = None

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
            ts.add_holder(ws)
            ws.has_what[ts] = None
            ws.nbytes += ts.nbytes
            self.pool.touch(ws)

    def remove_replica(self, ts: TaskState, ws: WorkerInfo) -> None:
        """Record that ``ws`` no longer holds ``ts``'s value."""
        ts.drop_holder(ws)
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

    def _log_event(self, sid: StimulusId, event: Event) -> None:
        """Append to the event log, dropping the oldest events while the graphs it holds
        add up to more than ``log_size`` tasks (but keeping the newest event). Without
        that cap, a million-task graph's run specs would stay in memory long after its
        tasks are gone, until ``log_size`` more events had pushed it out."""
        log = self.event_log
        if not log.maxlen:
            return  # no log kept
        if len(log) == log.maxlen:  # the append drops the oldest
            self._logged_tasks -= _task_count(log[0][1])
        log.append((sid, event))
        self._logged_tasks += _task_count(event)
        while self._logged_tasks > self._log_size and len(log) > 1:
            self._logged_tasks -= _task_count(log.popleft()[1])

    def record_transition(self, ts: TaskState, start: TaskStateName, ctx: Context) -> None:
        """Count and log that ``ts`` moved from ``start`` to its current state."""
        finish = ts.state
        self.counts[start] -= 1
        if finish != "forgotten":
            self.counts[finish] += 1
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (a third of this call)
        record = _new_tuple(TransitionRecord, (ts.key, start, finish, ctx.stimulus_id, ctx.now))
        self.transition_log.append(record)
        if self.transition_listener is not None:
            self.transition_listener(record, self.current_event)


def _task_count(event: Event) -> int:
    """How many task specs ``event`` carries (and the event log keeps alive)."""
    return len(event.tasks) if type(event) is GraphSubmitted else 0
