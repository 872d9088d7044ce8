"""Background tasks a server owns: started, remembered, cancelled together on close."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    """A set of asyncio tasks that stays referenced until each finishes."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in a task of its own and keep it until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
