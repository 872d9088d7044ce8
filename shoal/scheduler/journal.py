"""The scheduler's journal: every event its state machine handled, on disk, in order.

The state machine is deterministic (DESIGN.md §3), so the events it handled are enough
to rebuild it: a scheduler started again on the same journal replays them, then waits
for its workers and clients to reconnect. Each call to ``Scheduler.handle`` appends one
*record* before the state machine sees its events (write-ahead): one ``write`` of the
whole batch, which the operating system keeps even if the process is SIGKILLed the next
instant (``scheduler.journal.fsync`` also survives a power loss, at a price).

Record: ``[u32 payload length][u32 CRC-32 of the payload][payload]``, the payload a
msgpack pair: the events, each ``[class name, [field values]]``, and the table of the
distinct frames of their ``Opaque`` payloads (which are msgpack extensions naming
frames in that table; task specs are their wire tuples). A crash
in the middle of a write leaves a torn last record: reading stops at the first
incomplete or corrupt record and the file is cut back to the last good one.

Compaction: once the file passes ``scheduler.journal.compact-bytes`` (and has doubled
since the last compaction), it is rewritten as a snapshot of the current state
(:func:`~shoal.scheduler.state.snapshot.snapshot_events`) into a temporary file that
replaces the journal atomically.

One scheduler at a time: a journal in use is locked (``flock`` on ``PATH.lock``, which
the kernel releases when its process dies, even by SIGKILL); a second scheduler on the
same journal is refused before it reads or writes anything.
"""

from __future__ import annotations

import fcntl
import logging
import operator
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import msgpack

from shoal.protocol.messages import TaskSpec
from shoal.protocol.opaque import Opaque
from shoal.protocol.wire import frame_identity
from shoal.scheduler.state.events import _EVENTS, Event

logger = logging.getLogger("shoal.scheduler.journal")

#: the first bytes of every journal file
MAGIC = b"SHOALJ1\n"
_HEADER = struct.Struct("<II")
_OPAQUE = 1
#: events per record when a snapshot is written (bounds the size of one record)
_SNAPSHOT_CHUNK = 10_000


class JournalError(Exception):
    """The journal can't be used (not a journal, or an event it can't rebuild)."""


_getters: dict[type[Event], tuple[tuple[str, ...], Callable[[Event], Any]]] = {}


def _fields_of(cls: type[Event]) -> tuple[tuple[str, ...], Callable[[Event], Any]]:
    known = _getters.get(cls)
    if known is None:
        names = tuple(f.name for f in fields(cls))
        getter = operator.attrgetter(*names)
        known = _getters[cls] = (names, getter)
    return known


class _Encoder:
    """Packs one record; each distinct frame of its ``Opaque`` values is written once.

    The run specs of one graph share their function's frame (one buffer on the
    scheduler): the record keeps a table of frames and an ``Opaque`` becomes the
    indices of its frames in it.
    """

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.index: dict[int, int] = {}

    def default(self, obj: Any) -> Any:
        if isinstance(obj, Opaque):
            ids = []
            for frame in obj.frames:
                ident = frame_identity(frame)
                i = self.index.get(ident)
                if i is None:
                    i = self.index[ident] = len(self.frames)
                    self.frames.append(frame)
                ids.append(i)
            return msgpack.ExtType(_OPAQUE, struct.pack(f"<{len(ids)}I", *ids))
        if isinstance(obj, TaskSpec):
            return obj.to_wire()  # Event._decode rebuilds it (GraphSubmitted)
        if hasattr(type(obj), "__index__"):
            return operator.index(obj)
        raise TypeError(f"cannot journal an object of type {type(obj).__qualname__!r}")

    def pack(self, obj: Any) -> bytes:
        return msgpack.packb(obj, use_bin_type=True, default=self.default)  # type: ignore[no-any-return]


def _unpack(data: bytes, frames: tuple[bytes, ...]) -> Any:
    def ext_hook(code: int, ext: bytes) -> Any:
        if code == _OPAQUE:
            ids = struct.unpack(f"<{len(ext) // 4}I", ext)
            return Opaque([frames[i] for i in ids])
        raise JournalError(f"unknown msgpack extension {code} in the journal")

    return msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False, ext_hook=ext_hook)


def encode_events(events: Sequence[Event]) -> bytes:
    """One journal record holding ``events``."""
    encoder = _Encoder()
    items = []
    for event in events:
        cls = type(event)
        _, getter = _fields_of(cls)
        items.append((cls.__name__, getter(event)))  # every event has 2+ fields
    body = encoder.pack(items)
    payload: bytes = msgpack.packb((body, encoder.frames), use_bin_type=True)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> list[Event]:
    """The events of one record's payload."""
    body, frames = msgpack.unpackb(payload, raw=False, use_list=False)
    events = []
    for name, values in _unpack(body, frames):
        cls = _EVENTS.get(name)
        if cls is None:
            raise JournalError(f"unknown event {name!r} in the journal")
        names, _ = _fields_of(cls)
        events.append(cls._decode(dict(zip(names, values))))
    return events


def read_records(data: bytes) -> tuple[list[list[Event]], int]:
    """The records in ``data`` up to the first torn or corrupt one, and where it starts."""
    if not data.startswith(MAGIC):
        raise JournalError("not a shoal journal (it does not start with the journal's mark)")
    records: list[list[Event]] = []
    offset = len(MAGIC)
    view = memoryview(data)
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = view[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        try:
            records.append(decode_payload(bytes(payload)))
        except Exception as e:  # a record that checks out but can't be decoded
            raise JournalError(f"record at byte {offset} can't be decoded: {e}") from e
        offset = start + length
    return records, offset


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: one ``os.write`` may write less (Linux stops at 2 GiB)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _chunks(events: Sequence[Event], size: int) -> Iterator[Sequence[Event]]:
    for i in range(0, len(events), size):
        yield events[i : i + size]


class Journal:
    """An append-only journal file: read what it holds, then append and compact."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None
        self._lock_fd: int | None = None
        #: bytes in the file now, and right after the last compaction
        self.size = 0
        self.compacted_size = 0

    def _lock(self) -> None:
        """Hold the journal's lock (until :meth:`close`); refuse one held elsewhere."""
        if self._lock_fd is not None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise JournalError(
                f"can't use {self.path} as the scheduler's journal ({e.strerror}): give "
                "--journal a path in a directory this user can create and write"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(
                f"journal {self.path} is in use by another scheduler (it holds "
                f"{lock_path}): stop that scheduler first, or give this one another "
                "--journal"
            ) from None
        self._lock_fd = fd

    def recover(self) -> list[Event]:
        """Every event journaled so far, in order; cut off a torn last record."""
        self._lock()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        if not data:
            return []
        try:
            records, good = read_records(data)
        except JournalError as e:
            self.close()
            raise JournalError(
                f"{self.path}: {e}. Point --journal at a new file or at a journal "
                "this version of shoal wrote; this file was left untouched."
            ) from None
        if good < len(data):
            logger.warning(
                "journal %s: the last %d bytes are a torn or corrupt record (a crash "
                "mid-write?); dropping them and keeping the %d records before",
                self.path,
                len(data) - good,
                len(records),
            )
            os.truncate(self.path, good)
        self.size = self.compacted_size = good
        return [event for record in records for event in record]

    def open(self) -> None:
        """Open the file for appending (creating it and its folder if needed)."""
        self._lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self._fd).st_size
        if not self.size:
            os.write(self._fd, MAGIC)
            self.size = len(MAGIC)

    def append(self, events: Sequence[Event]) -> None:
        """Write one record holding ``events`` (before the state machine handles them)."""
        if self._fd is None:
            raise JournalError(f"journal {self.path} is not open")
        record = encode_events(events)
        try:
            _write_all(self._fd, record)
        except OSError:
            # e.g. a full disk: cut the partial record, so that later ones still replay
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(record)
        if self.fsync:
            os.fsync(self._fd)

    def should_compact(self, threshold: int) -> bool:
        """Whether the file passed ``threshold`` bytes and doubled since it was compacted."""
        return self.size > threshold and self.size > 2 * self.compacted_size

    def compact(self, snapshot: Iterable[Event]) -> None:
        """Replace the journal by ``snapshot`` (atomically: a crash keeps one or the other)."""
        events = list(snapshot)
        tmp = self.path.with_name(self.path.name + ".compacting")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        size = len(MAGIC)
        try:
            _write_all(fd, MAGIC)
            for chunk in _chunks(events, _SNAPSHOT_CHUNK):
                record = encode_events(chunk)
                _write_all(fd, record)
                size += len(record)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.open()
        self.compacted_size = size
        logger.info("journal %s compacted to %d events, %d bytes", self.path, len(events), size)

    def close(self) -> None:
        """Close the file and let go of its lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
