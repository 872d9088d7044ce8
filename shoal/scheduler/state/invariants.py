"""``validate(state)``: every invariant of the scheduler state, checked the slow way.

Tests run it after every event (``SchedulerState(validate=True)``). It walks everything,
so it costs O(tasks + workers + clients): never call it on a hot path in production.
Each check raises ``AssertionError`` naming the record and the rule it breaks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal.scheduler.state.model import (
    ACTIVE_STATES,
    LIVE_STATES,
    READY_STATES,
    TaskState,
    TaskStateName,
    WorkerInfo,
)
from shoal.scheduler.state.placement import task_slots

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState


def _check(ok: object, what: object, rule: str) -> None:
    if not ok:
        raise AssertionError(f"{what!r}: {rule}")


def validate(state: SchedulerState) -> None:
    """Raise ``AssertionError`` if any invariant of ``state`` is broken."""
    counts: dict[TaskStateName, int] = dict.fromkeys(LIVE_STATES, 0)
    for key, ts in state.tasks.items():
        _check(ts.key == key, ts, f"filed under key {key!r}")
        _check(ts.state in LIVE_STATES, ts, "is in no valid state")
        counts[ts.state] += 1
        _validate_task(state, ts)
    _check(counts == state.counts, "counts", f"are {state.counts}, tasks say {counts}")
    for ts in state.unrunnable:
        _check(ts.state == "no-worker", ts, "is unrunnable but not no-worker")
    for ts in state.queued:
        _check(ts.state == "queued", ts, "is in the queue but not queued")
    for ts in state.unstealable:
        _check(ts.state == "processing", ts, "marked unstealable but not processing")
    for ts, steal in state.steals.items():
        _check(ts.processing_on is steal.victim, ts, "steal requested from a worker not running it")
    groups: dict[str, int] = {}
    for ts in state.tasks.values():
        groups[ts.group.name] = groups.get(ts.group.name, 0) + 1
    sizes = {name: tg.size for name, tg in state.groups.items()}
    _check(groups == sizes, "groups", f"sizes {sizes} != {groups}")
    _check(
        state.total_nthreads == sum(ws.nthreads for ws in state.workers.values()),
        "total_nthreads",
        "disagrees with the workers",
    )
    for c_ts, copies in state.pending_copies.items():
        for c in copies:
            _check(c.ts is c_ts and c in c.owner.pending, c_ts, "copy index out of sync")
    for address, ws in state.workers.items():
        _validate_worker(state, address, ws)
    for name, ws in state.aliases.items():
        _check(state.workers.get(ws.address) is ws and ws.name == name, name, "stale alias")
    for resource, holders in state.resource_index.items():
        for ws in holders:
            _check(ws.alive and resource in ws.resources, ws, f"wrongly listed for {resource}")
    for client, cs in state.clients.items():
        _check(cs.client == client, cs, f"filed under {client!r}")
        for ts in cs.wants_what:
            _check(state.tasks.get(ts.key) is ts, ts, f"wanted by {client} but forgotten")
            _check(cs in ts.who_wants, ts, f"in {client}'s wants but not wanted by it")


def _validate_worker(state: SchedulerState, address: str, ws: WorkerInfo) -> None:
    _check(ws.address == address and ws.alive, ws, "is registered but not alive")
    used: dict[str, float] = {}
    for ts in ws.processing:
        _check(ts.processing_on is ws, ts, f"listed as processing on {address}")
        _check(state.tasks.get(ts.key) is ts, ts, f"forgotten but processing on {address}")
        for name, amount in (ts.resources or {}).items():
            used[name] = used.get(name, 0.0) + amount
    _check(abs(ws.occupancy - sum(ws.processing.values())) < 1e-6, ws, "occupancy != expected work")
    for name in set(used) | set(ws.used_resources):
        _check(
            abs(used.get(name, 0.0) - ws.used_resources.get(name, 0.0)) < 1e-9,
            ws,
            f"uses {ws.used_resources} of resources, its tasks hold {used}",
        )
    _check(
        (ws in state.open_workers) == (task_slots(state, ws) > 0),
        ws,
        "open_workers disagrees with its free slots",
    )
    nbytes = 0
    for ts in ws.has_what:
        _check(ws in ts.who_has, ts, f"listed on {address} which it doesn't know of")
        nbytes += ts.nbytes
    _check(ws.nbytes == nbytes, ws, f"counts {ws.nbytes} bytes, holds {nbytes}")


def _validate_task(state: SchedulerState, ts: TaskState) -> None:
    st = ts.state
    # Graph edges are mutual and point at live records.
    for dts in ts.dependencies:
        _check(state.tasks.get(dts.key) is dts, ts, f"depends on forgotten {dts.key!r}")
        _check(ts in dts.dependents, ts, f"not a dependent of its dependency {dts.key!r}")
    for dts in ts.dependents:
        _check(state.tasks.get(dts.key) is dts, ts, f"has forgotten dependent {dts.key!r}")
        _check(ts in dts.dependencies, ts, f"not a dependency of its dependent {dts.key!r}")
    for cs in ts.who_wants:
        _check(state.clients.get(cs.client) is cs, ts, f"wanted by gone client {cs.client}")
        _check(ts in cs.wants_what, ts, f"not in the wants of {cs.client}")
    for ws in ts.who_has:
        _check(state.workers.get(ws.address) is ws, ts, f"held by gone worker {ws.address}")
        _check(ts in ws.has_what, ts, f"not in has_what of {ws.address}")
    # waiters: exactly the dependents that still need this value.
    waiters = {d for d in ts.dependents if d.state in ACTIVE_STATES}
    _check(set(ts.waiters) == waiters, ts, f"waiters {list(ts.waiters)} != {waiters}")
    needed = bool(ts.who_wants or ts.waiters)
    _check(ts.who_wants or ts.dependents, ts, "kept although no client and no dependent")
    _check(needed or st in ("released", "erred"), ts, f"{st} although nothing needs it")
    _check((ts.failure is not None) == (st == "erred"), ts, "failure set iff erred")
    _check(
        (ts.processing_on is not None) == (st == "processing"), ts, "processing_on iff processing"
    )
    _check((ts in state.unrunnable) == (st == "no-worker"), ts, "unrunnable iff no-worker")
    _check((ts in state.queued) == (st == "queued"), ts, "in the queue iff queued")
    _check(bool(ts.who_has) == (st == "memory"), ts, "has holders iff in memory")
    if st != "erred":
        _check(len(ts.suspicious) <= state.allowed_failures, ts, "should be KilledWorker")
    if st != "waiting":
        _check(not ts.waiting_on, ts, f"waiting on {list(ts.waiting_on)} while {st}")
    if st == "released":
        _check(ts.run_spec is not None, ts, "released scattered data should be forgotten")
    elif st == "waiting":
        _check(ts.run_spec is not None and ts.lost_dependency is None, ts, "can't run")
        for dts in ts.dependencies:
            _check(dts.state in (*ACTIVE_STATES, "memory"), ts, f"waits on {dts.state} {dts.key!r}")
            _check(
                (dts in ts.waiting_on) == (dts.state != "memory"),
                ts,
                f"waiting_on disagrees about {dts.state} dependency {dts.key!r}",
            )
        _check(ts.waiting_on, ts, "waiting on nothing")
    elif st in READY_STATES:
        _check(ts.lost_dependency is None, ts, f"{st} with a lost dependency")
        for dts in ts.dependencies:
            _check(dts.state == "memory", ts, f"{st} but dependency {dts.key!r} is {dts.state}")
        on = ts.processing_on
        if on is not None:
            _check(state.workers.get(on.address) is on, ts, f"processing on gone {on.address}")
            _check(ts in on.processing, ts, f"not in processing of {on.address}")
