"""Wire messages → state-machine events, and answers to requests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shoal._types import Key
from shoal.errors import CommError, RemoteError
from shoal.protocol.messages import (
    OK,
    AdaptiveTarget,
    AddKeys,
    Broadcast,
    CancelKeys,
    ClientDesiresKeys,
    ClientReleasesKeys,
    CloseClient,
    ErrorReply,
    FireAndForget,
    GatherKeys,
    HasWhat,
    Heartbeat,
    Identity,
    Message,
    MissingData,
    NThreads,
    Processing,
    Rebalance,
    Replicate,
    Reschedule,
    Restart,
    RestartWorker,
    RetireWorkers,
    RunOnScheduler,
    ScatteredData,
    StealResponse,
    TaskFailed,
    TaskFinished,
    TaskSpec,
    Terminate,
    UpdateGraph,
    WhoHas,
    WorkerStatus,
)
from shoal.scheduler.state import (
    DataMissing,
    DataScattered,
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
    WorkerStatusChanged,
    queries,
)

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

logger = logging.getLogger("shoal.scheduler")


def _own_key(tasks: Mapping[Key, Any], key: Key) -> Key:
    """The task's own key object for ``key``: what outlives a message (the task stream)
    should not keep a decoded copy per run."""
    ts = tasks.get(key)
    return key if ts is None else ts.key


def worker_events(
    scheduler: Scheduler, worker: str, msgs: Sequence[Message], now: float
) -> list[Any]:
    """Turn messages from a worker's stream into events."""
    from shoal.scheduler.server import stimulus_id

    events: list[Any] = []
    tasks = scheduler.state.tasks
    for msg in msgs:
        sid = stimulus_id(msg.op)
        if isinstance(msg, TaskFinished):
            key = _own_key(tasks, msg.key)
            scheduler.task_stream.add(key, worker, msg.start, msg.stop, "OK", msg.nbytes)
            events.append(
                TaskFinishedEvent(
                    worker=worker,
                    key=msg.key,
                    nbytes=msg.nbytes,
                    type_name=msg.type_name,
                    start=msg.start,
                    stop=msg.stop,
                    stimulus_id=sid,
                    now=now,
                    value=msg.value,
                )
            )
        elif isinstance(msg, TaskFailed):
            key = _own_key(tasks, msg.key)
            scheduler.task_stream.add(key, worker, msg.start, msg.stop, "error")
            events.append(
                TaskFailedEvent(
                    worker=worker,
                    key=msg.key,
                    exception=msg.exception,
                    traceback=msg.traceback,
                    exception_text=msg.exception_text,
                    traceback_text=msg.traceback_text,
                    start=msg.start,
                    stop=msg.stop,
                    stimulus_id=sid,
                    now=now,
                )
            )
        elif isinstance(msg, AddKeys):
            events.append(
                ReplicasAdded(
                    worker=worker,
                    keys=tuple(msg.keys),
                    nbytes=dict(msg.nbytes),
                    stimulus_id=sid,
                    now=now,
                )
            )
        elif isinstance(msg, MissingData):
            events.append(
                DataMissing(
                    worker=worker,
                    key=msg.key,
                    errant_worker=msg.errant_worker,
                    stimulus_id=sid,
                    now=now,
                )
            )
        elif isinstance(msg, StealResponse):
            events.append(
                StealResponded(
                    worker=worker, key=msg.key, state=msg.state, stimulus_id=sid, now=now
                )
            )
        elif isinstance(msg, WorkerStatus):
            events.append(
                WorkerStatusChanged(worker=worker, status=msg.status, stimulus_id=sid, now=now)
            )
        elif isinstance(msg, Reschedule):
            events.append(RescheduleRequested(worker=worker, key=msg.key, stimulus_id=sid, now=now))
        elif isinstance(msg, Heartbeat):
            info = scheduler.worker_info.get(worker)
            if info is not None:
                info["metrics"] = dict(msg.metrics)
        else:
            logger.warning("worker %s sent an unexpected %r on its stream", worker, msg.op)
    return events


def client_events(
    scheduler: Scheduler, client: str, msgs: Sequence[Message], now: float
) -> list[Any] | None:
    """Turn messages from a client's stream into events; ``None`` when it says goodbye."""
    from shoal.scheduler.server import stimulus_id

    events: list[Any] = []
    # Futures dropped one by one arrive as one release each: a run of them makes one
    # event (fewer events to handle and to journal).
    released: list[Key] = []

    def flush_released() -> None:
        if released:
            sid = stimulus_id(ClientReleasesKeys.op)
            events.append(
                KeysReleased(client=client, keys=tuple(released), stimulus_id=sid, now=now)
            )
            released.clear()

    for msg in msgs:
        if isinstance(msg, ClientReleasesKeys):
            released.extend(msg.keys)
            continue
        flush_released()
        sid = stimulus_id(msg.op)
        if isinstance(msg, UpdateGraph):
            events.append(
                GraphSubmitted(
                    client=client,
                    tasks=tuple(TaskSpec.from_wire(t) for t in msg.tasks),
                    keys=tuple(msg.keys),
                    stimulus_id=sid,
                    now=now,
                )
            )
        elif isinstance(msg, FireAndForget):
            events.append(
                FireAndForgetRequested(
                    client=client, keys=tuple(msg.keys), stimulus_id=sid, now=now
                )
            )
        elif isinstance(msg, ClientDesiresKeys):
            events.append(
                KeysDesired(client=client, keys=tuple(msg.keys), stimulus_id=sid, now=now)
            )
        elif isinstance(msg, CancelKeys):
            events.append(
                KeysCancelled(
                    client=client, keys=tuple(msg.keys), force=msg.force, stimulus_id=sid, now=now
                )
            )
        elif isinstance(msg, ScatteredData):
            events.append(
                DataScattered(
                    client=client,
                    who_has={k: tuple(v) for k, v in msg.who_has.items()},
                    nbytes=dict(msg.nbytes),
                    stimulus_id=sid,
                    now=now,
                )
            )
        elif isinstance(msg, CloseClient):
            if events:
                scheduler.handle(*events)
            return None
        else:
            logger.warning("client %s sent an unexpected %r on its stream", client, msg.op)
    flush_released()
    return events


def identity(scheduler: Scheduler) -> dict[str, Any]:
    """What ``client.scheduler_info()`` returns."""
    info = queries.identity(scheduler.state)
    info["id"] = scheduler.id
    info["address"] = scheduler.address
    info["started"] = scheduler.start_time
    info["services"] = dict(scheduler.services)
    for addr, w in info.get("workers", {}).items():
        extra = scheduler.worker_info.get(addr)
        if extra is not None:
            w.setdefault("metrics", extra["metrics"])
            w["last_seen"] = extra["last_seen"]
            w["versions"] = extra["versions"]
            w["nanny"] = extra.get("nanny") or None
    return info


#: Why RunOnScheduler is refused unless enabled.
RUN_ON_SCHEDULER_OFF = (
    "run_on_scheduler is off on this scheduler: it would run a client's code inside the "
    "scheduler process. Start it with `shoal scheduler --allow-run-on-scheduler` (or "
    "LocalCluster(allow_run_on_scheduler=True)) only if you trust every client."
)


async def answer(scheduler: Scheduler, msg: Message) -> Message:
    """Answer one request message."""
    extra = scheduler.extra_handlers.get(msg.op)
    if extra is not None:
        return await extra(scheduler, msg)
    state = scheduler.state
    if isinstance(msg, Identity):
        return OK(identity(scheduler))
    if isinstance(msg, WhoHas):
        return OK(queries.who_has(state, msg.keys))
    if isinstance(msg, HasWhat):
        return OK(queries.has_what(state, msg.workers))
    if isinstance(msg, Processing):
        return OK(queries.processing(state, msg.workers))
    if isinstance(msg, NThreads):
        return OK(queries.nthreads(state, msg.workers))
    if isinstance(msg, GatherKeys):
        return OK(queries.gather_info(state, msg.keys))
    if isinstance(msg, ScatteredData):
        if msg.client not in scheduler.client_streams:
            return ErrorReply(f"unknown client {msg.client!r}: connect its stream first")
        events = client_events(scheduler, msg.client, [msg], time.time())
        assert events is not None
        scheduler.handle(*events)
        return OK()
    if isinstance(msg, RetireWorkers):
        return OK(await retire_workers(scheduler, msg.workers, msg.n, msg.close_workers))
    if isinstance(msg, Replicate):
        return OK(
            await scheduler.request(
                lambda rid: ReplicationRequested(
                    request=rid,
                    keys=tuple(msg.keys),
                    n=msg.n,
                    workers=None if msg.workers is None else tuple(msg.workers),
                    stimulus_id=rid,
                    now=time.time(),
                )
            )
        )
    if isinstance(msg, Rebalance):
        return OK(
            await scheduler.request(
                lambda rid: RebalanceRequested(
                    request=rid,
                    keys=None if msg.keys is None else tuple(msg.keys),
                    workers=None if msg.workers is None else tuple(msg.workers),
                    stimulus_id=rid,
                    now=time.time(),
                )
            )
        )
    if isinstance(msg, Restart):
        return await restart(scheduler, msg.timeout, msg.wait_for_workers)
    if isinstance(msg, AdaptiveTarget):
        return OK(queries.adaptive_target(state))
    if isinstance(msg, Broadcast):
        return OK(await broadcast(scheduler, msg))
    if isinstance(msg, Terminate):
        scheduler._spawn(scheduler.close())  # after this reply is written
        return OK()
    if isinstance(msg, RunOnScheduler):
        return ErrorReply(RUN_ON_SCHEDULER_OFF)
    return ErrorReply(f"the scheduler does not answer {msg.op!r} requests")


async def retire_workers(
    scheduler: Scheduler,
    workers: Sequence[str] | None,
    n: int | None = None,
    close_workers: bool = True,
) -> dict[str, Any]:
    """Retire workers gracefully (see :class:`~shoal.protocol.messages.RetireWorkers`);
    return ``{address: info}`` of those retired, once each has shut down."""
    retired: dict[str, Any] = await scheduler.request(
        lambda rid: RetirementRequested(
            request=rid,
            workers=None if workers is None else tuple(workers),
            n=n,
            close=close_workers,
            stimulus_id=rid,
            now=time.time(),
        )
    )
    if close_workers:
        await scheduler.wait_for_workers_gone(list(retired))
    return retired


async def restart(scheduler: Scheduler, timeout: float, wait_for_workers: bool) -> Message:
    """Forget every task, restart each worker through its nanny (close those without
    one), and wait until as many workers as before are connected again."""
    before = dict(scheduler.worker_info)
    started = time.monotonic()
    scheduler.handle(RestartRequested(stimulus_id="restart", now=time.time()))

    def fresh() -> list[str]:
        return [a for a, info in scheduler.worker_info.items() if info["joined"] >= started]

    async def one(address: str, nanny: str) -> None:
        try:
            if nanny:
                await scheduler.pool.request(nanny, RestartWorker(timeout=timeout))
            else:
                await scheduler.pool.request(address, Terminate())
        except (CommError, RemoteError) as e:
            logger.warning("restarting worker %s (nanny %r) failed: %s", address, nanny, e)

    await asyncio.gather(*(one(a, info.get("nanny", "")) for a, info in before.items()))
    if not wait_for_workers:
        return OK()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if len(fresh()) >= len(before):
            return OK()
        await asyncio.sleep(0.05)
    without = [a for a, info in before.items() if not info.get("nanny")]
    hint = (
        f" Workers without a nanny ({without}) are only closed: start them again, or run "
        "them under a nanny (`shoal worker` does by default)."
        if without
        else ""
    )
    return ErrorReply(
        f"only {len(fresh())} of {len(before)} workers came back within {timeout:.0f} s "
        f"of the restart.{hint}"
    )


async def broadcast(scheduler: Scheduler, msg: Broadcast) -> dict[str, Any]:
    """Send ``msg.msg`` to workers (or their nannies) concurrently; gather each reply (or
    its error), by worker address."""
    workers = list(msg.workers) if msg.workers is not None else list(scheduler.worker_streams)
    unknown = [w for w in workers if w not in scheduler.worker_streams]
    if unknown:
        raise RemoteError(f"unknown workers: {unknown}")
    request = Message.from_wire(dict(msg.msg))

    async def one(worker: str) -> dict[str, Any]:
        addr = worker
        if msg.nanny:
            addr = scheduler.worker_info.get(worker, {}).get("nanny") or ""
            if not addr:
                return ErrorReply(f"worker {worker} runs without a nanny").to_wire()
        try:
            reply = await scheduler.pool.request(addr, request)
            return reply.to_wire()
        except RemoteError as e:
            if isinstance(e.reply, ErrorReply):
                return e.reply.to_wire()
            return ErrorReply(str(e)).to_wire()
        except CommError as e:
            return ErrorReply(f"could not reach {addr}: {e}").to_wire()

    replies = await asyncio.gather(*(one(w) for w in workers))
    return dict(zip(workers, replies))
