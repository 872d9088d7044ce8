"""Background tasks a server owns: started, remembered, cancelled together on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger("shoal")


class BackgroundTasks:
    """A set of asyncio tasks that stays referenced until each finishes."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task of its own and keep it until it ends; an exception it
        ends with is logged (nothing else would see it)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def cancel_all(self) -> None:
        """Cancel every task but the calling one, and wait for them to end.

        A cancellation can be lost (before Python 3.12, ``asyncio.wait_for`` swallows one
        that arrives as its inner future completes), so tasks still running are
        cancelled again until they end.
        """
        current = asyncio.current_task()
        pending = {t for t in self._tasks if t is not current}
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)

    def __len__(self) -> int:
        return len(self._tasks)
