"""``SpillStore``: the worker's data, in memory and spilled to disk.

The worker keeps every result it holds in one mapping, ``Worker.data``. This is it:
a ``MutableMapping[Key, Any]`` with two tiers, as distributed's ``SpillBuffer`` (zict):

* **fast**: values in memory, in least-recently-used order, each with its size
  (:func:`~shoal.protocol.serialize.nbytes_of`, the same estimate the worker reports
  to the scheduler). When they total more than ``target`` bytes, the least recently
  used are written to disk until they total at most ``target``.
* **slow**: values on disk, one file per key in a directory of this store's own. Reading
  a spilled key (``store[key]``) loads it back into memory (*unspill*), which may spill
  others. A value bigger than ``target`` on its own goes straight to disk, and reading
  it does not bring it back into the fast tier.

The memory monitor (:mod:`shoal.worker.memory`) spills more through :meth:`evict` when
the process as a whole uses too much memory. Nothing is ever lost: a value that cannot
be pickled stays in memory (with a warning, once per key), and so does a value that
could not be written (disk full, directory not writable: an error is logged).

A value in memory may also have a *memory file* (:mod:`shoal.comm.shared_memory`): its
buffers, sealed, for peers on this host to map. The store closes the file when the key
leaves memory (freed or spilled).

The worker state machine does not know about any of this: a spilled key is still a
key "in memory" there. Values are serialized with :func:`shoal.protocol.serialize.dumps`
(pickle 5, out-of-band buffers). A file holds a small header (magic, frame count, frame
lengths) and then the frames, each starting on a 64-byte boundary, so that a file is read
with one ``readinto`` into one buffer and the arrays of the value are views of it.

Every method takes a lock: the event loop is the main user, but code in a task or in
``client.run`` may look at ``get_worker().data`` from another thread.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import resource
import shutil
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal._types import Key
from shoal.comm.shared_memory import SharedValue
from shoal.errors import SerializeError
from shoal.protocol.opaque import Frame, Opaque
from shoal.protocol.serialize import dumps, loads, nbytes_of

__all__ = ["SpillStore"]

logger = logging.getLogger("shoal.worker.store")

_MAGIC = b"SHOALSP1"
_HEAD = struct.Struct("<8sI")  # magic, number of frames; then one u64 length per frame
_ALIGN = 64
#: files at least this big are read back into memory maps (see _allocate)
_MMAP_MIN = 2**20
#: seconds without trying the disk again after a write failed
_DISK_RETRY = 1.0


def _padding(n: int) -> int:
    return -n % _ALIGN


@dataclass(slots=True)
class _Spilled:
    """Where a spilled value lives, and what it weighs in memory and on disk."""

    path: str
    nbytes: int
    disk_nbytes: int


class SpillStore(MutableMapping[Key, Any]):
    """Results by key: the most recently used in memory, the rest on disk.

    ``target``: bytes of values to keep in memory (``None``: no limit; values then go to
    disk only through :meth:`evict`). ``local_directory``: where to make this store's
    own directory (the system's temporary directory by default); the directory is made
    at the first spill and removed with its files by :meth:`close`.
    """

    def __init__(self, target: int | None = None, local_directory: str | None = None) -> None:
        self.target = target
        self.local_directory = local_directory
        self._fast: OrderedDict[Key, Any] = OrderedDict()
        self._sizes: dict[Key, int] = {}
        self._slow: dict[Key, _Spilled] = {}
        #: keys whose values cannot be pickled: they never leave memory
        self._pinned: set[Key] = set()
        #: memory files of values in memory, and their total size
        self._files: dict[Key, SharedValue] = {}
        self.file_nbytes = 0
        #: at most this many files are kept open (half the process's descriptors)
        self.max_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2
        self._dir: str | None = None
        self._names = itertools.count()
        self._lock = threading.RLock()
        self._disk_failing = False
        self._disk_retry_at = 0.0
        self.fast_nbytes = 0
        self.slow_nbytes = 0
        self.disk_nbytes = 0
        self.spill_count = 0
        self.spill_bytes = 0
        self.spill_seconds = 0.0
        self.unspill_count = 0
        self.unspill_bytes = 0
        self.unspill_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"<SpillStore memory: {len(self._fast)} keys, {self.fast_nbytes} bytes; "
            f"disk: {len(self._slow)} keys, {self.slow_nbytes} bytes>"
        )

    @property
    def directory(self) -> str | None:
        """This store's directory (``None`` until something is spilled)."""
        return self._dir

    # ------------------------------------------------------------------ mapping

    def __getitem__(self, key: Key) -> Any:
        with self._lock:
            if key in self._fast:
                self._fast.move_to_end(key)
                return self._fast[key]
            spilled = self._slow[key]
            value = self._read(spilled)
            if self.target is None or spilled.nbytes <= self.target:
                self._forget_slow(key)
                self._add_fast(key, value, spilled.nbytes)
                self._evict_until_below_target()
            return value

    def __setitem__(self, key: Key, value: Any) -> None:
        self.put(key, value)

    def put(
        self, key: Key, value: Any, nbytes: int | None = None, file: SharedValue | None = None
    ) -> None:
        """``store[key] = value``, with the value's size when the caller knows it, and
        the memory file it is a view of (the store closes it when done with the key)."""
        if nbytes is None:
            nbytes = nbytes_of(value)
        with self._lock:
            self.discard(key)
            # A value too big to ever stay in memory goes straight to disk, if it can.
            if self.target is not None and nbytes > self.target and self._write(key, value, nbytes):
                if file is not None:
                    file.close()  # the value on disk is no view of it
                return
            self._add_fast(key, value, nbytes)
            if file is not None:
                self._keep_file(key, file)
            self._evict_until_below_target()

    def file(self, key: Key) -> SharedValue | None:
        """The memory file of ``key``'s value, if it has one."""
        with self._lock:
            return self._files.get(key)

    def __delitem__(self, key: Key) -> None:
        with self._lock:
            if key not in self._fast and key not in self._slow:
                raise KeyError(key)
            self.discard(key)

    def discard(self, key: Key) -> None:
        """Drop ``key`` if held (its file too), without reading it back."""
        with self._lock:
            if key in self._fast:
                del self._fast[key]
                self.fast_nbytes -= self._sizes.pop(key)
                self._pinned.discard(key)
                self._close_file(key)
            elif key in self._slow:
                self._forget_slow(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:  # a key moving between tiers is briefly in neither dict
            return key in self._fast or key in self._slow

    def __len__(self) -> int:
        with self._lock:
            return len(self._fast) + len(self._slow)

    def __iter__(self) -> Iterator[Key]:
        with self._lock:
            return iter([*self._fast, *self._slow])

    def clear(self) -> None:
        """Drop every value, in memory and on disk (nothing is read back)."""
        with self._lock:
            for spilled in self._slow.values():
                _remove_file(spilled.path)
            for key in list(self._files):
                self._close_file(key)
            self._fast.clear()
            self._sizes.clear()
            self._slow.clear()
            self._pinned.clear()
            self.fast_nbytes = self.slow_nbytes = self.disk_nbytes = 0

    def close(self) -> None:
        """Drop every value and remove this store's directory."""
        with self._lock:
            self.clear()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    # ------------------------------------------------------------------ queries

    def memory_keys(self) -> set[Key]:
        """The keys whose values are in memory."""
        with self._lock:
            return set(self._fast)

    def spilled_keys(self) -> set[Key]:
        """The keys whose values are on disk."""
        with self._lock:
            return set(self._slow)

    def nbytes_by_key(self) -> dict[Key, int]:
        """The size of every value held, in memory or on disk (nothing is read back)."""
        with self._lock:
            out = dict(self._sizes)
            out.update((key, s.nbytes) for key, s in self._slow.items())
            return out

    def stats(self) -> dict[str, int | float]:
        """Figures for metrics: keys and bytes in each tier, spills and unspills so far."""
        return {
            "memory_keys": len(self._fast),
            "memory_bytes": self.fast_nbytes,
            "spilled_keys": len(self._slow),
            "spilled_bytes": self.slow_nbytes,
            "disk_bytes": self.disk_nbytes,
            "spill_count": self.spill_count,
            "spill_bytes": self.spill_bytes,
            "spill_seconds": self.spill_seconds,
            "unspill_count": self.unspill_count,
            "unspill_bytes": self.unspill_bytes,
            "unspill_seconds": self.unspill_seconds,
        }

    # ------------------------------------------------------------------ spilling

    def evict(self) -> int:
        """Spill the least recently used value that can be; return its size (0: none)."""
        with self._lock:
            for _ in range(len(self._fast)):
                key = next(iter(self._fast))
                if key in self._pinned:
                    self._fast.move_to_end(key)  # out of the way of the next look
                    continue
                value, nbytes = self._fast[key], self._sizes[key]
                if self._write(key, value, nbytes):
                    del self._fast[key]
                    del self._sizes[key]
                    self.fast_nbytes -= nbytes
                    self._close_file(key)
                    return nbytes
                if key not in self._pinned:
                    return 0  # the disk failed: trying other keys would fail the same way
                self._fast.move_to_end(key)
            return 0

    def _evict_until_below_target(self) -> None:
        if self.target is None:
            return
        while self.fast_nbytes > self.target and self.evict():
            pass

    def _add_fast(self, key: Key, value: Any, nbytes: int) -> None:
        self._fast[key] = value
        self._sizes[key] = nbytes
        self.fast_nbytes += nbytes

    def _keep_file(self, key: Key, file: SharedValue) -> None:
        if len(self._files) >= self.max_files:
            file.close()  # past the budget: the value stays, peers get its bytes
            return
        self._files[key] = file
        self.file_nbytes += file.size

    def _close_file(self, key: Key) -> None:
        if not self._files:  # nearly always (shared memory is off by default)
            return
        file = self._files.pop(key, None)
        if file is not None:
            self.file_nbytes -= file.size
            file.close()

    def _forget_slow(self, key: Key) -> None:
        spilled = self._slow.pop(key)
        self.slow_nbytes -= spilled.nbytes
        self.disk_nbytes -= spilled.disk_nbytes
        _remove_file(spilled.path)

    def _write(self, key: Key, value: Any, nbytes: int) -> bool:
        """Write ``value`` to disk as ``key``; False (value kept by the caller) on failure."""
        start = time.perf_counter()
        if self._disk_failing and time.monotonic() < self._disk_retry_at:
            return False
        try:
            frames = dumps(value).frames
        except SerializeError as e:
            if key not in self._pinned:
                logger.warning(
                    "The value of %r (%d bytes) cannot be pickled, so it stays in memory "
                    "and is never spilled to disk: %s",
                    key,
                    nbytes,
                    e,
                )
                self._pinned.add(key)
            return False
        path = ""
        try:
            path = os.path.join(self._directory(), f"{next(self._names)}.spill")
            size = _write_frames(path, frames)
        except OSError as e:
            if path:
                _remove_file(path)
            self._disk_retry_at = time.monotonic() + _DISK_RETRY
            if not self._disk_failing:
                self._disk_failing = True
                logger.error(
                    "Could not spill %r to disk (%s: %s); values stay in memory",
                    key,
                    type(e).__name__,
                    e,
                )
            return False
        if self._disk_failing:
            self._disk_failing = False
            logger.info("Spilling to disk works again")
        self._slow[key] = _Spilled(path, nbytes, size)
        self.slow_nbytes += nbytes
        self.disk_nbytes += size
        self.spill_count += 1
        self.spill_bytes += nbytes
        self.spill_seconds += time.perf_counter() - start
        return True

    def _read(self, spilled: _Spilled) -> Any:
        start = time.perf_counter()
        value = loads(Opaque(_read_frames(spilled.path)))
        self.unspill_count += 1
        self.unspill_bytes += spilled.nbytes
        self.unspill_seconds += time.perf_counter() - start
        return value

    def _directory(self) -> str:
        if self._dir is None:
            parent = self.local_directory
            if parent is not None:
                os.makedirs(parent, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="shoal-worker-", dir=parent)
        return self._dir


# ---------------------------------------------------------------------- files


def _write_frames(path: str, frames: Sequence[Frame]) -> int:
    """Write ``frames`` to a new file at ``path``; return the file's size."""
    views = [memoryview(f).cast("B") for f in frames]
    header = _HEAD.pack(_MAGIC, len(views)) + struct.pack(f"<{len(views)}Q", *map(len, views))
    zeros = bytes(_ALIGN)
    with open(path, "xb") as f:
        f.write(header)
        f.write(zeros[: _padding(len(header))])
        for view in views:
            f.write(view)
            f.write(zeros[: _padding(len(view))])
        return f.tell()


def _read_frames(path: str) -> list[memoryview]:
    """The frames of the file at ``path``: views of one buffer, read in one pass."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        buf = _allocate(size)
        done = 0
        while done < size:
            n = f.readinto(buf[done:])
            if not n:
                raise OSError(f"spill file {path} is truncated ({done} of {size} bytes)")
            done += n
    magic, count = _HEAD.unpack_from(buf)
    if magic != _MAGIC:
        raise OSError(f"{path} is not a shoal spill file")
    lengths = struct.unpack_from(f"<{count}Q", buf, _HEAD.size)
    offset = _HEAD.size + 8 * count
    frames = []
    for length in lengths:
        offset += _padding(offset)
        frames.append(buf[offset : offset + length])
        offset += length
    return frames


def _allocate(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes for a file read back.

    Big buffers are anonymous memory maps: when the value read back is dropped (or
    spilled again) the memory goes back to the system at once, whatever the allocator
    would have kept (glibc's malloc keeps freed heap memory unless trimmed).
    """
    if size >= _MMAP_MIN and hasattr(mmap, "MAP_PRIVATE"):
        return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE))
    return memoryview(bytearray(size))


def _remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning("Could not remove spill file %s: %s", path, e)
