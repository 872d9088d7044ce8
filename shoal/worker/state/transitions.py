"""The worker's transition table: ``(start, finish) -> function``, one function per edge.

Each function receives the :class:`~shoal.worker.state.machine.WorkerState` and the
task while the task is still in ``start``; it updates the bookkeeping of both states
and returns further recommendations and instructions. The machine then sets
``ts.state = finish``, counts it, and logs ``(key, start, finish, stimulus_id, now)``.

The paths of a key, in short (``state_diagram()`` draws the whole table)::

    computed here:  released → waiting → ready | constrained → executing → memory | error
    fetched here:   released → fetch ⇄ flight → memory | missing

A task with ``resources`` goes to ``constrained`` instead of ``ready``; it starts only
when its resources are free (:mod:`~shoal.worker.state.resources`), and gives them back
on every edge out of ``executing``.

A pair that is not in the table is walked through ``released`` (``fetch → waiting``
is ``fetch → released → waiting``), as distributed does. ``released`` is transient: by
the end of every ``handle()`` call no task is left in it.

Who is responsible for what:

* a task leaving a computing state (``waiting``, ``ready``, ``constrained``,
  ``executing``) unlinks itself from its dependencies and lets go of those nobody
  needs any more (:func:`maybe_release`);
* a dependency that will never be in memory here (``missing``, or its computation
  failed) gives its waiting dependents back to the scheduler (:func:`give_back`);
* a task entering ``memory`` wakes its dependents up;
* a task entering ``executing`` takes its resources, and a task leaving it gives them
  back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from shoal.protocol.messages import MissingData, Reschedule
from shoal.worker.state.instructions import DropData, Instruction, SendToScheduler
from shoal.worker.state.model import TaskState, TaskStateName

if TYPE_CHECKING:
    from shoal.worker.state.machine import WorkerState

#: Recommendations: the next state for some tasks (insertion-ordered).
Recs: TypeAlias = dict[TaskState, TaskStateName]
#: What a transition function returns.
Result: TypeAlias = tuple[Recs, list[Instruction]]
#: A transition function.
TransitionFunction: TypeAlias = Callable[["WorkerState", TaskState], Result]


# --------------------------------------------------------------------- helpers


def maybe_release(ts: TaskState, recs: Recs) -> None:
    """Recommend dropping ``ts`` if nobody needs it and no work on it is under way."""
    if ts.needed:
        return
    if ts.state in ("released", "memory"):
        recs[ts] = "forgotten"  # a value in memory goes in one step
    elif ts.state not in ("executing", "flight", "forgotten"):
        recs[ts] = "released"


def give_back(ts: TaskState, recs: Recs, instructions: list[Instruction]) -> None:
    """Give ``ts`` back to the scheduler (``Reschedule``) and drop it here.

    Whatever waits on ``ts`` here can no longer run here either and goes back too.
    """
    stack = [ts]
    seen: set[TaskState] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t.assigned:
            instructions.append(SendToScheduler(Reschedule(key=t.key)))
        t.wanted = t.assigned = False
        recs[t] = "released"
        stack.extend(sorted(t.dependents, key=lambda d: d.id, reverse=True))


def _give_back_dependents(ts: TaskState, recs: Recs, instructions: list[Instruction]) -> None:
    for dependent in sorted(ts.dependents, key=lambda d: d.id):
        give_back(dependent, recs, instructions)


def _unlink_dependencies(ts: TaskState, recs: Recs) -> None:
    """``ts`` stops computing: it no longer needs its dependencies."""
    for dep in sorted(ts.dependencies, key=lambda d: d.id):
        dep.dependents.discard(ts)
        maybe_release(dep, recs)
    ts.dependencies.clear()
    ts.waiting_for_data.clear()


def _runnable(ts: TaskState) -> TaskStateName:
    """Where a task goes once every dependency is in memory."""
    return "constrained" if ts.resources else "ready"


def _enter_memory(ws: WorkerState, ts: TaskState, recs: Recs) -> None:
    assert ts.nbytes is not None, ts
    ws.nbytes_in_memory += ts.nbytes
    ts.failed_peers = ()
    for dependent in sorted(ts.dependents, key=lambda d: d.id):
        dependent.waiting_for_data.discard(ts)
        if not dependent.waiting_for_data and dependent.state == "waiting":
            recs[dependent] = _runnable(dependent)


def _enter_executing(ws: WorkerState, ts: TaskState) -> None:
    ws.executing.add(ts)
    if not ts.short:
        ws.executing_long += 1


def _leave_executing(ws: WorkerState, ts: TaskState) -> None:
    if ts in ws.executing:
        ws.executing.remove(ts)
        if not ts.short:
            ws.executing_long -= 1
    if ts.resources:
        ws.resource_pool.release(ts.resources)


def _enter_missing(ts: TaskState) -> Result:
    recs: Recs = {}
    instructions: list[Instruction] = [
        SendToScheduler(MissingData(key=ts.key, errant_worker=w)) for w in ts.failed_peers
    ]
    ts.failed_peers = ()
    if ts.assigned:
        give_back(ts, recs, instructions)  # and whatever waits on it
    else:
        _give_back_dependents(ts, recs, instructions)
    return recs, instructions


def _after_release(ts: TaskState) -> Result:
    recs: Recs = {}
    if not ts.needed:
        recs[ts] = "forgotten"
    return recs, []


# --------------------------------------------------------------------- from released


def _transition_released_waiting(ws: WorkerState, ts: TaskState) -> Result:
    # ComputeTask for a new key, or for one we were fetching: compute it here.
    recs: Recs = {}
    instructions: list[Instruction] = []
    if any(dep.state == "missing" and not dep.who_has for dep in ts.dependencies):
        # A dependency has no reachable holder: let the scheduler place it afresh.
        give_back(ts, recs, instructions)
        return recs, instructions
    ts.waiting_for_data = {dep for dep in ts.dependencies if dep.state != "memory"}
    if not ts.waiting_for_data:
        recs[ts] = _runnable(ts)
    return recs, instructions


def _transition_released_fetch(ws: WorkerState, ts: TaskState) -> Result:
    # A dependency or replica with known holders: queue it at each of them.
    assert ts.who_has, ts
    ws.fetcher.enqueue(ts)
    return {}, []


def _transition_released_missing(ws: WorkerState, ts: TaskState) -> Result:
    # A dependency or replica that no reachable peer holds.
    return _enter_missing(ts)


def _transition_released_memory(ws: WorkerState, ts: TaskState) -> Result:
    # DataUpdated: the value was put here directly (possibly via released).
    recs: Recs = {}
    _enter_memory(ws, ts, recs)
    return recs, []


def _transition_released_forgotten(ws: WorkerState, ts: TaskState) -> Result:
    # Nobody needs the key any more: drop every trace of it.
    assert not ts.needed, ts
    assert not ts.dependencies, ts
    ws.fetcher.forget(ts)
    del ws.tasks[ts.key]
    return {}, []


# --------------------------------------------------------------------- computing


def _transition_waiting_ready(ws: WorkerState, ts: TaskState) -> Result:
    # The last missing dependency arrived: queue it for a thread.
    ws.push_ready(ts)
    return {}, []


def _transition_waiting_constrained(ws: WorkerState, ts: TaskState) -> Result:
    # The last missing dependency of a task with resources arrived: queue it apart.
    ws.push_constrained(ts)
    return {}, []


def _transition_waiting_released(ws: WorkerState, ts: TaskState) -> Result:
    # Freed by the scheduler, given back (Reschedule), or on the way to another state.
    recs: Recs = {}
    _unlink_dependencies(ts, recs)
    recs.update(_after_release(ts)[0])
    return recs, []


def _transition_ready_executing(ws: WorkerState, ts: TaskState) -> Result:
    # A thread is free and this is the most urgent ready task.
    ws.ready.discard(ts)
    _enter_executing(ws, ts)
    deps = tuple(dep.key for dep in sorted(ts.dependencies, key=lambda d: d.id))
    return {}, [ws.make_execute(ts, deps)]


def _transition_ready_released(ws: WorkerState, ts: TaskState) -> Result:
    # Freed, stolen or given back before a thread took it.
    ws.ready.discard(ts)
    return _transition_waiting_released(ws, ts)


def _transition_constrained_executing(ws: WorkerState, ts: TaskState) -> Result:
    # A thread and every resource it needs are free, and it heads the constrained queue.
    assert ts.resources, ts
    ws.constrained.discard(ts)
    ws.resource_pool.acquire(ts.resources)
    _enter_executing(ws, ts)
    deps = tuple(dep.key for dep in sorted(ts.dependencies, key=lambda d: d.id))
    return {}, [ws.make_execute(ts, deps)]


def _transition_constrained_released(ws: WorkerState, ts: TaskState) -> Result:
    # Freed, stolen or given back before its resources (or a thread) were free.
    ws.constrained.discard(ts)
    return _transition_waiting_released(ws, ts)


def _transition_executing_memory(ws: WorkerState, ts: TaskState) -> Result:
    # ExecuteSuccess for a task still needed; report it if the scheduler assigned it.
    _leave_executing(ws, ts)
    recs: Recs = {}
    instructions: list[Instruction] = []
    _unlink_dependencies(ts, recs)
    _enter_memory(ws, ts, recs)
    ts.scattered_nbytes = None
    if ts.assigned:
        instructions.append(ws.make_task_finished(ts))
    ts.wire_value = None
    ts.run_spec = None  # a new ComputeTask brings it, should the task run again
    return recs, instructions


def _transition_executing_error(ws: WorkerState, ts: TaskState) -> Result:
    # ExecuteFailure for a task still needed; local dependents go back to the scheduler.
    _leave_executing(ws, ts)
    recs: Recs = {}
    instructions: list[Instruction] = []
    _unlink_dependencies(ts, recs)
    if ts.assigned:
        instructions.append(SendToScheduler(ws.make_task_failed(ts)))
    _give_back_dependents(ts, recs, instructions)
    return recs, instructions


def _transition_executing_released(ws: WorkerState, ts: TaskState) -> Result:
    # The run ended but nobody needs the result (freed meanwhile), or it asked to be
    # rescheduled. The handler drops any value it left in the store.
    _leave_executing(ws, ts)
    ts.scattered_nbytes = None
    return _transition_waiting_released(ws, ts)


# --------------------------------------------------------------------- results


def _transition_memory_forgotten(ws: WorkerState, ts: TaskState) -> Result:
    # Freed by the scheduler, or a local intermediate result nobody needs any more:
    # drop the value and every trace of the key.
    assert ts.nbytes is not None
    ws.nbytes_in_memory -= ts.nbytes
    return _transition_released_forgotten(ws, ts)[0], [DropData(keys=(ts.key,))]


def _transition_error_released(ws: WorkerState, ts: TaskState) -> Result:
    # Freed by the scheduler, a dependency we now fetch instead, or put here directly.
    # Whatever it becomes next, it is no longer the outcome of the run we reported.
    ts.assigned = False
    ts.exception = ts.traceback = None
    ts.exception_text = ts.traceback_text = ""
    return _after_release(ts)


# --------------------------------------------------------------------- fetching


def _transition_fetch_flight(ws: WorkerState, ts: TaskState) -> Result:
    # Taken into a GatherDep (the fetcher already removed it from its queues).
    assert ts.transfer_id in ws.fetcher.transfers, ts
    ws.fetcher.dequeue(ts)
    return {}, []


def _transition_fetch_missing(ws: WorkerState, ts: TaskState) -> Result:
    # Its last holder became unreachable while it waited in the queues.
    ws.fetcher.dequeue(ts)
    return _enter_missing(ts)


def _transition_fetch_released(ws: WorkerState, ts: TaskState) -> Result:
    # Nobody needs it any more (or it is now to be computed or was put here directly).
    ws.fetcher.dequeue(ts)
    return _after_release(ts)


def _transition_flight_memory(ws: WorkerState, ts: TaskState) -> Result:
    # GatherDep brought it; the handler reports it (AddKeys or TaskFinished).
    ts.transfer_id = None
    recs: Recs = {}
    _enter_memory(ws, ts, recs)
    return recs, []


def _transition_flight_fetch(ws: WorkerState, ts: TaskState) -> Result:
    # The peer lacked it or failed, but other peers hold it: queue it there.
    ts.transfer_id = None
    ws.fetcher.enqueue(ts)
    return {}, []


def _transition_flight_missing(ws: WorkerState, ts: TaskState) -> Result:
    # The peer lacked it or failed, and no other holder is known.
    ts.transfer_id = None
    return _enter_missing(ts)


def _transition_flight_released(ws: WorkerState, ts: TaskState) -> Result:
    # The transfer ended and nobody needs the key, or it is computed here instead, or
    # its value was put here directly (the transfer's answer is then ignored).
    ts.transfer_id = None
    return _after_release(ts)


def _transition_missing_fetch(ws: WorkerState, ts: TaskState) -> Result:
    # The scheduler told us of a new holder.
    ws.fetcher.enqueue(ts)
    return {}, []


def _transition_missing_released(ws: WorkerState, ts: TaskState) -> Result:
    # Freed, computed here instead, or put here directly.
    return _after_release(ts)


#: The whole state graph of a worker task, as data.
TRANSITIONS: dict[tuple[TaskStateName, TaskStateName], TransitionFunction] = {
    ("released", "waiting"): _transition_released_waiting,
    ("released", "fetch"): _transition_released_fetch,
    ("released", "missing"): _transition_released_missing,
    ("released", "memory"): _transition_released_memory,
    ("released", "forgotten"): _transition_released_forgotten,
    ("waiting", "ready"): _transition_waiting_ready,
    ("waiting", "constrained"): _transition_waiting_constrained,
    ("waiting", "released"): _transition_waiting_released,
    ("ready", "executing"): _transition_ready_executing,
    ("ready", "released"): _transition_ready_released,
    ("constrained", "executing"): _transition_constrained_executing,
    ("constrained", "released"): _transition_constrained_released,
    ("executing", "memory"): _transition_executing_memory,
    ("executing", "error"): _transition_executing_error,
    ("executing", "released"): _transition_executing_released,
    ("memory", "forgotten"): _transition_memory_forgotten,
    ("error", "released"): _transition_error_released,
    ("fetch", "flight"): _transition_fetch_flight,
    ("fetch", "missing"): _transition_fetch_missing,
    ("fetch", "released"): _transition_fetch_released,
    ("flight", "memory"): _transition_flight_memory,
    ("flight", "fetch"): _transition_flight_fetch,
    ("flight", "missing"): _transition_flight_missing,
    ("flight", "released"): _transition_flight_released,
    ("missing", "fetch"): _transition_missing_fetch,
    ("missing", "released"): _transition_missing_released,
}


def state_diagram() -> str:
    """The transition table as a Mermaid state diagram (for the docs)."""
    lines = ["stateDiagram-v2", "    [*] --> released"]
    for start, finish in TRANSITIONS:
        lines.append(f"    {start} --> {finish}")
    lines.append("    forgotten --> [*]")
    return "\n".join(lines)
