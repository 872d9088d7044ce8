"""The worker's pure state machine: ``WorkerState.handle(*events) -> list[Instruction]``.

No I/O, no clock, no values: the server feeds events (with ``now``), carries out the
instructions and keeps the data. See :mod:`shoal.worker.state.machine`.
"""

from shoal.worker.state.events import (
    AcquireReplicasEvent,
    ComputeTaskEvent,
    DataUpdated,
    Event,
    ExecuteFailure,
    ExecuteSuccess,
    FreeKeysEvent,
    GatherDepFailed,
    GatherDepMissing,
    GatherDepNetworkFailure,
    GatherDepSuccess,
    PauseEvent,
    RescheduleTask,
    StealRequestEvent,
    UnpauseEvent,
    event_from_dict,
)
from shoal.worker.state.instructions import (
    DropData,
    Execute,
    GatherDep,
    Instruction,
    SendToScheduler,
)
from shoal.worker.state.invariants import InvariantError, validate
from shoal.worker.state.machine import InvalidTransition, WorkerState
from shoal.worker.state.model import TaskState, TaskStateName
from shoal.worker.state.transitions import TRANSITIONS

__all__ = [
    "TRANSITIONS",
    "AcquireReplicasEvent",
    "ComputeTaskEvent",
    "DataUpdated",
    "DropData",
    "Event",
    "Execute",
    "ExecuteFailure",
    "ExecuteSuccess",
    "FreeKeysEvent",
    "GatherDep",
    "GatherDepFailed",
    "GatherDepMissing",
    "GatherDepNetworkFailure",
    "GatherDepSuccess",
    "Instruction",
    "InvalidTransition",
    "InvariantError",
    "PauseEvent",
    "RescheduleTask",
    "SendToScheduler",
    "StealRequestEvent",
    "TaskState",
    "TaskStateName",
    "UnpauseEvent",
    "WorkerState",
    "event_from_dict",
    "validate",
]
