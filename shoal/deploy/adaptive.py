"""Adaptive scaling: grow a cluster when work queues up, retire idle workers gracefully.

:class:`Adaptive` asks the scheduler every ``interval`` seconds how many workers its
load wants (:func:`shoal.scheduler.state.queries.adaptive_target`), bounded by
``minimum`` and ``maximum``. It scales up at once; it scales down only after the
scheduler has asked for fewer workers ``wait_count`` times in a row, and then retires
the idle workers the scheduler names, gracefully, so their data is kept.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

from shoal.scheduler.state import queries

if TYPE_CHECKING:
    from shoal.deploy.local import LocalCluster

logger = logging.getLogger("shoal.deploy")


class Adaptive:
    """Keeps the number of workers of ``cluster`` matched to its load."""

    def __init__(
        self,
        cluster: LocalCluster,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: float = 1.0,
        wait_count: int = 3,
        target_duration: float = 5.0,
    ) -> None:
        if minimum < 0 or maximum < minimum:
            raise ValueError(f"need 0 <= minimum <= maximum, got {minimum} and {maximum}")
        self.cluster = cluster
        self.minimum = minimum
        self.maximum = maximum
        self.interval = interval
        self.wait_count = wait_count
        self.target_duration = target_duration
        self._close_votes = 0
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Adaptive minimum={self.minimum} maximum={self.maximum}>"

    def start(self) -> None:
        """Start adapting (on the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop adapting; the workers stay as they are."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.adapt()
            except Exception:  # keep adapting; the next round may succeed
                logger.exception("adaptive scaling failed; trying again")
            await asyncio.sleep(self.interval)

    def recommendation(self) -> tuple[int, list[str]]:
        """The number of workers wanted now and the addresses that may go."""
        scheduler = self.cluster.scheduler
        assert scheduler is not None
        advice = queries.adaptive_target(scheduler.state, self.target_duration)
        target = int(min(max(advice["target"], self.minimum), self.maximum))
        return target, list(advice["workers_to_close"])

    async def adapt(self) -> None:
        """One round: scale up now, or count a vote for scaling down and act on enough."""
        target, to_close = self.recommendation()
        current = len(self.cluster.workers)
        if target > current:
            self._close_votes = 0
            logger.info("adaptive: scaling up from %d to %d workers", current, target)
            await self.cluster._scale(target)
        elif target < current:
            self._close_votes += 1
            if self._close_votes >= self.wait_count:
                self._close_votes = 0
                chosen = to_close[: current - target]
                if chosen:
                    logger.info("adaptive: retiring %d idle workers", len(chosen))
                    await self.cluster._retire(chosen)
        else:
            self._close_votes = 0
