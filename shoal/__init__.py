"""shoal: a distributed task engine for Python, a drop-in replacement for dask.distributed.

Layering (a module imports only from layers below it; see tests/test_architecture.py):

    L7 cli → L6 deploy → L4 scheduler/worker/client servers → L3 comm
    → L2 pure state machines → L1 protocol → L0 _types, errors, config
"""

from __future__ import annotations

__version__ = "0.1.0"

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
from shoal.deploy.local import LocalCluster
from shoal.errors import (
    CommClosedError,
    FutureCancelledError,
    KilledWorker,
    ShoalError,
    TaskError,
)
from shoal.scheduler.server import Scheduler
from shoal.security import Security
from shoal.worker.execute import get_worker
from shoal.worker.server import Worker

CancelledError = FutureCancelledError

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CancelledError",
    "Client",
    "CommClosedError",
    "Future",
    "FutureCancelledError",
    "KilledWorker",
    "LocalCluster",
    "Scheduler",
    "Security",
    "ShoalError",
    "TaskError",
    "Worker",
    "__version__",
    "as_completed",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_worker",
    "wait",
]
