"""Short builders for scheduler state tests: events and the exact outputs they expect."""

from __future__ import annotations

from typing import Any

from shoal._types import Key
from shoal.protocol.messages import (
    AcquireReplicas,
    ComputeTask,
    FreeKeys,
    KeyErred,
    KeyInMemory,
    KeyLost,
    KeysCancelled,
    Message,
    StealRequest,
    TaskSpec,
)
from shoal.protocol.opaque import Opaque
from shoal.scheduler.state import (
    DataScattered,
    GraphSubmitted,
    Outgoing,
    SchedulerState,
    TaskFailedEvent,
    TaskFinishedEvent,
    ToClient,
    ToWorker,
    WorkerAdded,
)

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"
EXC = Opaque([b"pickled exception"])
TB = Opaque([b"pickled traceback"])


def make_state(**kwargs: Any) -> SchedulerState:
    """A SchedulerState that checks every invariant after each event."""
    return SchedulerState(validate=True, **kwargs)


def run_spec(key: Key) -> Opaque:
    """A recognisable stand-in for a pickled task."""
    return Opaque([f"run {key}".encode()])


def spec(key: Key, *deps: Key, priority: tuple[int | float, ...] = (0,), **kw: Any) -> TaskSpec:
    """A task spec for ``key`` depending on ``deps``."""
    return TaskSpec(key, tuple(deps), run_spec(key), priority, **kw)


def submit(client: str, *specs: TaskSpec, keys: tuple[Key, ...] | None = None) -> GraphSubmitted:
    """The client submits ``specs`` and wants ``keys`` (default: the last spec's key)."""
    if keys is None:
        keys = (specs[-1].key,)
    return GraphSubmitted(client, tuple(specs), keys)


def worker(address: str, nthreads: int = 1, name: str = "", **kw: Any) -> WorkerAdded:
    """A worker joins."""
    return WorkerAdded(address, nthreads, 2**30, name or address, **kw)


def finished(address: str, key: Key, nbytes: int = 10) -> TaskFinishedEvent:
    """``address`` finished ``key``."""
    return TaskFinishedEvent(address, key, nbytes, "int", 0.0, 1.0)


def failed(address: str, key: Key, text: str = "ZeroDivisionError: boom") -> TaskFailedEvent:
    """``key`` raised on ``address``."""
    return TaskFailedEvent(address, key, EXC, TB, text, "Traceback ...", 0.0, 1.0)


def compute(
    address: str,
    key: Key,
    who_has: dict[Key, tuple[str, ...]] | None = None,
    nbytes: dict[Key, int] | None = None,
    priority: tuple[int | float, ...] = (0,),
    resources: dict[str, float] | None = None,
    duration: float = -1.0,
) -> ToWorker:
    """The exact ComputeTask the scheduler should send (``duration``: what the key's
    prefix was measured to take so far; negative when nothing of it has finished)."""
    who_has = who_has or {}
    if nbytes is None:
        nbytes = dict.fromkeys(who_has, 10)
    msg = ComputeTask(key, run_spec(key), who_has, nbytes, priority, resources, duration)
    return ToWorker(address, msg)


def free(address: str, *keys: Key) -> ToWorker:
    """FreeKeys to ``address``."""
    return ToWorker(address, FreeKeys(keys))


def in_memory(client: str, key: Key, *holders: str, type_name: str | None = "int") -> ToClient:
    """KeyInMemory to ``client``: ``key`` is held by ``holders``."""
    return ToClient(client, KeyInMemory(key, type_name, holders))


def erred(client: str, key: Key, blame: Key, text: str = "ZeroDivisionError: boom") -> ToClient:
    """KeyErred (from a worker failure built by :func:`failed`) to ``client``."""
    return ToClient(client, KeyErred(key, EXC, TB, text, "Traceback ...", blame))


def lost(client: str, key: Key) -> ToClient:
    """KeyLost to ``client``."""
    return ToClient(client, KeyLost(key))


def cancelled(client: str, *keys: Key, reason: str) -> ToClient:
    """KeysCancelled to ``client``."""
    return ToClient(client, KeysCancelled(keys, reason))


def msgs(out: list[Outgoing], kind: type[Message]) -> list[Outgoing]:
    """The outputs carrying a message of type ``kind``."""
    return [o for o in out if isinstance(o.msg, kind)]


def assigned(out: list[Outgoing]) -> list[tuple[str, Key]]:
    """``(worker, key)`` of every ComputeTask in ``out``."""
    return [
        (o.worker, o.msg.key)
        for o in out
        if isinstance(o, ToWorker) and isinstance(o.msg, ComputeTask)
    ]


def states(state: SchedulerState) -> dict[Key, str]:
    """The state of every task."""
    return {k: ts.state for k, ts in state.tasks.items()}


def scatter(data: dict[Key, tuple[int, tuple[str, ...]]], client: str = "c") -> DataScattered:
    """``client`` scatters ``{key: (nbytes, holders)}``."""
    return DataScattered(
        client,
        {k: holders for k, (_, holders) in data.items()},
        {k: n for k, (n, _) in data.items()},
    )


def steal_request(address: str, key: Key) -> ToWorker:
    """StealRequest to ``address`` for ``key``."""
    return ToWorker(address, StealRequest(key))


def acquire(address: str, data: dict[Key, tuple[int, tuple[str, ...]]]) -> ToWorker:
    """AcquireReplicas to ``address``: fetch ``{key: (nbytes, holders)}``."""
    return ToWorker(
        address,
        AcquireReplicas(
            {k: holders for k, (_, holders) in data.items()}, {k: n for k, (n, _) in data.items()}
        ),
    )


def queued_keys(state: SchedulerState) -> list[Key]:
    """The queued tasks, most urgent first."""
    return [ts.key for ts in sorted(state.queued, key=lambda ts: ts.priority)]
