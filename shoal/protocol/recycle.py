"""Large receive buffers written again: memory a worker has already faulted in.

A body of 8 MiB or more is received into an anonymous mapping of its own
(:func:`shoal.protocol.frames.allocate`). New memory costs the kernel a fault and a
zeroing per page: copying 256 MB out of a peer on the same host takes 26-28 ms into new
memory and 17 ms into memory already touched (two threads, 2 cores, where one thread's
memcpy takes 22 ms). Arrays cut in equal chunks move in equal sizes, so a worker keeps
the mappings it received into: once nothing refers to one any more (the value it held
was freed), it is idle, and the next body of the same size is written into it instead
of a new mapping.

Idle mappings are unmapped after ``keep_seconds``, beyond ``max_idle_bytes`` of them
(oldest first), and all at once when the worker's memory monitor finds the process
over its spill or pause threshold (:meth:`Recycler.drop_idle`). Nothing is kept until a
process turns it on (:meth:`Recycler.enable`: workers do, from ``comm.recycle-bytes``).

"Nothing refers to it" is the mapping's reference count. Every memoryview, array or
ctypes object over a mapping holds a reference to it (through the managed buffer of the
memoryview it came from), so a mapping whose only reference is the recycler's own can't
be read or written by anyone: handing it out again is as safe as a new one. Its old
bytes are still there; every receiving path writes the whole body before anyone reads
it, and drops the buffer otherwise.
"""

from __future__ import annotations

import math
import mmap
import sys
import threading

#: Idle mappings are unmapped after this many seconds.
KEEP_SECONDS = 5.0


class _Kept:
    __slots__ = ("buf", "idle_since")

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.idle_since: float | None = None

    def refs(self) -> int:
        return sys.getrefcount(self.buf)

    def idle(self) -> bool:
        """Whether only this record refers to the mapping."""
        return self.refs() == _UNREFERENCED and not self.buf.closed


#: What :meth:`_Kept.refs` says of a mapping only its record refers to (this record's
#: reference, and the call's own where the interpreter counts it), measured here.
_UNREFERENCED = _Kept(mmap.mmap(-1, mmap.PAGESIZE)).refs()


class Recycler:
    """The large receive buffers of this process, kept for reuse (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[int, list[_Kept]] = {}
        self.max_idle_bytes = 0
        self.keep_seconds = KEEP_SECONDS

    @property
    def enabled(self) -> bool:
        """Whether buffers are kept at all."""
        return self.max_idle_bytes > 0

    def enable(self, max_idle_bytes: int, keep_seconds: float = KEEP_SECONDS) -> None:
        """Keep received buffers, with at most ``max_idle_bytes`` of them idle (0: off)."""
        with self._lock:
            self.max_idle_bytes = max(0, int(max_idle_bytes))
            self.keep_seconds = keep_seconds
            if not self.max_idle_bytes:
                self._kept.clear()  # those in use are freed with their last view

    def take(self, nbytes: int) -> mmap.mmap | None:
        """An idle mapping of exactly ``nbytes``, handed out again; ``None`` if none."""
        with self._lock:
            for kept in self._kept.get(nbytes, ()):
                if kept.idle():
                    kept.idle_since = None
                    return kept.buf
        return None

    def keep(self, buf: mmap.mmap) -> None:
        """Follow ``buf`` (a mapping just made to receive into) for later reuse."""
        with self._lock:
            if self.max_idle_bytes:
                self._kept.setdefault(len(buf), []).append(_Kept(buf))

    def trim(self, now: float) -> int:
        """Unmap the mappings idle for longer than ``keep_seconds``, then the oldest idle
        ones over ``max_idle_bytes``; return the bytes unmapped (call it every so often:
        the memory monitor does)."""
        with self._lock:
            return self._sweep(now, self.keep_seconds, self.max_idle_bytes)

    def drop_idle(self) -> int:
        """Unmap every idle mapping now (memory is short); return the bytes unmapped."""
        with self._lock:
            return self._sweep(0.0, -math.inf, 0)

    def _sweep(self, now: float, keep_seconds: float, budget: int) -> int:
        """Forget closed mappings; unmap those idle for ``keep_seconds`` or more, then the
        oldest idle ones over ``budget`` bytes; return the bytes unmapped."""
        idle: list[tuple[float, int, _Kept]] = []
        freed = 0
        for size, kept in list(self._kept.items()):
            staying = []
            for k in kept:
                if k.buf.closed:
                    continue  # closed by whoever used it: nothing to keep
                if not k.idle():
                    k.idle_since = None
                    staying.append(k)
                    continue
                if k.idle_since is None:
                    k.idle_since = now
                if now - k.idle_since < keep_seconds:
                    staying.append(k)
                    idle.append((k.idle_since, size, k))
                else:
                    freed += size
            self._kept[size] = staying
        held = sum(size for _, size, _ in idle)
        for _, size, k in sorted(idle, key=lambda e: e[0]):
            if held <= budget:
                break
            self._kept[size].remove(k)
            held -= size
            freed += size
        for size in [s for s, kept in self._kept.items() if not kept]:
            del self._kept[size]
        return freed

    def stats(self) -> dict[str, int]:
        """How many mappings are followed, and how many bytes of them are idle."""
        with self._lock:
            kept = [(size, k) for size, ks in self._kept.items() for k in ks]
            return {
                "buffers": len(kept),
                "idle_bytes": sum(size for size, k in kept if k.idle()),
            }


#: This process's recycler (off until a worker turns it on).
recycler = Recycler()
