"""Memory: parsing ``--memory-limit``, and the worker's memory monitor.

Thresholds are fractions of the worker's memory limit, as in distributed
(``worker.memory.*`` in :mod:`shoal.config`; ``False``/``None``/``0`` turns one off, a
memory limit of 0 turns them all off):

* ``target`` (0.6): the :class:`~shoal.worker.store.SpillStore` keeps at most this much
  of results (their estimated sizes) in memory, and spills the least recently used;
* ``spill`` (0.7): when the process's memory (RSS) is above this, the monitor spills
  more, least recently used first, until the process is back under ``target`` (or no
  value is left in memory: the rest is not the store's);
* ``pause`` (0.8): above this the worker starts no new task (``PauseEvent``), and
  starts again when memory falls back below it (``UnpauseEvent``);
* ``terminate`` (0.95): the nanny restarts the worker (:mod:`shoal.worker.nanny`).

The thresholds on process memory compare the RSS of the whole process with the limit.
Workers that share a process (a threaded ``LocalCluster``) share one RSS, so there the
limit is the sum of their limits: each worker still spills its own values.

The decisions are pure functions of (memory, limit, fractions); :class:`MemoryMonitor`
samples the process (:func:`process_memory`, the hook tests replace) every
``worker.memory.monitor-interval`` seconds and acts on them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from shoal import config
from shoal._libc import trim_memory
from shoal.comm import shared_memory
from shoal.protocol.recycle import recycler
from shoal.worker.store import SpillStore

logger = logging.getLogger("shoal.worker.memory")

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
}


def parse_bytes(text: str | int | float) -> int:
    """Parse ``"4GB"``, ``"512 MiB"``, ``"1e9"`` or a number into bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"could not parse {text!r} as a size; use e.g. '4GB', '512MiB', 2e9")
    try:
        number = float(m.group(1))
    except ValueError:
        raise ValueError(f"could not parse {text!r} as a size") from None
    return int(number * _UNITS[m.group(2).lower()])


def system_memory() -> int:
    """Memory available to this process: physical memory, capped by cgroup limits."""
    limit = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < limit:
            limit = int(value)
    return limit


def parse_memory_limit(
    limit: str | int | float | None, nthreads: int, total_cores: int | None = None
) -> int:
    """The memory limit in bytes, as ``dask worker --memory-limit`` understands it.

    ``"auto"`` gives this worker its share of the machine by threads; a number ≤ 1 is a
    fraction of the machine's memory; ``0``/``None`` means no limit (returns 0).
    """
    if limit is None:
        return 0
    total = system_memory()
    if isinstance(limit, str) and limit.strip().lower() == "auto":
        cores = total_cores or os.cpu_count() or 1
        return int(total * min(1.0, nthreads / cores))
    if isinstance(limit, str):
        try:
            as_float = float(limit)
        except ValueError:
            return min(parse_bytes(limit), total)
        limit = as_float
    if limit <= 0 or math.isnan(limit):
        return 0
    if limit <= 1:
        return int(total * limit)
    return int(limit)


def format_bytes(n: float) -> str:
    """``1_500_000`` as ``"1.43 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


# ---------------------------------------------------------------------- thresholds


def _fraction(value: Any, name: str) -> float | None:
    """A configured fraction; ``False``, ``None``, ``0`` (or "false", "none") turn it off."""
    if value is None or value is False:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("false", "none", "no", "off", ""):
            return None
        value = float(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"worker.memory.{name} must be a fraction or False, not {value!r}")
    return float(value) or None


@dataclass(slots=True, unsafe_hash=True)
class MemoryFractions:
    """Fractions of the memory limit at which the worker acts (``None``: never)."""

    target: float | None = 0.6
    spill: float | None = 0.7
    pause: float | None = 0.8
    terminate: float | None = 0.95

    @classmethod
    def from_config(cls) -> MemoryFractions:
        """The ``worker.memory.*`` settings."""
        return cls(
            **{
                name: _fraction(config.get(f"worker.memory.{name}"), name)
                for name in ("target", "spill", "pause", "terminate")
            }
        )

    def store_target(self, limit: int) -> int | None:
        """Bytes of results the store keeps in memory (``None``: no limit)."""
        if not limit or self.target is None:
            return None
        return int(limit * self.target)

    def spill_goal(self, memory: int, limit: int) -> int | None:
        """Process memory to spill down to, if ``memory`` calls for spilling, else None."""
        if not limit or self.spill is None or memory <= self.spill * limit:
            return None
        return int(limit * (self.target or self.spill))

    def should_pause(self, memory: int, limit: int) -> bool:
        """Whether a worker using ``memory`` of ``limit`` should start no new task."""
        return bool(limit) and self.pause is not None and memory > self.pause * limit

    @property
    def monitors_process(self) -> bool:
        """Whether process memory matters at all (to spill or to pause)."""
        return self.spill is not None or self.pause is not None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ResidentMemory:
    """Reads the resident memory (RSS) of process ``pid``, again and again, cheaply.

    On Linux, one ``pread`` of ``/proc/PID/statm`` on a descriptor opened once: one
    system call (1.6 µs), where psutil opens, reads and closes the file (13 µs). Each
    call lets another thread take the interpreter lock, and the nannies of a
    LocalCluster ask ten times a second each from the loop that also runs its scheduler.
    The descriptor stays with the process it was opened for, never a later one given
    the same pid. Elsewhere, psutil. Raises ``psutil.NoSuchProcess`` when there is no
    such process.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = None
        self._ps: psutil.Process | None = None
        try:
            fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if os.path.isdir("/proc/self"):
                raise psutil.NoSuchProcess(pid) from None
            self._ps = psutil.Process(pid)
        except OSError:
            self._ps = psutil.Process(pid)
        else:
            self._fd = fd
            weakref.finalize(self, os.close, fd)

    def rss(self) -> int:
        """The process's resident memory in bytes; 0 once it has ended."""
        try:
            if self._fd is not None:
                return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE
            assert self._ps is not None
            return int(self._ps.memory_info().rss)
        except (OSError, IndexError, ValueError, psutil.Error):
            return 0


_own: ResidentMemory | None = None


def process_memory() -> int:
    """Resident memory (RSS) of this process, in bytes."""
    global _own
    if _own is None or _own.pid != os.getpid():  # a forked child reads its own
        _own = ResidentMemory(os.getpid())
    return _own.rss()


#: Whether this system lists each thread's children in /proc (Linux with
#: CONFIG_PROC_CHILDREN); None until first asked.
_proc_children: bool | None = None


def descendants(pid: int) -> list[int]:
    """The pids of the processes ``pid`` started, and of those they started, and so on.

    On Linux it reads ``/proc/PID/task/TID/children``: one small file per thread of each
    process in the tree. Elsewhere it asks psutil, which reads the parent of every
    process of the machine: hundreds of files on a busy host, each read letting another
    thread take the interpreter lock (a nanny asks every second, from the event loop
    that, in a LocalCluster, also runs the scheduler).
    """
    global _proc_children
    if _proc_children is None:
        me = os.getpid()
        _proc_children = os.path.exists(f"/proc/{me}/task/{me}/children")
    if not _proc_children:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    found: list[int] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # it has ended
        for tid in threads:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue  # the thread has ended
            found += children
            parents += children
    return found


# ---------------------------------------------------------------------- the monitor

#: Monitors running in this process: their limits add up (see the module docstring).
_running: weakref.WeakSet[MemoryMonitor] = weakref.WeakSet()


class MemoryMonitor:
    """Watches the process's memory for one worker: spills its values, pauses it.

    ``on_pause(paused)`` is called when the worker should pause (``True``) or run again
    (``False``); :attr:`paused` says which was called last. :meth:`run` calls
    :meth:`check` periodically; :meth:`stop` when the worker closes.
    """

    #: Seconds between two forced garbage collections while spilling.
    gc_interval = 1.0
    #: Seconds of spilling after which the monitor lets the event loop run.
    yield_interval = 0.5

    def __init__(
        self,
        store: SpillStore,
        memory_limit: int,
        on_pause: Callable[[bool], None],
        *,
        fractions: MemoryFractions | None = None,
        name: str = "",
    ) -> None:
        self.store = store
        self.memory_limit = memory_limit
        self.fractions = fractions or MemoryFractions.from_config()
        self.on_pause = on_pause
        self.name = name
        self.paused = False
        #: the process memory measured last
        self.memory = 0
        self._last_gc = -math.inf
        self._gc_seconds = 0.0
        self._stuck = False
        _running.add(self)
        # large receive buffers kept for reuse: at most a tenth of the limit idle
        idle = parse_bytes(config.get("comm.recycle-bytes") or 0)
        recycler.enable(min(idle, self.process_limit // 10))

    def stop(self) -> None:
        """Take this worker's limit out of the process's total."""
        _running.discard(self)
        if not _running:
            recycler.enable(0)

    @property
    def process_limit(self) -> int:
        """The memory limit of this process: the sum over the workers it runs."""
        return sum(m.memory_limit for m in list(_running)) or self.memory_limit

    def measure(self) -> int:
        """Read the process's memory (through :func:`process_memory`), plus what the
        memory files of the store hold that the process has not read (not in its RSS)."""
        self.memory = process_memory() + shared_memory.unmapped_bytes(self.store.file_nbytes)
        return self.memory

    async def run(self, running: Callable[[], bool]) -> None:
        """:meth:`check` every ``worker.memory.monitor-interval`` seconds while ``running()``."""
        interval = float(config.get("worker.memory.monitor-interval") or 0.1)
        while running():
            try:
                recycler.trim(time.monotonic())
                await self.check()
            except Exception:  # never let a bad reading end the monitor
                logger.exception("Worker %s: the memory monitor failed", self.name)
            await asyncio.sleep(interval)

    async def check(self) -> None:
        """Measure; pause or unpause; spill if the process uses too much memory."""
        if not self.memory_limit or not self.fractions.monitors_process:
            return
        memory = self.measure()
        limit = self.process_limit
        f = self.fractions
        if f.spill_goal(memory, limit) is not None or f.should_pause(memory, limit):
            memory = self._release(memory)  # perhaps only freed memory not given back
        self._maybe_pause(memory)
        await self._maybe_spill(memory)

    def _release(self, memory: int) -> int:
        """Collect garbage and give freed heap memory back to the system; measure again.

        At most one run every :attr:`gc_interval` seconds, and no more than about 5% of
        the time (a collection takes long in a process with many objects).
        """
        if recycler.drop_idle():
            memory = self.measure()
        now = time.monotonic()
        if now - self._last_gc < max(self.gc_interval, 20 * self._gc_seconds):
            return memory
        gc.collect()
        trim_memory()
        self._last_gc = time.monotonic()
        self._gc_seconds = self._last_gc - now
        return self.measure()

    def _maybe_pause(self, memory: int) -> None:
        limit = self.process_limit
        pause = self.fractions.should_pause(memory, limit)
        if pause == self.paused:
            return
        self.paused = pause
        assert self.fractions.pause is not None or not pause
        fraction = self.fractions.pause or 0.0
        logger.warning(
            "Worker %s %s: process memory %s is %.1f%% of the limit %s (pause above %.0f%%)%s",
            self.name,
            "pauses" if pause else "runs again",
            format_bytes(memory),
            100 * memory / limit,
            format_bytes(limit),
            100 * fraction,
            f"; {self.store.stats()['spilled_keys']} keys spilled to disk" if not pause else "",
        )
        self.on_pause(pause)

    async def _maybe_spill(self, memory: int) -> None:
        """Spill least recently used values until the process is back under its goal.

        The process's memory does not fall at once when values go (the allocator may
        keep the pages, cycles wait for the collector): spill about as much as is
        needed, measure again, collect garbage and trim the heap if that did not help
        (:meth:`_release`), and go on while memory stays above the goal and values are
        left in memory. The event loop gets a turn every :attr:`yield_interval` seconds.
        """
        limit = self.process_limit
        goal = self.fractions.spill_goal(memory, limit)
        if goal is None:
            self._stuck = False
            return
        start = last_yield = time.monotonic()
        spilled = count = 0
        while memory > goal:
            need, freed = memory - goal, 0
            while freed < need and time.monotonic() - last_yield < self.yield_interval:
                nbytes = self.store.evict()
                if not nbytes:
                    break
                freed += nbytes
                count += 1
            spilled += freed
            if not freed and time.monotonic() - last_yield < self.yield_interval:
                self._nothing_to_spill(memory, limit)
                break
            memory = self.measure()
            if memory > goal:
                memory = self._release(memory)
            self._maybe_pause(memory)
            now = time.monotonic()
            if now - last_yield >= self.yield_interval:
                await asyncio.sleep(0)
                last_yield = time.monotonic()
        if count:
            logger.debug(
                "Worker %s spilled %d values (%s) in %.3f s; process memory now %s",
                self.name,
                count,
                format_bytes(spilled),
                time.monotonic() - start,
                format_bytes(memory),
            )

    def _nothing_to_spill(self, memory: int, limit: int) -> None:
        """Say once (until memory falls below the spill threshold) that spilling is stuck."""
        if self._stuck:
            return
        self._stuck = True
        left = self.store.fast_nbytes
        logger.warning(
            "Worker %s: process memory %s is above %.0f%% of the limit %s, and %s; the "
            "rest is not the worker's data (a leak, or memory the allocator did not give "
            "back to the system)",
            self.name,
            format_bytes(memory),
            100 * (self.fractions.spill or 0.0),
            format_bytes(limit),
            f"{format_bytes(left)} of values that cannot be spilled stay in memory "
            "(unpicklable, or the disk failed)"
            if left
            else "no value is left in memory to spill",
        )
