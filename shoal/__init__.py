"""shoal: a distributed task engine for Python, a drop-in replacement for dask.distributed.

Layering (a module imports only from layers below it; see tests/test_architecture.py):

    L7 cli → L6 deploy → L4 scheduler/worker/client servers → L3 comm
    → L2 pure state machines → L1 protocol → L0 _types, errors, config
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

#: Public name → the module defining it. Imported on first use (PEP 562), so that a
#: process that needs only part of shoal (a nanny, a worker) starts without importing
#: dask and the client.
_EXPORTS: dict[str, str] = {
    "ALL_COMPLETED": "shoal.client.futures",
    "Actor": "shoal.actor",
    "ActorFuture": "shoal.actor",
    "ActorLost": "shoal.errors",
    "BaseActorFuture": "shoal.actor",
    "SchedulerPlugin": "shoal.scheduler.plugins",
    "WorkerPlugin": "shoal.plugins",
    "FIRST_COMPLETED": "shoal.client.futures",
    "FIRST_EXCEPTION": "shoal.client.futures",
    "Client": "shoal.client.client",
    "CommClosedError": "shoal.errors",
    "Event": "shoal.coordination.event",
    "Future": "shoal.client.futures",
    "FutureCancelledError": "shoal.errors",
    "KilledWorker": "shoal.errors",
    "Lock": "shoal.coordination.semaphore",
    "LocalCluster": "shoal.deploy.local",
    "Pub": "shoal.coordination.pubsub",
    "Queue": "shoal.coordination.queues",
    "Scheduler": "shoal.scheduler.server",
    "Security": "shoal.security",
    "Semaphore": "shoal.coordination.semaphore",
    "ShoalError": "shoal.errors",
    "Sub": "shoal.coordination.pubsub",
    "TaskError": "shoal.errors",
    "Variable": "shoal.coordination.variable",
    "Worker": "shoal.worker.server",
    "as_completed": "shoal.client.futures",
    "default_client": "shoal.client.client",
    "fire_and_forget": "shoal.client.futures",
    "futures_of": "shoal.client.collections",
    "get_client": "shoal.client.client",
    "get_task_stream": "shoal.diagnostics.task_stream",
    "get_worker": "shoal.worker.execute",
    "performance_report": "shoal.diagnostics.report",
    "progress": "shoal.diagnostics.progress",
    "wait": "shoal.client.futures",
}


def __getattr__(name: str) -> Any:
    if name == "CancelledError":
        name = "FutureCancelledError"
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "CancelledError"])


if TYPE_CHECKING:
    from shoal.actor import Actor, ActorFuture, BaseActorFuture
    from shoal.client.client import Client, default_client, get_client
    from shoal.client.collections import futures_of
    from shoal.client.futures import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        Future,
        as_completed,
        fire_and_forget,
        wait,
    )
    from shoal.coordination.event import Event
    from shoal.coordination.pubsub import Pub, Sub
    from shoal.coordination.queues import Queue
    from shoal.coordination.semaphore import Lock, Semaphore
    from shoal.coordination.variable import Variable
    from shoal.deploy.local import LocalCluster
    from shoal.diagnostics.progress import progress
    from shoal.diagnostics.report import performance_report
    from shoal.diagnostics.task_stream import get_task_stream
    from shoal.errors import (
        ActorLost,
        CommClosedError,
        FutureCancelledError,
        KilledWorker,
        ShoalError,
        TaskError,
    )
    from shoal.errors import FutureCancelledError as CancelledError
    from shoal.plugins import WorkerPlugin
    from shoal.scheduler.plugins import SchedulerPlugin
    from shoal.scheduler.server import Scheduler
    from shoal.security import Security
    from shoal.worker.execute import get_worker
    from shoal.worker.server import Worker

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Actor",
    "ActorFuture",
    "ActorLost",
    "BaseActorFuture",
    "CancelledError",
    "Client",
    "CommClosedError",
    "Event",
    "Future",
    "FutureCancelledError",
    "KilledWorker",
    "LocalCluster",
    "Lock",
    "Pub",
    "Queue",
    "Scheduler",
    "SchedulerPlugin",
    "Security",
    "Semaphore",
    "ShoalError",
    "Sub",
    "TaskError",
    "Variable",
    "Worker",
    "WorkerPlugin",
    "__version__",
    "as_completed",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_task_stream",
    "get_worker",
    "performance_report",
    "progress",
    "wait",
]
