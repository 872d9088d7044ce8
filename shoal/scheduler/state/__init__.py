"""The scheduler's pure state machine: ``SchedulerState.handle(*events) -> list[Outgoing]``.

No I/O, no clock, no randomness, no unpickling: events in, messages out. The asyncio
server turns wire messages into :mod:`.events`, feeds them to ``handle`` and routes the
returned :mod:`.outgoing` records; read-only questions go to :mod:`.queries`.
"""

from shoal.scheduler.state import queries
from shoal.scheduler.state.events import (
    ClientConnected,
    ClientDisconnected,
    DataMissing,
    DataScattered,
    ErredRestored,
    Event,
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
    Tick,
    WorkerAdded,
    WorkerRemoved,
    WorkerStatusChanged,
)
from shoal.scheduler.state.invariants import validate
from shoal.scheduler.state.machine import SchedulerState
from shoal.scheduler.state.model import TaskStateName, TransitionRecord
from shoal.scheduler.state.outgoing import CloseWorker, Outgoing, RequestDone, ToClient, ToWorker
from shoal.scheduler.state.transitions import TRANSITIONS

__all__ = [
    "TRANSITIONS",
    "ClientConnected",
    "ClientDisconnected",
    "CloseWorker",
    "DataMissing",
    "DataScattered",
    "ErredRestored",
    "Event",
    "FireAndForgetRequested",
    "GraphSubmitted",
    "KeysCancelled",
    "KeysDesired",
    "KeysReleased",
    "Outgoing",
    "RebalanceRequested",
    "ReplicasAdded",
    "ReplicationRequested",
    "RequestDone",
    "RescheduleRequested",
    "RestartRequested",
    "RetirementRequested",
    "SchedulerState",
    "StealResponded",
    "TaskFailedEvent",
    "TaskFinishedEvent",
    "TaskStateName",
    "Tick",
    "ToClient",
    "ToWorker",
    "TransitionRecord",
    "WorkerAdded",
    "WorkerRemoved",
    "WorkerStatusChanged",
    "queries",
    "validate",
]
