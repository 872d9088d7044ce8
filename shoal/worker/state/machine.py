"""``WorkerState``: the worker's pure state machine.

``handle(*events)`` is the only way in: each event goes to its handler, which updates
the tasks it names and returns recommendations (task → next state) and instructions.
The recommendations run through :data:`~shoal.worker.state.transitions.TRANSITIONS`
until none is left; then free transfer slots take pending fetches (``GatherDep``) and
free threads take queued tasks (``Execute``): first from the ``constrained`` queue, in
priority order, as long as the task at its head finds the resources it needs free
(:mod:`~shoal.worker.state.resources`), then from the ``ready`` queue, unless the worker
is paused (``PauseEvent``, memory is short: queued tasks wait for ``UnpauseEvent``,
fetches go on). Tasks with
resources thus never hold back tasks without, and a task needing more than this
worker has waits (the scheduler should not have sent it). With ``validate=True`` every invariant of
:mod:`~shoal.worker.state.invariants` is checked after every event.

Contract with the server that executes the instructions:

* values reported by an event (``ExecuteSuccess``, ``GatherDep*``, ``DataUpdated``)
  are in the store before the event is handled, and the instructions returned for an
  event are carried out before the next value is stored;
* every ``Execute`` is answered by one ``ExecuteSuccess``/``ExecuteFailure`` (or
  ``RescheduleTask``) and every ``GatherDep`` by one ``GatherDep*`` event naming its
  keys.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from shoal._types import Address, Key
from shoal.errors import InternalError
from shoal.protocol.messages import (
    AddKeys,
    StealResponse,
    TaskFailed,
    TaskFinished,
    WorkerStatus,
)
from shoal.worker.state import events as ev_
from shoal.worker.state.fetch import Fetcher
from shoal.worker.state.instructions import (
    DropData,
    Execute,
    GatherDep,
    Instruction,
    SendToScheduler,
)
from shoal.worker.state.invariants import validate as validate_state
from shoal.worker.state.model import (
    ALL_STATES,
    QUEUED_STATES,
    REPLICA_PRIORITY,
    TaskHeap,
    TaskState,
    TaskStateName,
)
from shoal.worker.state.resources import ResourcePool, normalize
from shoal.worker.state.transitions import TRANSITIONS, Recs, Result, give_back, maybe_release


class InvalidTransition(InternalError):
    """A recommendation asked for a transition the table does not allow."""


class WorkerState:
    """The state of one worker: every key it knows, and what to do next.

    ``nthreads`` tasks execute at once, and together hold at most ``resources`` (the
    worker's abstract resources, e.g. ``{"GPU": 2}``). Fetches are batched per peer up to
    ``transfer_limit_bytes``, with at most ``max_concurrent_fetches_per_worker``
    transfers per peer and ``max_concurrent_fetches`` in all. The event log and the
    transition log keep the last ``log_size`` entries each.
    """

    def __init__(
        self,
        *,
        address: Address,
        nthreads: int,
        resources: dict[str, float] | None = None,
        validate: bool = False,
        transfer_limit_bytes: int = 50 * 2**20,
        max_concurrent_fetches_per_worker: int = 1,
        max_concurrent_fetches: int = 10,
        log_size: int = 100_000,
        prefetch: int = 0,
    ) -> None:
        if nthreads < 1 or max_concurrent_fetches < 1 or max_concurrent_fetches_per_worker < 1:
            raise ValueError("nthreads and fetch limits must be at least 1")
        self.address = address
        self.nthreads = nthreads
        #: Short tasks (expected under ``SHORT_TASK`` seconds) that may wait on the
        #: threads' own queue, per thread, beyond the one each thread runs: a thread
        #: then goes from one tiny task to the next without a round trip through the
        #: event loop. They count as ``executing``.
        self.prefetch = max(prefetch, 0)
        self.validate = validate
        #: Every key known here.
        self.tasks: dict[Key, TaskState] = {}
        #: Tasks in ``ready`` and in ``constrained``, most urgent first; tasks in
        #: ``executing``.
        self.ready = TaskHeap()
        self.constrained = TaskHeap()
        self.executing: set[TaskState] = set()
        #: How many of them are not known to be short (see ``prefetch``).
        self.executing_long = 0
        #: The worker's resources: declared, and not held by executing tasks.
        self.resource_pool = ResourcePool(resources)
        #: Pending fetches, holders and transfers in flight.
        self.fetcher = Fetcher(
            transfer_limit_bytes=transfer_limit_bytes,
            max_concurrent_fetches_per_worker=max_concurrent_fetches_per_worker,
            max_concurrent_fetches=max_concurrent_fetches,
        )
        #: Number of known tasks per state (``forgotten`` excluded).
        self.counts: dict[TaskStateName, int] = dict.fromkeys(ALL_STATES, 0)
        #: Sum of ``nbytes`` over tasks in ``memory``.
        self.nbytes_in_memory = 0
        #: Short of memory: no task starts (``PauseEvent`` / ``UnpauseEvent``).
        self.paused = False
        #: The last events handled, for replay.
        self.stimulus_log: deque[ev_.Event] = deque(maxlen=log_size)
        #: ``(key, start, finish, stimulus_id, now)`` per transition and
        #: ``(key, event_name, stimulus_id, now)`` per event naming a key.
        self.log: deque[tuple[Any, ...]] = deque(maxlen=log_size)
        #: Number of transitions made so far.
        self.transition_counter = 0
        #: Called with ``(key, start, finish, stimulus_id)`` after each transition
        #: (the worker's plugins); ``None``, the default, costs nothing.
        self.transition_listener: Callable[[Key, str, str, str], None] | None = None
        self._next_id = 0
        self._seq = 0
        self._stimulus_id = ""
        self._now = 0.0

    def __repr__(self) -> str:
        return (
            f"<WorkerState {self.address!r} tasks={len(self.tasks)} "
            f"executing={len(self.executing)}/{self.nthreads} ready={len(self.ready)} "
            f"constrained={len(self.constrained)}{' paused' if self.paused else ''}>"
        )

    # ------------------------------------------------------------------ entry point

    def handle(self, *events: ev_.Event) -> list[Instruction]:
        """Handle ``events`` in order; return what the server must do, in order."""
        instructions: list[Instruction] = []
        for event in events:
            instructions.extend(self._handle_one(event))
        return instructions

    def _handle_one(self, event: ev_.Event) -> list[Instruction]:
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"WorkerState cannot handle {type(event).__name__}")
        self.stimulus_log.append(event)
        self._stimulus_id, self._now = event.stimulus_id, event.now
        for key in event.story_keys():
            self.log.append((key, event.name, event.stimulus_id, event.now))
        recs, instructions = handler(self, event)
        if recs:
            instructions += self._transitions(recs)
        if self.fetcher.data_needed:
            instructions += self._ensure_communicating()
        if self.ready or self.constrained:
            instructions += self._ensure_computing()
        if len(instructions) > 1:
            instructions = _coalesce(instructions)
        if self.validate:
            validate_state(self)
        return instructions

    # ------------------------------------------------------------------ transitions

    def _transitions(self, recs: Recs) -> list[Instruction]:
        """Apply recommendations, and those they lead to, until none is left."""
        instructions: list[Instruction] = []
        # Most events make one recommendation at a time: follow such a chain without the
        # ordered table below.
        while len(recs) == 1:
            ((ts, finish),) = recs.items()
            if not self._should_transition(ts, finish):
                return instructions
            recs, new_instructions = self._transition(ts, finish)
            instructions += new_instructions
        if not recs:
            return instructions
        # First in, first out, a new recommendation for a task keeping its place. Not a
        # dict with next(iter(...)): each look would skip every entry popped before it,
        # quadratic in a batch (25,000 released keys: 235 ms instead of 3).
        remaining = OrderedDict(recs)
        while remaining:
            ts, finish = remaining.popitem(last=False)
            if not self._should_transition(ts, finish):
                continue
            new_recs, new_instructions = self._transition(ts, finish)
            instructions += new_instructions
            remaining.update(new_recs)
        return instructions

    @staticmethod
    def _should_transition(ts: TaskState, finish: TaskStateName) -> bool:
        """Whether the recommendation ``finish`` for ``ts`` still holds."""
        if ts.state in (finish, "forgotten"):
            return False
        # a task recommended to be forgotten may have found a new purpose meanwhile
        return finish != "forgotten" or (not ts.needed and ts.state in ("released", "memory"))

    def _transition(self, ts: TaskState, finish: TaskStateName) -> Result:
        start = ts.state
        func = TRANSITIONS.get((start, finish))
        if func is not None:
            recs, instructions = func(self, ts)
            self.counts[start] -= 1
            if finish != "forgotten":
                self.counts[finish] += 1
            ts.state = finish
            self.transition_counter += 1
            self.log.append((ts.key, start, finish, self._stimulus_id, self._now))
            if self.transition_listener is not None:
                self.transition_listener(ts.key, start, finish, self._stimulus_id)
            return recs, instructions
        if (start, "released") in TRANSITIONS and ("released", finish) in TRANSITIONS:
            recs, instructions = self._transition(ts, "released")
            recs.pop(ts, None)  # it is on its way to ``finish``, not to ``forgotten``
            more_recs, more_instructions = self._transition(ts, finish)
            recs.update(more_recs)
            return recs, instructions + more_instructions
        raise InvalidTransition(f"{ts.key!r}: {start} -> {finish} is not allowed")

    def _ensure_computing(self) -> list[Instruction]:
        instructions: list[Instruction] = []
        if self.paused:
            return instructions
        pool = self.resource_pool
        while self.constrained and len(self.executing) < self.nthreads:
            ts = self.constrained.peek()
            assert ts.resources is not None
            if not pool.fits(ts.resources):
                break  # the most urgent one waits for its resources; so do the others
            _, more = self._transition(ts, "executing")
            instructions += more
        while self.ready and len(self.executing) < self.nthreads:
            _, more = self._transition(self.ready.peek(), "executing")
            instructions += more
        # Every thread busy with a short task: queue more short ones behind them (not
        # behind a long one: waiting in ``ready``, a task can still be stolen).
        if self.prefetch and self.ready and not self.constrained and not self.executing_long:
            limit = self.nthreads * (1 + self.prefetch)
            while self.ready and len(self.executing) < limit:
                ts = self.ready.peek()
                if not ts.short:
                    break  # the most urgent is not short: it waits for a free thread
                _, more = self._transition(ts, "executing")
                instructions += more
        return instructions

    def _ensure_communicating(self) -> list[Instruction]:
        instructions: list[Instruction] = []
        for worker, tasks in self.fetcher.plan():
            transfer = self.fetcher.open_transfer(worker, tasks)
            for ts in tasks:
                self._transition(ts, "flight")
            instructions.append(GatherDep(worker, transfer.keys, transfer.nbytes))
        return instructions

    # ------------------------------------------------------------------ helpers for edges

    def push_ready(self, ts: TaskState) -> None:
        """Queue ``ts`` for a thread, after every task of the same priority."""
        self._seq += 1
        self.ready.add(ts, self._seq)

    def push_constrained(self, ts: TaskState) -> None:
        """Queue ``ts`` for a thread and its resources, after tasks of the same priority."""
        self._seq += 1
        self.constrained.add(ts, self._seq)

    def make_execute(self, ts: TaskState, dependencies: tuple[Key, ...]) -> Execute:
        """The ``Execute`` instruction for ``ts``."""
        return Execute(key=ts.key, run_spec=ts.run_spec, dependencies=dependencies)

    def make_task_failed(self, ts: TaskState) -> TaskFailed:
        """The ``TaskFailed`` message for ``ts`` (in ``error``)."""
        return TaskFailed(
            key=ts.key,
            exception=ts.exception,
            traceback=ts.traceback,
            exception_text=ts.exception_text,
            traceback_text=ts.traceback_text,
            start=ts.start,
            stop=ts.stop,
        )

    def make_task_finished(self, ts: TaskState) -> SendToScheduler:
        """The ``TaskFinished`` report of ``ts`` (in memory), with its small value once."""
        assert ts.nbytes is not None
        value, ts.wire_value = ts.wire_value, None  # sent once, then not kept
        return SendToScheduler(
            TaskFinished(
                key=ts.key,
                nbytes=ts.nbytes,
                type_name=ts.type_name,
                start=ts.start,
                stop=ts.stop,
                value=value,
            )
        )

    def _new_task(self, key: Key, priority: tuple[int | float, ...]) -> TaskState:
        self._next_id += 1
        ts = TaskState(key=key, id=self._next_id, priority=priority)
        self.tasks[key] = ts
        self.counts["released"] += 1
        return ts

    def _add_holders(self, ts: TaskState, holders: Iterable[Address]) -> None:
        for worker in holders:
            if worker != self.address:
                self.fetcher.add_holder(ts, worker)
            elif (
                ts.state in ("released", "fetch", "flight", "missing", "error")
                and worker not in ts.failed_peers
            ):
                # The scheduler thinks we hold it, but we do not: say so if we give up.
                ts.failed_peers += (worker,)

    # ------------------------------------------------------------------ handlers

    def _handle_compute_task(self, ev: ev_.ComputeTaskEvent) -> Result:
        recs: Recs = {}
        ts = self.tasks.get(ev.key)
        if ts is None:
            ts = self._new_task(ev.key, ev.priority)
        start = ts.state
        ts.wanted = ts.assigned = True
        if start == "memory":
            return recs, [self.make_task_finished(ts)]
        if start == "error":
            return recs, [SendToScheduler(self.make_task_failed(ts))]
        ts.run_spec = ev.run_spec
        if start in ("executing", "flight"):
            return recs, []  # the result, when it comes, is reported
        ts.duration = ev.duration
        new = start not in QUEUED_STATES
        if new:
            ts.priority = ev.priority
            ts.resources = normalize(ev.resources)
            recs[ts] = "waiting"
        for dep_key, holders in ev.who_has.items():
            if dep_key == ev.key:
                continue
            dep = self.tasks.get(dep_key)
            if not new and (dep is None or dep not in ts.dependencies):
                continue  # its dependencies were settled by the first ComputeTask
            if dep is None:
                dep = self._new_task(dep_key, ev.priority)
            elif ev.priority < dep.priority and dep.state in ("fetch", "missing"):
                self.fetcher.reprioritize(dep, ev.priority)
            if dep.state != "memory":
                if dep_key in ev.nbytes:
                    dep.nbytes = ev.nbytes[dep_key]
                self._add_holders(dep, holders)
            ts.dependencies.add(dep)
            dep.dependents.add(ts)
            if dep.state in ("released", "error"):
                recs[dep] = "fetch" if dep.who_has else "missing"
            elif dep.state == "missing" and dep.who_has:
                recs[dep] = "fetch"
        return recs, []

    def _handle_free_keys(self, ev: ev_.FreeKeysEvent) -> Result:
        recs: Recs = {}
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is not None:
                ts.wanted = ts.assigned = False
                maybe_release(ts, recs)
        return recs, []

    def _handle_steal_request(self, ev: ev_.StealRequestEvent) -> Result:
        ts = self.tasks.get(ev.key)
        state = ts.state if ts is not None else None
        recs: Recs = {}
        instructions: list[Instruction] = [SendToScheduler(StealResponse(key=ev.key, state=state))]
        if ts is not None and ts.assigned and ts.state in QUEUED_STATES:
            # Not started: drop it as FreeKeys would (with its dependencies nobody else
            # needs, and their pending fetches). The response tells the scheduler, so no
            # Reschedule for the task itself; a local task waiting on it cannot run here
            # any more and goes back, as when a dependency is missing.
            ts.assigned = False
            give_back(ts, recs, instructions)
        return recs, instructions

    def _handle_acquire_replicas(self, ev: ev_.AcquireReplicasEvent) -> Result:
        recs: Recs = {}
        have: dict[Key, int] = {}
        for key, holders in ev.who_has.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = self._new_task(key, REPLICA_PRIORITY)
            if ts.state == "error":
                continue  # it failed here; the scheduler knows
            ts.wanted = True
            if ts.state == "memory":
                assert ts.nbytes is not None
                have[key] = ts.nbytes
                continue
            if key in ev.nbytes:
                ts.nbytes = ev.nbytes[key]
            self._add_holders(ts, holders)
            if ts.state == "released":
                recs[ts] = "fetch" if ts.who_has else "missing"
            elif ts.state == "missing" and ts.who_has:
                recs[ts] = "fetch"
        instructions: list[Instruction] = []
        if have:
            instructions.append(SendToScheduler(AddKeys(keys=tuple(have), nbytes=have)))
        return recs, instructions

    def _handle_execute_success(self, ev: ev_.ExecuteSuccess) -> Result:
        ts = self.tasks.get(ev.key)
        if ts is None or ts.state != "executing":
            # Not ours (any more): drop the value the server stored, unless it is ours.
            if ts is None or ts.state != "memory":
                return {}, [DropData(keys=(ev.key,))]
            return {}, []
        ts.nbytes, ts.type_name = ev.nbytes, ev.type_name
        ts.start, ts.stop = ev.start, ev.stop
        ts.wire_value = ev.value
        if ts.needed:
            return {ts: "memory"}, []
        return {ts: "released"}, [DropData(keys=(ev.key,))]

    def _handle_execute_failure(self, ev: ev_.ExecuteFailure) -> Result:
        ts = self.tasks.get(ev.key)
        if ts is None or ts.state != "executing":
            return {}, []
        ts.start, ts.stop = ev.start, ev.stop
        if ts.scattered_nbytes is not None:
            return self._keep_scattered_value(ts)
        if not ts.needed:
            return {ts: "released"}, []
        ts.exception, ts.traceback = ev.exception, ev.traceback
        ts.exception_text, ts.traceback_text = ev.exception_text, ev.traceback_text
        return {ts: "error"}, []

    @staticmethod
    def _keep_scattered_value(ts: TaskState) -> Result:
        """A run without a result ended, but a value was put here while it ran."""
        assert ts.scattered_nbytes is not None
        ts.nbytes = ts.scattered_nbytes
        if ts.needed:
            return {ts: "memory"}, []
        return {ts: "released"}, [DropData(keys=(ts.key,))]

    def _handle_reschedule_task(self, ev: ev_.RescheduleTask) -> Result:
        ts = self.tasks.get(ev.key)
        recs: Recs = {}
        instructions: list[Instruction] = []
        if ts is None or ts.state != "executing":
            return recs, instructions
        if ts.scattered_nbytes is not None:
            return self._keep_scattered_value(ts)
        give_back(ts, recs, instructions)
        return recs, instructions

    def _handle_gather_dep_success(self, ev: ev_.GatherDepSuccess) -> Result:
        return self._gather_done(ev.worker, ev.data_nbytes, (), network_failure=False)

    def _handle_gather_dep_missing(self, ev: ev_.GatherDepMissing) -> Result:
        return self._gather_done(ev.worker, ev.keys_received, ev.missing, network_failure=False)

    def _handle_gather_dep_network_failure(self, ev: ev_.GatherDepNetworkFailure) -> Result:
        return self._gather_done(ev.worker, {}, ev.keys, network_failure=True)

    def _handle_gather_dep_failed(self, ev: ev_.GatherDepFailed) -> Result:
        transfer = self.fetcher.close_transfer(ev.worker, ev.keys)
        recs: Recs = {}
        instructions: list[Instruction] = []
        failed: list[TaskState] = []
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is None or transfer is None or ts.state != "flight":
                continue
            if ts.transfer_id != transfer.id:
                continue
            # Whatever needs it here fails; the key itself is let go (not refetched).
            stack = sorted(ts.dependents, key=lambda d: d.id, reverse=True)
            while stack:
                t = stack.pop()
                if t in failed:
                    continue
                failed.append(t)
                if t.assigned:
                    instructions.append(
                        SendToScheduler(
                            TaskFailed(
                                key=t.key,
                                exception=ev.exception,
                                traceback=ev.traceback,
                                exception_text=ev.exception_text,
                                traceback_text=ev.traceback_text,
                                start=self._now,
                                stop=self._now,
                            )
                        )
                    )
                t.wanted = t.assigned = False
                recs[t] = "released"
                stack.extend(sorted(t.dependents, key=lambda d: d.id, reverse=True))
            ts.wanted = False
            recs[ts] = "released"
        return recs, instructions

    def _gather_done(
        self,
        worker: Address,
        received: dict[Key, int],
        failed: Iterable[Key],
        *,
        network_failure: bool,
    ) -> Result:
        """Close the transfer from ``worker``; place what came and retry what did not."""
        recs: Recs = {}
        instructions: list[Instruction] = []
        drop: list[Key] = []
        have: dict[Key, int] = {}
        transfer = self.fetcher.close_transfer(worker, [*received, *failed])
        asked = transfer.keys if transfer is not None else ()
        for key in dict.fromkeys([*asked, *received]):
            ts = self.tasks.get(key)
            ours = (
                ts is not None
                and transfer is not None
                and ts.state == "flight"
                and ts.transfer_id == transfer.id
            )
            if key in received:
                if ts is None or not ours:
                    # A value we did not (or no longer) ask for, unless the store holds
                    # this key for another reason.
                    if ts is None or (ts.state != "memory" and ts.scattered_nbytes is None):
                        drop.append(key)
                    continue
                ts.nbytes = received[key]
                if not ts.needed:
                    recs[ts] = "released"
                    drop.append(key)
                    continue
                recs[ts] = "memory"
                if ts.assigned:
                    ts.start = ts.stop = self._now
                    instructions.append(self.make_task_finished(ts))
                else:
                    ts.wanted = True
                    have[key] = received[key]
            elif ts is not None and ours:
                # The peer lacked it (or could not be reached).
                self.fetcher.remove_holder(ts, worker)
                ts.failed_peers += (worker,)
                recs[ts] = self._next_after_failed_fetch(ts)
        if network_failure:
            # Ask the peer for nothing else: drop it from every who_has.
            for ts in self.fetcher.forget_peer(worker):
                if ts.state in ("fetch", "flight") and worker not in ts.failed_peers:
                    ts.failed_peers += (worker,)
                if ts.state == "fetch" and not ts.who_has:
                    recs[ts] = "missing"
        if have:
            instructions.append(SendToScheduler(AddKeys(keys=tuple(have), nbytes=have)))
        if drop:
            instructions.append(DropData(keys=tuple(drop)))
        return recs, instructions

    @staticmethod
    def _next_after_failed_fetch(ts: TaskState) -> TaskStateName:
        if not ts.needed:
            return "released"
        if ts.who_has:
            return "fetch"
        return "missing"

    def _handle_data_updated(self, ev: ev_.DataUpdated) -> Result:
        # Mark every key wanted first, so that no cascade drops a value just stored.
        # Then one key at a time: a key entering memory wakes up its dependents, which
        # must not override a pending recommendation for a dependent scattered too.
        tasks = []
        for key, nbytes in ev.data_nbytes.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = self._new_task(key, (0,))
            ts.wanted = True
            tasks.append((ts, nbytes))
        instructions: list[Instruction] = []
        for ts, nbytes in tasks:
            if ts.state == "memory":
                assert ts.nbytes is not None
                self.nbytes_in_memory += nbytes - ts.nbytes
                ts.nbytes = nbytes
            elif ts.state == "executing":
                ts.scattered_nbytes = nbytes  # applied when the run ends
            else:
                ts.nbytes = nbytes
                instructions += self._transitions({ts: "memory"})
        return {}, instructions

    def _handle_pause(self, ev: ev_.PauseEvent) -> Result:
        if self.paused:
            return {}, []
        self.paused = True
        return {}, [SendToScheduler(WorkerStatus(status="paused"))]

    def _handle_unpause(self, ev: ev_.UnpauseEvent) -> Result:
        if not self.paused:
            return {}, []
        self.paused = False  # handle() then starts what is ready
        return {}, [SendToScheduler(WorkerStatus(status="running"))]

    # ------------------------------------------------------------------ queries

    @property
    def executing_count(self) -> int:
        """Number of tasks running on threads."""
        return len(self.executing)

    @property
    def ready_count(self) -> int:
        """Number of tasks without resources waiting for a thread."""
        return len(self.ready)

    @property
    def constrained_count(self) -> int:
        """Number of tasks waiting for their resources (and a thread)."""
        return len(self.constrained)

    @property
    def total_resources(self) -> dict[str, float]:
        """The resources this worker declares (do not modify)."""
        return self.resource_pool.total

    @property
    def available_resources(self) -> dict[str, float]:
        """The resources not held by executing tasks (do not modify)."""
        return self.resource_pool.available

    def memory_keys(self) -> set[Key]:
        """The keys whose values are in the store (O(tasks))."""
        return {key for key, ts in self.tasks.items() if ts.state == "memory"}

    def story(self, *keys: Key) -> list[tuple[Any, ...]]:
        """What happened to ``keys``: their events and transitions, oldest first."""
        wanted = set(keys)
        return [entry for entry in self.log if entry[0] in wanted]

    def snapshot(self) -> dict[str, Any]:
        """Plain-data summary for heartbeats and dashboards (O(states))."""
        return {
            "address": self.address,
            "nthreads": self.nthreads,
            "tasks": len(self.tasks),
            "states": {state: n for state, n in self.counts.items() if n},
            "executing": len(self.executing),
            "ready": len(self.ready),
            "constrained": len(self.constrained),
            "paused": self.paused,
            "available_resources": dict(self.resource_pool.available),
            "memory_bytes": self.nbytes_in_memory,
            "in_flight_bytes": self.fetcher.in_flight_bytes,
            "in_flight_transfers": len(self.fetcher.transfers),
            "peers_pending": len(self.fetcher.data_needed),
        }


def _coalesce(instructions: list[Instruction]) -> list[Instruction]:
    """Merge every DropData, and every AddKeys message, into the first of its kind."""
    out: list[Instruction] = []
    drop_at = add_at = -1
    drop: dict[Key, None] = {}
    add: dict[Key, int] = {}
    for ins in instructions:
        if isinstance(ins, DropData):
            if drop_at < 0:
                drop_at = len(out)
                out.append(ins)
            drop.update(dict.fromkeys(ins.keys))
        elif isinstance(ins, SendToScheduler) and isinstance(ins.msg, AddKeys):
            if add_at < 0:
                add_at = len(out)
                out.append(ins)
            add.update((k, ins.msg.nbytes[k]) for k in ins.msg.keys)
        else:
            out.append(ins)
    if drop_at >= 0:
        out[drop_at] = DropData(keys=tuple(drop))
    if add_at >= 0:
        out[add_at] = SendToScheduler(AddKeys(keys=tuple(add), nbytes=add))
    return out


_HANDLERS: dict[type[ev_.Event], Callable[[WorkerState, Any], Result]] = {
    ev_.ComputeTaskEvent: WorkerState._handle_compute_task,
    ev_.FreeKeysEvent: WorkerState._handle_free_keys,
    ev_.StealRequestEvent: WorkerState._handle_steal_request,
    ev_.AcquireReplicasEvent: WorkerState._handle_acquire_replicas,
    ev_.ExecuteSuccess: WorkerState._handle_execute_success,
    ev_.ExecuteFailure: WorkerState._handle_execute_failure,
    ev_.RescheduleTask: WorkerState._handle_reschedule_task,
    ev_.GatherDepSuccess: WorkerState._handle_gather_dep_success,
    ev_.GatherDepMissing: WorkerState._handle_gather_dep_missing,
    ev_.GatherDepNetworkFailure: WorkerState._handle_gather_dep_network_failure,
    ev_.GatherDepFailed: WorkerState._handle_gather_dep_failed,
    ev_.DataUpdated: WorkerState._handle_data_updated,
    ev_.PauseEvent: WorkerState._handle_pause,
    ev_.UnpauseEvent: WorkerState._handle_unpause,
}
