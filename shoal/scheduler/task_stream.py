"""The task stream: which worker ran which task, when — kept by the scheduler.

Each record is a plain dict ``{"key", "name", "worker", "start", "stop", "status",
"nbytes"}`` (``name`` is the key's prefix, e.g. ``"inc"``; ``status`` is ``"OK"`` or
``"error"``), appended when a worker reports a task finished or failed. Records are
numbered from the scheduler's start, so a reader (``client.get_task_stream()``, the
dashboard) can ask for those after the last one it saw.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

from shoal._types import Key
from shoal.scheduler.state.names import key_prefix

_STATUSES = ("OK", "error")
_MAX_NBYTES = 2**63 - 1


class TaskStream:
    """A bounded, numbered log of task runs.

    Adding a run happens once per task, on the scheduler's hot path, and the log holds up
    to ``maxlen`` runs (100,000 by default), so runs are kept in columns: a list of keys,
    a list of worker addresses (the same string object for every run of a worker) and
    typed arrays for times, sizes and statuses, about 40 bytes a run where a tuple of
    Python floats and ints took over 200. The columns fill up, then wrap around as a
    ring. Record dicts, with the key's prefix, are built only when someone reads them.
    """

    def __init__(self, maxlen: int) -> None:
        self.maxlen = max(int(maxlen), 0)
        self._keys: list[Key] = []
        self._workers: list[str] = []
        self._starts = array("d")
        self._stops = array("d")
        self._nbytes = array("q")
        self._errors = bytearray()
        #: number of records ever added (the index the next one gets)
        self.count = 0

    def add(
        self, key: Key, worker: str, start: float, stop: float, status: str, nbytes: int = 0
    ) -> None:
        """Record that ``worker`` ran ``key`` from ``start`` to ``stop``."""
        # converted before any column grows: a bad value must not misalign them
        error = _STATUSES.index(status)
        start, stop = float(start), float(stop)
        nbytes = min(max(int(nbytes), 0), _MAX_NBYTES)
        if len(self._keys) < self.maxlen:
            self._keys.append(key)
            self._workers.append(worker)
            self._starts.append(start)
            self._stops.append(stop)
            self._nbytes.append(nbytes)
            self._errors.append(error)
        elif self.maxlen:
            i = self.count % self.maxlen
            self._keys[i] = key
            self._workers[i] = worker
            self._starts[i] = start
            self._stops[i] = stop
            self._nbytes[i] = nbytes
            self._errors[i] = error
        self.count += 1

    def _slots(self, skip: int = 0) -> Iterator[int]:
        """Column indices of the kept runs, oldest first, after the first ``skip``."""
        kept = len(self._keys)
        first = self.count % self.maxlen if kept == self.maxlen and kept else 0
        for n in range(skip, kept):
            yield (first + n) % kept

    def _record(self, i: int) -> dict[str, Any]:
        key = self._keys[i]
        return {
            "key": key,
            "name": key_prefix(key),
            "worker": self._workers[i],
            "start": self._starts[i],
            "stop": self._stops[i],
            "status": _STATUSES[self._errors[i]],
            "nbytes": self._nbytes[i],
        }

    def since(self, index: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """The records numbered ``index`` and after (those still kept), with the next index."""
        kept_from = self.count - len(self._keys)
        skip = max(index - kept_from, 0)
        return self.count, [self._record(i) for i in self._slots(skip)]

    def between(self, start: float, stop: float | None = None) -> list[dict[str, Any]]:
        """The records of runs that ended in ``[start, stop]``."""
        stops = self._stops
        return [
            self._record(i)
            for i in self._slots()
            if stops[i] >= start and (stop is None or stops[i] <= stop)
        ]

    def ended_since(self, since: float) -> int:
        """How many kept runs ended at or after ``since`` (counted from the newest)."""
        kept = len(self._keys)
        n = 0
        while n < kept and self._stops[(self.count - 1 - n) % kept] >= since:
            n += 1
        return n
