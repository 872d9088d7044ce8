"""Small builders for worker state machine tests: events and expected instructions."""

from __future__ import annotations

from shoal._types import Address, Key
from shoal.protocol.messages import (
    AddKeys,
    MissingData,
    Reschedule,
    StealResponse,
    TaskFailed,
    TaskFinished,
)
from shoal.protocol.opaque import Opaque
from shoal.worker.state import (
    ComputeTaskEvent,
    DataUpdated,
    DropData,
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    FreeKeysEvent,
    GatherDep,
    GatherDepMissing,
    GatherDepNetworkFailure,
    GatherDepSuccess,
    SendToScheduler,
    StealRequestEvent,
    WorkerState,
)

SELF = "tcp://self"
A = "tcp://a"
B = "tcp://b"
C = "tcp://c"


def make_ws(
    nthreads: int = 1, *, resources: dict[str, float] | None = None, **kwargs: int
) -> WorkerState:
    """A validating worker state at ``SELF`` that declares ``resources``."""
    return WorkerState(
        address=SELF, nthreads=nthreads, resources=resources, validate=True, **kwargs
    )


def spec(key: Key) -> Opaque:
    """A recognisable run spec for ``key``."""
    return Opaque([f"run {key!r}".encode()])


def compute(
    key: Key,
    who_has: dict[Key, tuple[Address, ...]] | None = None,
    *,
    nbytes: dict[Key, int] | None = None,
    priority: tuple[int | float, ...] = (0,),
    resources: dict[str, float] | None = None,
    stimulus_id: str = "",
    now: float = 0.0,
    duration: float = -1.0,
) -> ComputeTaskEvent:
    """ComputeTaskEvent for ``key`` with dependencies ``who_has`` (``duration``: what the
    scheduler expects it to take; negative: unknown)."""
    return ComputeTaskEvent(
        key=key,
        run_spec=spec(key),
        who_has=who_has or {},
        nbytes=nbytes or {},
        priority=priority,
        resources=resources,
        stimulus_id=stimulus_id or f"compute-{key!r}",
        now=now,
        duration=duration,
    )


def ok(key: Key, nbytes: int = 10) -> ExecuteSuccess:
    """The thread pool ran ``key``."""
    return ExecuteSuccess(key=key, nbytes=nbytes, type_name="int", start=1.0, stop=2.0)


EXC = Opaque([b"exc"])
TB = Opaque([b"tb"])


def err(key: Key) -> ExecuteFailure:
    """The thread pool ran ``key`` and it raised."""
    return ExecuteFailure(
        key=key,
        exception=EXC,
        traceback=TB,
        exception_text="ValueError('boom')",
        traceback_text="Traceback ...",
        start=1.0,
        stop=2.0,
    )


def free(*keys: Key) -> FreeKeysEvent:
    """The scheduler frees ``keys``."""
    return FreeKeysEvent(keys=keys)


def got(worker: Address, **data: int) -> GatherDepSuccess:
    """``worker`` sent the keys named (str keys only) with their sizes."""
    received: dict[Key, int] = {k: n for k, n in data.items()}
    return GatherDepSuccess(worker=worker, data_nbytes=received)


def lacked(worker: Address, *missing: Key, **received: int) -> GatherDepMissing:
    """``worker`` answered but lacked ``missing``."""
    got: dict[Key, int] = {k: n for k, n in received.items()}
    return GatherDepMissing(worker=worker, keys_received=got, missing=missing)


def unreachable(worker: Address, *keys: Key) -> GatherDepNetworkFailure:
    """``worker`` could not be reached for ``keys``."""
    return GatherDepNetworkFailure(worker=worker, keys=keys)


def steal(key: Key) -> StealRequestEvent:
    """The scheduler asks for ``key`` back."""
    return StealRequestEvent(key=key)


def scattered(**data: int) -> DataUpdated:
    """Values put here directly."""
    values: dict[Key, int] = {k: n for k, n in data.items()}
    return DataUpdated(data_nbytes=values)


# ----------------------------------------------------------------- expected instructions


def execute(key: Key, *deps: Key) -> Execute:
    """Expected Execute of ``key``."""
    return Execute(key=key, run_spec=spec(key), dependencies=deps)


def gather(worker: Address, *keys: Key, nbytes: int | None = None) -> GatherDep:
    """Expected GatherDep; ``nbytes`` defaults to 1024 per key (unknown sizes)."""
    return GatherDep(
        worker=worker, keys=keys, total_nbytes=1024 * len(keys) if nbytes is None else nbytes
    )


def finished(key: Key, nbytes: int = 10) -> SendToScheduler:
    """Expected TaskFinished for ``ok(key)``."""
    return SendToScheduler(
        TaskFinished(key=key, nbytes=nbytes, type_name="int", start=1.0, stop=2.0)
    )


def failed(key: Key) -> SendToScheduler:
    """Expected TaskFailed for ``err(key)``."""
    return SendToScheduler(
        TaskFailed(
            key=key,
            exception=EXC,
            traceback=TB,
            exception_text="ValueError('boom')",
            traceback_text="Traceback ...",
            start=1.0,
            stop=2.0,
        )
    )


def add_keys(**nbytes: int) -> SendToScheduler:
    """Expected AddKeys."""
    sizes: dict[Key, int] = {k: n for k, n in nbytes.items()}
    return SendToScheduler(AddKeys(keys=tuple(sizes), nbytes=sizes))


def missing_data(key: Key, worker: Address) -> SendToScheduler:
    """Expected MissingData."""
    return SendToScheduler(MissingData(key=key, errant_worker=worker))


def reschedule(key: Key) -> SendToScheduler:
    """Expected Reschedule."""
    return SendToScheduler(Reschedule(key=key))


def stolen(key: Key, state: str | None) -> SendToScheduler:
    """Expected StealResponse."""
    return SendToScheduler(StealResponse(key=key, state=state))


def drop(*keys: Key) -> DropData:
    """Expected DropData."""
    return DropData(keys=keys)


def states(ws: WorkerState) -> dict[Key, str]:
    """Every known key with its state."""
    return {key: ts.state for key, ts in ws.tasks.items()}
