"""``validate(state)``: every invariant of the worker state machine, checked in O(n).

Run after every event when ``WorkerState(validate=True)`` (always, in tests). A failed
check raises :class:`InvariantError` naming the task and the rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.errors import InternalError
from shoal.worker.state.model import ALL_STATES, COMPUTING_STATES, TaskState

if TYPE_CHECKING:
    from shoal.worker.state.machine import WorkerState

#: Where a dependency of a waiting task may be.
_WAITED_ON = frozenset(
    {"fetch", "flight", "missing", "waiting", "ready", "constrained", "executing"}
)


class InvariantError(InternalError):
    """The worker state machine broke one of its own invariants (a bug in shoal)."""


def _check(cond: bool, ts: TaskState | None, rule: str) -> None:
    if not cond:
        raise InvariantError(f"{ts!r}: {rule}" if ts is not None else rule)


def validate(ws: WorkerState) -> None:
    """Check every invariant of ``ws``; raise :class:`InvariantError` on the first broken."""
    counts = dict.fromkeys(ALL_STATES, 0)
    nbytes_in_memory = 0
    for key, ts in ws.tasks.items():
        _check(ts.key == key, ts, "indexed under another key")
        counts[ts.state] += 1
        _validate_task(ws, ts)
        if ts.state == "memory":
            assert ts.nbytes is not None
            nbytes_in_memory += ts.nbytes
    _check(counts == ws.counts, None, f"counts {ws.counts} != actual {counts}")
    _check(nbytes_in_memory == ws.nbytes_in_memory, None, "nbytes_in_memory is off")
    _validate_queues(ws)
    _validate_resources(ws)
    _validate_fetcher(ws)


def _validate_task(ws: WorkerState, ts: TaskState) -> None:
    state = ts.state
    _check(state not in ("released", "forgotten"), ts, "released is transient")
    _check(ts.wanted or not ts.assigned, ts, "assigned but not wanted")
    _check(ts.needed or state in ("executing", "flight"), ts, "nobody needs it and it is not busy")
    _check(ws.address not in ts.who_has, ts, "this worker listed as a holder")
    # Links, both ways.
    for dep in ts.dependencies:
        _check(ts in dep.dependents, ts, f"not a dependent of its dependency {dep!r}")
        _check(ws.tasks.get(dep.key) is dep, dep, "a dependency that is not known")
    for dependent in ts.dependents:
        _check(ts in dependent.dependencies, ts, f"{dependent!r} does not depend on it")
        _check(dependent.state in COMPUTING_STATES, dependent, "a dependent not computing")
        _check(ws.tasks.get(dependent.key) is dependent, dependent, "unknown dependent")
    if state not in COMPUTING_STATES:
        _check(not ts.dependencies, ts, "dependencies outside the computing states")
    _check(ts.waiting_for_data <= ts.dependencies, ts, "waits for a non-dependency")
    if state == "waiting":
        _check(bool(ts.waiting_for_data), ts, "waiting for nothing")
        for dep in ts.dependencies:
            if dep.state == "memory":
                _check(dep not in ts.waiting_for_data, ts, f"waits for {dep!r} in memory")
            else:
                _check(dep in ts.waiting_for_data, ts, f"does not wait for {dep!r}")
                _check(dep.state in _WAITED_ON, ts, f"waits for {dep!r}")
    else:
        _check(not ts.waiting_for_data, ts, "waiting_for_data outside waiting")
    if state in ("ready", "constrained", "executing"):
        for dep in ts.dependencies:
            _check(dep.state == "memory", ts, f"runs without {dep!r} in memory")
    _check((state == "ready") == (ts in ws.ready), ts, "ready state and ready queue disagree")
    _check((state == "constrained") == (ts in ws.constrained), ts, "constrained queue disagrees")
    _check((state == "executing") == (ts in ws.executing), ts, "executing set disagrees")
    if state == "ready":
        _check(not ts.resources, ts, "ready although it needs resources")
    if state == "constrained":
        _check(bool(ts.resources), ts, "constrained without resources")
    if state == "memory":
        _check(ts.nbytes is not None, ts, "in memory without nbytes")
    if state == "fetch":
        _check(bool(ts.who_has), ts, "fetch without holders")
        for worker in ts.who_has:
            heap = ws.fetcher.data_needed.get(worker)
            _check(heap is not None and ts in heap, ts, f"not queued at holder {worker}")
    if state == "missing":
        _check(not ts.who_has, ts, "missing although a holder is known")
    if state == "flight":
        transfer = ws.fetcher.transfers.get(ts.transfer_id)  # type: ignore[arg-type]
        _check(transfer is not None, ts, "in flight without a transfer")
        assert transfer is not None
        _check(ts.key in transfer.keys, ts, "not among its transfer's keys")
    else:
        _check(ts.transfer_id is None, ts, "transfer_id outside flight")
    for worker in ts.who_has:
        _check(ts in ws.fetcher.has_what.get(worker, ()), ts, f"has_what[{worker}] lacks it")


def _validate_queues(ws: WorkerState) -> None:
    limit = ws.nthreads * (1 + ws.prefetch)
    _check(len(ws.executing) <= limit, None, "more tasks executing than threads and prefetch")
    long = sum(not ts.short for ts in ws.executing)
    _check(ws.executing_long == long, None, f"executing_long is {ws.executing_long}, not {long}")
    for ts in ws.ready:
        _check(ts.state == "ready", ts, "in the ready queue but not ready")
    for ts in ws.constrained:
        _check(ts.state == "constrained", ts, "in the constrained queue but not constrained")
    if ws.paused:
        return  # queued tasks wait, whatever the threads do
    _check(not ws.ready or len(ws.executing) >= ws.nthreads, None, "a thread idles with work ready")
    if ws.constrained and len(ws.executing) < ws.nthreads:
        head = ws.constrained.peek()
        assert head.resources is not None
        _check(not ws.resource_pool.fits(head.resources), head, "could run but does not")


def _validate_resources(ws: WorkerState) -> None:
    """available = total - what the executing tasks hold, resource by resource."""
    pool = ws.resource_pool
    held = dict.fromkeys(pool.total, 0.0)
    holders = dict.fromkeys(pool.total, 0)
    for ts in ws.executing:
        for name, amount in (ts.resources or {}).items():
            _check(name in held, ts, f"holds {name!r}, which this worker does not declare")
            held[name] += amount
            holders[name] += 1
    _check(
        set(pool.available) == set(pool.total), None, "available and total name different resources"
    )
    for name, amount in held.items():
        _check(holders[name] == pool.holders(name), None, f"holder count of {name!r} is off")
        _check(
            pool.close_to(name, pool.total[name] - amount),
            None,
            f"available {name!r} is {pool.available[name]}, not {pool.total[name]} - {amount}",
        )


def _validate_fetcher(ws: WorkerState) -> None:
    f = ws.fetcher
    for worker, tasks in f.has_what.items():
        _check(bool(tasks), None, f"empty has_what[{worker}]")
        for ts in tasks:
            _check(worker in ts.who_has, ts, f"has_what[{worker}] has it, who_has does not")
            _check(ws.tasks.get(ts.key) is ts, ts, "has_what holds an unknown task")
    for worker, heap in f.data_needed.items():
        _check(bool(heap), None, f"empty queue for {worker}")
        for ts in heap:
            _check(ts.state == "fetch", ts, f"queued at {worker} but not in fetch")
            _check(worker in ts.who_has, ts, f"queued at {worker}, which does not hold it")
    flight_keys = {ts.key for ts in ws.tasks.values() if ts.state == "flight"}
    seen: set[object] = set()
    total_bytes = 0
    for tid, transfer in f.transfers.items():
        _check(tid == transfer.id, None, f"transfer {tid} indexed wrongly")
        _check(tid in f.transfers_by_worker.get(transfer.worker, ()), None, "unindexed transfer")
        total_bytes += transfer.nbytes
        for key in transfer.keys:
            t = ws.tasks.get(key)
            if t is not None and t.state == "flight" and t.transfer_id == tid:
                _check(key not in seen, t, "in two transfers")
                seen.add(key)
    _check(seen == flight_keys, None, "flight keys and transfers disagree")
    _check(total_bytes == f.in_flight_bytes, None, "in_flight_bytes is off")
    n = 0
    for worker, ids in f.transfers_by_worker.items():
        _check(bool(ids), None, f"empty transfer list for {worker}")
        _check(len(ids) <= f.max_concurrent_fetches_per_worker, None, f"{worker} overloaded")
        n += len(ids)
        for tid in ids:
            _check(f.transfers[tid].worker == worker, None, "transfer under the wrong peer")
    _check(n == len(f.transfers) <= f.max_concurrent_fetches, None, "too many transfers")
    # Nothing could start now that did not: handle() always plans transfers last.
    if len(f.transfers) < f.max_concurrent_fetches:
        for worker in f.data_needed:
            _check(
                f.in_flight_count(worker) >= f.max_concurrent_fetches_per_worker,
                None,
                f"{worker} idles while keys wait for it",
            )
