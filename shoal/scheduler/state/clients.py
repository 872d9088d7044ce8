"""Handlers for what clients do: submit graphs, want, release, cancel and scatter keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoal._types import Key
from shoal.protocol.messages import unknown_key_reason
from shoal.scheduler.state.events import (
    ClientConnected,
    ClientDisconnected,
    DataScattered,
    FireAndForgetRequested,
    GraphSubmitted,
    KeysCancelled,
    KeysDesired,
    KeysReleased,
)
from shoal.scheduler.state.model import Arrival, ClientInfo, Context, TaskState
from shoal.scheduler.state.transitions import (
    FIRE_AND_FORGET,
    drop_fire_and_forget,
    in_memory_message,
    recommend_in_order,
    release_if_unneeded,
    run_recommendations,
    transition,
)

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState


def client_connected(s: SchedulerState, ev: ClientConnected, ctx: Context) -> None:
    """Register the client (idempotent)."""
    s.client(ev.client)


def client_disconnected(s: SchedulerState, ev: ClientDisconnected, ctx: Context) -> None:
    """The client is gone: it no longer wants anything."""
    cs = s.clients.pop(ev.client, None)
    if cs is None:
        return
    for ts in cs.wants_what:
        ts.drop_wanter(cs)
        release_if_unneeded(ts, ctx)
    cs.wants_what.clear()


def _want(cs: ClientInfo, ts: TaskState) -> None:
    ts.add_wanter(cs)
    cs.wants_what[ts] = None


def _report_existing(cs: ClientInfo, ts: TaskState, ctx: Context) -> None:
    """Tell a client that just asked for ``ts`` what is already known about it."""
    if ts.state == "memory":
        ctx.to_client(cs, in_memory_message(ts))
    elif ts.state == "erred":
        assert ts.failure is not None
        ctx.to_client(cs, ts.failure.report(ts.key))


def graph_submitted(s: SchedulerState, ev: GraphSubmitted, ctx: Context) -> None:
    """Add a graph; the client wants ``ev.keys``.

    An existing task keeps its state and spec, unless it is released (it takes the new
    spec) or erred (it takes the new spec and is retried, with the erred tasks it
    depends on). A spec without a ``run_spec`` only refers to (scattered) data. A
    dependency that is neither submitted with a ``run_spec`` nor known makes its
    dependent err with ``MissingDependency``.
    """
    cs = s.client(ev.client)
    adopted: list[tuple[TaskState, tuple[Key, ...]]] = []
    retried: list[TaskState] = []
    for spec in ev.tasks:
        if spec.run_spec is None:
            continue  # a reference to data (scattered): it exists, or it is missing
        ts = s.tasks.get(spec.key)
        if ts is None:
            ts = s.new_task(spec.key)
        elif ts.state == "erred":
            retried.append(ts)
        elif ts.state != "released":
            continue
        ts.adopt(spec)
        adopted.append((ts, tuple(spec.dependencies)))

    for ts, deps in adopted:
        ts.lost_dependency = None
        for dep in deps:
            dts = s.tasks.get(dep)
            if dts is None:
                if ts.lost_dependency is None:
                    ts.lost_dependency = dep
            elif dts is not ts:
                ts.add_dependency(dts)

    retry_roots = _erred_roots(retried)
    retrying = _erred_dependents(retry_roots)
    wanted: list[TaskState] = []
    for key in ev.keys:
        ts = s.tasks.get(key)
        if ts is None:
            ctx.cancelled(cs.client, key, unknown_key_reason(key))
            continue
        _want(cs, ts)
        wanted.append(ts)
        if ts not in retrying:
            _report_existing(cs, ts, ctx)

    # Tasks nobody wants and nothing depends on: forget them straight away.
    for ts, _ in adopted:
        if ts.state == "released" and not ts.who_wants and not ts.dependents:
            ctx.recs[ts] = "forgotten"
    # Start the needed released tasks in priority order, so they are placed in it.
    # Ties keep submission order, then the older released tasks the graph reuses.
    needed = _released_closure(wanted)
    start = {ts: None for ts, _ in adopted if ts in needed}
    start.update(needed)
    start.update(retry_roots)
    recommend_in_order(list(start), "waiting", ctx)


def _released_closure(roots: list[TaskState]) -> dict[TaskState, None]:
    """The released tasks among ``roots`` and, through released tasks, their dependencies."""
    seen: dict[TaskState, None] = {}
    stack = [ts for ts in roots if ts.state == "released"]
    while stack:
        ts = stack.pop()
        if ts in seen:
            continue
        seen[ts] = None
        stack.extend(d for d in ts.dependencies if d.state == "released" and d not in seen)
    return seen


def _erred_roots(retried: list[TaskState]) -> dict[TaskState, None]:
    """The erred tasks that caused ``retried`` to err: those with no erred dependency."""
    roots: dict[TaskState, None] = {}
    seen: dict[TaskState, None] = {}
    stack = list(retried)
    while stack:
        ts = stack.pop()
        if ts in seen:
            continue
        seen[ts] = None
        erred_deps = [d for d in ts.dependencies if d.state == "erred"]
        if erred_deps:
            stack.extend(erred_deps)
        else:
            roots[ts] = None
    return roots


def _erred_dependents(roots: dict[TaskState, None]) -> dict[TaskState, None]:
    """``roots`` and the erred tasks downstream of them: all that a retry restarts."""
    out: dict[TaskState, None] = {}
    stack = list(roots)
    while stack:
        ts = stack.pop()
        if ts not in out:
            out[ts] = None
            stack.extend(d for d in ts.dependents if d.state == "erred")
    return out


def keys_released(s: SchedulerState, ev: KeysReleased, ctx: Context) -> None:
    """The client no longer wants ``ev.keys``; release what nobody else needs."""
    cs = s.clients.get(ev.client)
    if cs is None:
        return
    for key in ev.keys:
        ts = s.tasks.get(key)
        if ts is not None and cs in ts.who_wants:
            ts.drop_wanter(cs)
            del cs.wants_what[ts]
            release_if_unneeded(ts, ctx)


def keys_desired(s: SchedulerState, ev: KeysDesired, ctx: Context) -> None:
    """The client holds new futures for existing keys."""
    cs = s.client(ev.client)
    for key in ev.keys:
        ts = s.tasks.get(key)
        if ts is None:
            ctx.cancelled(cs.client, key, unknown_key_reason(key))
            continue
        _want(cs, ts)
        _report_existing(cs, ts, ctx)
        if ts.state == "released":
            ctx.recs[ts] = "waiting"


def fire_and_forget(s: SchedulerState, ev: FireAndForgetRequested, ctx: Context) -> None:
    """Keep ``ev.keys`` wanted (by a pseudo-client) until each finishes or errs."""
    cs = s.client(FIRE_AND_FORGET)
    for key in ev.keys:
        ts = s.tasks.get(key)
        if ts is None:
            continue
        _want(cs, ts)
        if ts.state in ("memory", "erred"):
            drop_fire_and_forget(ts, ctx)
        elif ts.state == "released":
            ctx.recs[ts] = "waiting"


def keys_cancelled(s: SchedulerState, ev: KeysCancelled, ctx: Context) -> None:
    """Cancel keys and, recursively, their dependents.

    Without ``force`` only this client stops wanting them (another client's futures
    keep a key alive); with ``force`` every client does. Every client that loses a
    future hears ``KeysCancelled``; the requesting client hears it for every key.
    """
    cs = s.clients.get(ev.client)
    reason = f"cancelled by client {ev.client}"
    touched: dict[TaskState, None] = {}
    for key in ev.keys:
        ctx.cancelled(ev.client, key, reason)
        ts = s.tasks.get(key)
        if ts is None:
            continue
        stack = [ts]
        while stack:
            t = stack.pop()
            if t in touched:
                continue
            touched[t] = None
            losers = list(t.who_wants) if ev.force else [c for c in (cs,) if c in t.who_wants]
            for c in losers:
                t.drop_wanter(c)
                del c.wants_what[t]
                ctx.cancelled(c.client, t.key, reason)
            if not t.who_wants:
                # Nobody keeps it any more: what depends on it is cancelled as well.
                stack.extend(d for d in t.dependents if d not in touched)
    for t in touched:
        release_if_unneeded(t, ctx)


def data_scattered(s: SchedulerState, ev: DataScattered, ctx: Context) -> None:
    """A client put values on workers: they are in memory and the client wants them."""
    cs = s.client(ev.client)
    for key, addresses in ev.who_has.items():
        holders = tuple(ws for a in addresses if (ws := s.workers.get(a)) is not None)
        if not holders:
            ctx.cancelled(cs.client, key, f"no live worker holds scattered key {key!r}")
            continue
        ts = s.tasks.get(key)
        if ts is None:
            ts = s.new_task(key)
        _want(cs, ts)
        nbytes = ev.nbytes.get(key, ts.nbytes)
        if ts.state == "memory":
            s.set_nbytes(ts, nbytes)
            for ws in holders:
                s.add_replica(ts, ws)
            _report_existing(cs, ts, ctx)
        else:
            transition(s, ts, "memory", ctx, Arrival(holders, nbytes, None))
        run_recommendations(s, ctx)
