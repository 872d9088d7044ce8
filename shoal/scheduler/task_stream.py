"""The task stream: which worker ran which task, when — kept by the scheduler.

Each record is a plain dict ``{"key", "name", "worker", "start", "stop", "status",
"nbytes"}`` (``name`` is the key's prefix, e.g. ``"inc"``; ``status`` is ``"OK"`` or
``"error"``), appended when a worker reports a task finished or failed. Records are
numbered from the scheduler's start, so a reader (``client.get_task_stream()``, the
dashboard) can ask for those after the last one it saw.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from shoal._types import Key
from shoal.scheduler.state.names import key_prefix


class TaskStream:
    """A bounded, numbered log of task runs."""

    def __init__(self, maxlen: int) -> None:
        self.records: deque[dict[str, Any]] = deque(maxlen=maxlen)
        #: number of records ever added (the index the next one gets)
        self.count = 0

    def add(
        self, key: Key, worker: str, start: float, stop: float, status: str, nbytes: int = 0
    ) -> None:
        """Record that ``worker`` ran ``key`` from ``start`` to ``stop``."""
        self.records.append(
            {
                "key": key,
                "name": key_prefix(key),
                "worker": worker,
                "start": start,
                "stop": stop,
                "status": status,
                "nbytes": nbytes,
            }
        )
        self.count += 1

    def since(self, index: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """The records numbered ``index`` and after (those still kept), with the next index."""
        kept_from = self.count - len(self.records)
        skip = max(index - kept_from, 0)
        if skip >= len(self.records):
            return self.count, []
        return self.count, list(self.records)[skip:]

    def between(self, start: float, stop: float | None = None) -> list[dict[str, Any]]:
        """The records of runs that ended in ``[start, stop]``."""
        return [
            r for r in self.records if r["stop"] >= start and (stop is None or r["stop"] <= stop)
        ]
