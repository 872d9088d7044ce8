"""Start a real scheduler and workers (for tests): in the running event loop
(:func:`cluster`), or as worker processes with a client (:func:`fresh_process_client`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from shoal.scheduler.server import Scheduler
from shoal.worker.server import Worker

if TYPE_CHECKING:
    from shoal.client.client import Client


@contextlib.asynccontextmanager
async def cluster(
    n_workers: int = 2,
    nthreads: int = 1,
    protocol: str = "tcp",
    worker_kwargs: dict[str, Any] | None = None,
    scheduler_kwargs: dict[str, Any] | None = None,
    validate: bool = True,
) -> AsyncIterator[tuple[Scheduler, list[Worker]]]:
    """A scheduler and ``n_workers`` workers over ``protocol`` on 127.0.0.1.

    With ``validate`` (the default) the scheduler and the workers check every invariant
    of their state after every event: thorough, but O(tasks) per event, so turn it off
    for graphs of thousands of tasks. Everything is closed on exit.
    """
    # no dashboard unless asked for (scheduler_kwargs={"dashboard_address": ":0"})
    s = await Scheduler(
        host="127.0.0.1",
        port=0,
        protocol=protocol,
        validate=validate,
        **{"dashboard_address": None, **(scheduler_kwargs or {})},
    )
    workers: list[Worker] = []
    try:
        workers = list(
            await asyncio.gather(
                *(
                    Worker(
                        s.address,
                        nthreads=nthreads,
                        name=f"w{i}",
                        validate=validate,
                        **(worker_kwargs or {}),
                    ).start()
                    for i in range(n_workers)
                )
            )
        )
        yield s, workers
    finally:
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
        await s.close()


@contextlib.contextmanager
def fresh_process_client(n_workers: int = 2) -> Iterator[Client]:
    """A client of a new LocalCluster of ``n_workers`` worker processes of one thread
    each (no dashboard), closed on exit: unlike the tests' module-wide ``process_client``
    fixture, its workers start with the ``SHOAL_*`` settings in force now."""
    from shoal import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as c,
    ):
        yield c


def shoal_threads(wait: float = 0.0) -> list[threading.Thread]:
    """Threads started by shoal that are still alive (to check nothing leaks).

    Task threads exit after their current task without being joined, so ``wait`` gives
    them up to that many seconds to go before the survivors are listed.
    """
    deadline = time.monotonic() + wait
    while True:
        alive = [t for t in threading.enumerate() if t.name.startswith("shoal")]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)
