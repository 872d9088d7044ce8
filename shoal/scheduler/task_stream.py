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

#: a run as kept: (key, worker, start, stop, status, nbytes); made a dict when read
_Run = tuple[Key, str, float, float, str, int]


def _record(run: _Run) -> dict[str, Any]:
    key, worker, start, stop, status, nbytes = run
    return {
        "key": key,
        "name": key_prefix(key),
        "worker": worker,
        "start": start,
        "stop": stop,
        "status": status,
        "nbytes": nbytes,
    }


class TaskStream:
    """A bounded, numbered log of task runs.

    Adding a run (once per task, on the scheduler's hot path) stores a tuple; the
    record dicts, with the key's prefix, are built only when someone reads them.
    """

    def __init__(self, maxlen: int) -> None:
        self._runs: deque[_Run] = deque(maxlen=maxlen)
        #: number of records ever added (the index the next one gets)
        self.count = 0

    def add(
        self, key: Key, worker: str, start: float, stop: float, status: str, nbytes: int = 0
    ) -> None:
        """Record that ``worker`` ran ``key`` from ``start`` to ``stop``."""
        self._runs.append((key, worker, start, stop, status, nbytes))
        self.count += 1

    def since(self, index: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """The records numbered ``index`` and after (those still kept), with the next index."""
        kept_from = self.count - len(self._runs)
        skip = max(index - kept_from, 0)
        if skip >= len(self._runs):
            return self.count, []
        return self.count, [_record(r) for r in list(self._runs)[skip:]]

    def between(self, start: float, stop: float | None = None) -> list[dict[str, Any]]:
        """The records of runs that ended in ``[start, stop]``."""
        return [_record(r) for r in self._runs if r[3] >= start and (stop is None or r[3] <= stop)]

    def ended_since(self, since: float) -> int:
        """How many kept runs ended at or after ``since``."""
        n = 0
        for run in reversed(self._runs):
            if run[3] < since:
                break
            n += 1
        return n
