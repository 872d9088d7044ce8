"""Deliberate data movement: graceful retirement, ``replicate`` and ``rebalance``.

All three ask workers to copy keys from their holders (``AcquireReplicas``) and wait for
the copies to arrive (``AddKeys`` → :class:`~.events.ReplicasAdded`). Each copy asked
for is a :class:`Copy`, owned by the request that wants it and indexed by task in
``SchedulerState.pending_copies``. A copy that does not arrive within
:data:`COPY_TIMEOUT` seconds is asked again (up to :data:`COPY_ATTEMPTS` times), and one
that no longer makes sense (the key was released, the recipient left) is dropped.

*Retirement* (:func:`retirement_requested`): the leaving workers stop accepting work;
tasks they have not started are stolen back and placed elsewhere (the running ones
finish); every key whose only holders are leaving is copied to the accepting worker
holding the fewest bytes. Once a leaving worker runs nothing and holds nothing that
isn't also elsewhere, it is removed from the state (``safe``: nothing is recomputed)
and the server is told to close it (:class:`~.outgoing.CloseWorker`). When no accepting
worker would remain, only the leaving workers that run nothing and hold no key alone
are retired: the rest would have nowhere to put their work.

*Replicate*: copies are added to (or extra copies dropped from) the least loaded
candidate workers until each key has ``n`` holders among them.

*Rebalance* (:func:`plan_rebalance`): keys move from workers holding more than the mean
number of bytes to workers holding less; each sender drops its copy once the recipient
has it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shoal._types import Address, Key
from shoal.protocol.messages import AcquireReplicas
from shoal.scheduler.state.events import (
    RebalanceRequested,
    ReplicationRequested,
    RetirementRequested,
)
from shoal.scheduler.state.model import Context, TaskState, WorkerInfo
from shoal.scheduler.state.outgoing import CloseWorker, RequestDone
from shoal.scheduler.state.stealing import request_steal
from shoal.scheduler.state.transitions import offer_worker

if TYPE_CHECKING:
    from shoal.scheduler.state.machine import SchedulerState

#: Seconds to wait for a copy before asking again.
COPY_TIMEOUT = 10.0
#: How many times a copy is asked for before giving up on it.
COPY_ATTEMPTS = 3


@dataclass(eq=False, slots=True)
class Copy:
    """``recipient`` was asked for a copy of ``ts``; ``drop_from`` frees its copy after."""

    ts: TaskState
    recipient: WorkerInfo
    owner: MoveRequest | Retirement
    drop_from: WorkerInfo | None = None
    asked_at: float = 0.0
    attempts: int = 1
    #: the retiring worker this copy is made for
    leaver: WorkerInfo | None = None


@dataclass(eq=False, slots=True)
class MoveRequest:
    """A ``replicate`` or ``rebalance`` request waiting for its copies."""

    request: str
    pending: dict[Copy, None] = field(default_factory=dict)
    moved: int = 0


@dataclass(eq=False, slots=True)
class Retirement:
    """Workers leaving gracefully, and the copies that must exist before they go."""

    request: str
    close: bool
    workers: dict[WorkerInfo, None]
    pending: dict[Copy, None] = field(default_factory=dict)
    retired: dict[Address, dict[str, object]] = field(default_factory=dict)


# ------------------------------------------------------------------ copies


def _ask(s: SchedulerState, copies: list[Copy], ctx: Context) -> None:
    """Register ``copies`` and send one ``AcquireReplicas`` per recipient."""
    per_worker: dict[WorkerInfo, list[TaskState]] = {}
    for c in copies:
        c.asked_at = ctx.now
        c.owner.pending[c] = None
        s.pending_copies.setdefault(c.ts, {})[c] = None
        per_worker.setdefault(c.recipient, []).append(c.ts)
    for ws, tasks in per_worker.items():
        ctx.to_worker(
            ws,
            AcquireReplicas(
                who_has={ts.key: tuple(w.address for w in ts.who_has) for ts in tasks},
                nbytes={ts.key: ts.nbytes for ts in tasks},
            ),
        )


def _settle(s: SchedulerState, c: Copy, ctx: Context, *, arrived: bool) -> None:
    """``c`` is done (its copy ``arrived``) or abandoned."""
    c.owner.pending.pop(c, None)
    index = s.pending_copies.get(c.ts)
    if index is not None:
        index.pop(c, None)
        if not index:
            del s.pending_copies[c.ts]
    if not arrived:
        return
    src = c.drop_from
    ts = c.ts
    if src is not None and src in ts.who_has and len(ts.who_has) > 1:
        ctx.free(src, ts.key)
        s.remove_replica(ts, src)
    if isinstance(c.owner, MoveRequest):
        c.owner.moved += 1


def copies_arrived(s: SchedulerState, ws: WorkerInfo, tasks: list[TaskState], ctx: Context) -> None:
    """``ws`` reported new copies of ``tasks``: settle the copies that asked for them."""
    for ts in tasks:
        for c in list(s.pending_copies.get(ts, ())):
            if c.recipient is ws:
                _settle(s, c, ctx, arrived=True)


def _least_loaded_recipients(
    candidates: list[WorkerInfo], planned: dict[WorkerInfo, int]
) -> list[tuple[int, int, WorkerInfo]]:
    heap = [(ws.nbytes + planned.get(ws, 0), ws.serial, ws) for ws in candidates]
    heapq.heapify(heap)
    return heap


# ------------------------------------------------------------------ retirement


def _resolve(s: SchedulerState, refs: tuple[str, ...]) -> list[WorkerInfo]:
    out: dict[WorkerInfo, None] = {}
    for ref in refs:
        ws = s.workers.get(ref) or s.aliases.get(ref)
        if ws is not None:
            out[ws] = None
    return list(out)


def workers_to_close(s: SchedulerState, n: int) -> list[WorkerInfo]:
    """The ``n`` accepting workers cheapest to retire: fewest bytes held, least work."""
    candidates = [ws for ws in s.workers.values() if not ws.retiring]
    candidates.sort(key=lambda ws: (ws.nbytes, len(ws.processing), -ws.serial))
    return candidates[: max(n, 0)]


def retirement_requested(s: SchedulerState, ev: RetirementRequested, ctx: Context) -> None:
    """Start retiring the named (or ``n`` chosen) workers."""
    if ev.workers is not None:
        targets = [ws for ws in _resolve(s, ev.workers) if not ws.retiring]
    else:
        targets = workers_to_close(s, ev.n or 0)
    leaving = set(targets)
    if not any(ws.accepting and ws not in leaving for ws in s.workers.values()):
        # Nowhere to move tasks or data: only workers with neither may go.
        targets = [
            ws
            for ws in targets
            if not ws.processing
            and not any(all(h in leaving for h in ts.who_has) for ts in ws.has_what)
        ]
    if not targets:
        ctx.out.to_server(RequestDone(ev.request, {}))
        return
    r = Retirement(ev.request, ev.close, {ws: None for ws in targets})
    s.retirements[ev.request] = r
    for ws in targets:
        ws.retiring = True
        s.update_accepting(ws)
        for ts in list(ws.processing):
            request_steal(s, ts, None, ctx)


def _info(ws: WorkerInfo) -> dict[str, object]:
    return {"name": ws.name, "nthreads": ws.nthreads, "memory_limit": ws.memory_limit}


def _only_on_leaving(ws: WorkerInfo) -> list[TaskState]:
    return [ts for ts in ws.has_what if all(h.retiring for h in ts.who_has)]


def _advance_retirement(s: SchedulerState, r: Retirement, ctx: Context) -> None:
    """Copy what the leaving workers alone hold; remove those that are done."""
    from shoal.scheduler.state.recovery import remove_worker

    for ws in list(r.workers):
        if not ws.alive:  # it died meanwhile: what it held is recomputed as usual
            del r.workers[ws]
            r.retired[ws.address] = _info(ws)
            continue
        if ws.processing or any(c.leaver is ws for c in r.pending):
            continue
        if any(ts.actor for ts in ws.has_what):
            # An actor's object can't be copied: the worker stays (as in distributed).
            _give_up(s, r, ws, ctx)
            continue
        unique = [ts for ts in _only_on_leaving(ws) if ts not in s.pending_copies]
        if unique:
            _plan_copies(s, r, ws, unique, ctx)
            if any(c.leaver is ws for c in r.pending):
                continue
            # No accepting worker is left to take them: give up on this worker.
            _give_up(s, r, ws, ctx)
            continue
        del r.workers[ws]
        r.retired[ws.address] = _info(ws)
        remove_worker(s, ws, ctx, safe=True)
        ctx.out.to_server(CloseWorker(ws.address, r.close))
    if not r.workers:
        del s.retirements[r.request]
        ctx.out.to_server(RequestDone(r.request, r.retired))


def _give_up(s: SchedulerState, r: Retirement, ws: WorkerInfo, ctx: Context) -> None:
    """``ws`` can't leave without losing data: it stays and takes work again."""
    ws.retiring = False
    s.update_accepting(ws)
    if ws.accepting:
        offer_worker(s, ws, ctx)
    del r.workers[ws]


def _plan_copies(
    s: SchedulerState, r: Retirement, leaver: WorkerInfo, tasks: list[TaskState], ctx: Context
) -> None:
    recipients = [ws for ws in s.workers.values() if ws.accepting]
    if not recipients:
        return
    heap = _least_loaded_recipients(recipients, {})
    copies = []
    for ts in sorted(tasks, key=lambda t: -t.nbytes):
        load, serial, ws = heapq.heappop(heap)
        copies.append(Copy(ts, ws, r, leaver=leaver))
        heapq.heappush(heap, (load + ts.nbytes, serial, ws))
    _ask(s, copies, ctx)


# ------------------------------------------------------------------ replicate


def _accepting(s: SchedulerState, refs: tuple[str, ...] | None) -> list[WorkerInfo]:
    """The accepting workers among ``refs`` (addresses or names; None: all of them)."""
    workers = _resolve(s, refs) if refs is not None else list(s.workers.values())
    return [ws for ws in workers if ws.accepting]


def _new_request(s: SchedulerState, request: str) -> MoveRequest:
    req = s.moves[request] = MoveRequest(request)
    return req


def replication_requested(s: SchedulerState, ev: ReplicationRequested, ctx: Context) -> None:
    """Add or drop copies so that each key has ``n`` holders among the candidates."""
    candidates = _accepting(s, ev.workers)
    req = _new_request(s, ev.request)
    target = len(candidates) if ev.n is None else min(ev.n, len(candidates))
    planned: dict[WorkerInfo, int] = {}
    copies: list[Copy] = []
    for key in ev.keys:
        ts = s.tasks.get(key)
        if ts is None or ts.state != "memory" or ts.actor or target < 1:
            continue  # an actor's object is never copied
        holders = [ws for ws in candidates if ws in ts.who_has]
        if len(holders) > target:
            holders.sort(key=lambda ws: -ws.nbytes)
            for ws in holders[: len(holders) - target]:
                if len(ts.who_has) > 1:
                    ctx.free(ws, ts.key)
                    s.remove_replica(ts, ws)
            continue
        others = [ws for ws in candidates if ws not in ts.who_has]
        others.sort(key=lambda ws: (ws.nbytes + planned.get(ws, 0), ws.serial))
        for ws in others[: target - len(holders)]:
            planned[ws] = planned.get(ws, 0) + ts.nbytes
            copies.append(Copy(ts, ws, req))
    _ask(s, copies, ctx)


# ------------------------------------------------------------------ rebalance


def plan_rebalance(
    workers: list[WorkerInfo], keys: set[Key] | None = None
) -> list[tuple[TaskState, WorkerInfo, WorkerInfo]]:
    """Moves ``(task, sender, recipient)`` that bring every worker close to the mean
    number of bytes held, largest keys first. Pure: changes nothing."""
    if len(workers) < 2:
        return []
    mean = sum(ws.nbytes for ws in workers) / len(workers)
    deficits = [(-(mean - ws.nbytes), ws.serial, ws) for ws in workers if ws.nbytes < mean]
    heapq.heapify(deficits)
    moves: list[tuple[TaskState, WorkerInfo, WorkerInfo]] = []
    senders = sorted((ws for ws in workers if ws.nbytes > mean), key=lambda ws: -ws.nbytes)
    for sender in senders:
        excess = sender.nbytes - mean
        movable = [
            ts
            for ts in sender.has_what
            if ts.state == "memory" and not ts.actor and (keys is None or ts.key in keys)
        ]
        movable.sort(key=lambda ts: -ts.nbytes)
        for ts in movable:
            if excess <= 0 or not deficits:
                break
            if ts.nbytes > 2 * excess:
                continue  # moving it would overshoot more than it helps
            skipped = []
            while deficits and deficits[0][2] in ts.who_has:
                skipped.append(heapq.heappop(deficits))
            if deficits:
                neg_deficit, serial, recipient = heapq.heappop(deficits)
                deficit = -neg_deficit
                if ts.nbytes <= 2 * deficit:
                    moves.append((ts, sender, recipient))
                    excess -= ts.nbytes
                    deficit -= ts.nbytes
                if deficit > 0:
                    heapq.heappush(deficits, (-deficit, serial, recipient))
            for item in skipped:
                heapq.heappush(deficits, item)
    return moves


def rebalance_requested(s: SchedulerState, ev: RebalanceRequested, ctx: Context) -> None:
    """Move keys from workers above the mean to workers below it."""
    workers = _accepting(s, ev.workers)
    req = _new_request(s, ev.request)
    keys = set(ev.keys) if ev.keys is not None else None
    plan = plan_rebalance(workers, keys)
    _ask(s, [Copy(ts, recipient, req, drop_from=sender) for ts, sender, recipient in plan], ctx)


# ------------------------------------------------------------------ progress


def progress(s: SchedulerState, ctx: Context) -> None:
    """After every event: finish the requests whose copies are all settled."""
    for req in list(s.moves.values()):
        if not req.pending:
            del s.moves[req.request]
            ctx.out.to_server(RequestDone(req.request, {"moved": req.moved}))
    for r in list(s.retirements.values()):
        _advance_retirement(s, r, ctx)


def tick(s: SchedulerState, ctx: Context) -> None:
    """Drop copies that make no sense any more; ask again for late ones."""
    retry: list[Copy] = []
    for copies in list(s.pending_copies.values()):
        for c in list(copies):
            if c.ts.state != "memory" or not c.recipient.alive:
                _settle(s, c, ctx, arrived=False)
            elif ctx.now - c.asked_at >= COPY_TIMEOUT:
                _settle(s, c, ctx, arrived=False)
                if c.attempts < COPY_ATTEMPTS:
                    retry.append(
                        Copy(c.ts, c.recipient, c.owner, c.drop_from, 0.0, c.attempts + 1, c.leaver)
                    )
    _ask(s, retry, ctx)
