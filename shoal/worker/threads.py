"""The threads that run tasks, with completions batched back onto the event loop.

A ``ThreadPoolExecutor`` costs a future, a work item and a callback per task, and one
wake-up of the event loop per completion. Here ``nthreads`` threads take tasks from one
queue, and completions collect in a list that the loop drains in one call: one
wake-up per batch, however many tasks finished meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TaskThreads(Generic[T]):
    """``nthreads`` daemon threads calling ``run(*item)`` for each submitted item.

    ``deliver(outcomes)`` is called on ``loop`` with every outcome produced since the
    previous call, in completion order.
    """

    def __init__(
        self,
        nthreads: int,
        run: Callable[..., T],
        deliver: Callable[[list[T]], None],
        loop: asyncio.AbstractEventLoop,
        name: str = "shoal-task",
    ) -> None:
        self._run = run
        self._deliver = deliver
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[T] = []
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(nthreads)
        ]
        for t in self._threads:
            t.start()

    def submit(self, *item: Any) -> None:
        """Queue ``run(*item)`` for the next free thread."""
        self._queue.put(item)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            outcome = self._run(*item)
            # Hold neither the task's inputs nor its outcome while waiting for the next
            # task: they would stay in memory until then.
            del item
            with self._lock:
                self._done.append(outcome)
                first = len(self._done) == 1
            del outcome
            if first:
                try:
                    self._loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed: nobody is listening
                    return

    def _drain(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        if done:
            self._deliver(done)

    def shutdown(self) -> None:
        """Let each thread exit after its current task (queued tasks are dropped)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(None)
