"""Frames ⇄ bytes: the wire format of one message, as a sans-I/O decoder.

One message on the wire::

    [u64 LE frame count][u64 LE length x count][frame 0 bytes][frame 1 bytes]…

Frame 0 is the msgpack header; further frames are opaque payloads (pickle streams and
their out-of-band buffers).  This module knows nothing of msgpack, sockets or event
loops: bytes go in, lists of frames come out (the h11 style).

Rationale:

* **Limits before allocation.**  The decoder reads the frame count, checks it, reads
  the lengths, checks the header size and the total, and only then allocates.  A
  prefix announcing 2**60 bytes costs a few bytes of memory and one clear
  :class:`MessageTooLarge`, not a ``MemoryError`` that takes the process down.
* **Zero copies for big frames.**  The whole body of a message is one preallocated
  ``bytearray``; frames are ``memoryview`` slices of it.  While a large part of the
  body is still missing, :meth:`FrameDecoder.get_buffer` hands the transport a view
  straight into that body (``asyncio.BufferedProtocol`` style), so ``recv_into``
  writes the bytes where they will stay: numpy arrays unpickled from those frames use
  that memory, writable, with no extra copy.  Small reads go through a scratch buffer
  and are copied (cheap), so many small messages cost few syscalls.
* **Errors are sticky.**  Once the stream is found malformed there is no way to find
  the next message boundary again, so the decoder stays in the error state.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from shoal.errors import LocalProtocolError, MessageTooLarge, ProtocolError, RemoteProtocolError
from shoal.protocol.opaque import Frame
from shoal.protocol.recycle import recycler

__all__ = [
    "DEFAULT_LIMITS",
    "FrameDecoder",
    "Limits",
    "allocate",
    "check_frame_count",
    "check_frame_lengths",
    "encode_frames",
    "frame_nbytes",
]


@dataclass(frozen=True)
class Limits:
    """What a reader accepts; checked before anything is allocated.

    ``max_frames``: frames per message; ``max_header_bytes``: size of frame 0 (the
    msgpack header); ``max_message_bytes``: all frames of one message together.
    """

    max_frames: int = 1_000_000
    max_header_bytes: int = 64 * 2**20
    max_message_bytes: int = 2 * 2**30


#: The limits used when none are given.
DEFAULT_LIMITS = Limits()

_U64 = struct.Struct("<Q")
#: Size of the scratch buffer small reads go through.
_SCRATCH_SIZE = 64 * 1024
#: When at least this much of the current target is missing, read straight into it.
_DIRECT_THRESHOLD = 64 * 1024
#: Frames smaller than this are joined (copied) into the prefix by encode_frames.
_JOIN_THRESHOLD = 2048


def frame_nbytes(frame: Frame) -> int:
    """Size of a frame in bytes (``len`` would count items of a typed memoryview)."""
    if isinstance(frame, memoryview):
        return frame.nbytes
    return len(frame)


def _as_byte_view(frame: Frame) -> memoryview:
    """A flat, byte-format view of ``frame``, so that it can be sliced by bytes."""
    mv = memoryview(frame)
    if mv.format != "B" or mv.ndim != 1:
        if not mv.c_contiguous:
            raise LocalProtocolError(
                f"cannot send a non-contiguous buffer (shape {mv.shape}, strides {mv.strides})"
            )
        mv = mv.cast("B")
    return mv


def check_frame_count(count: int, limits: Limits) -> None:
    """Raise if a message announcing ``count`` frames must be refused."""
    if count == 0:
        raise RemoteProtocolError(
            "invalid message: its prefix announces 0 frames "
            "(every message has at least a header frame)"
        )
    if count > limits.max_frames:
        raise MessageTooLarge(
            f"message refused: it announces {count:,} frames, more than the limit of "
            f"{limits.max_frames:,} frames (Limits.max_frames); send fewer objects per "
            "message, or raise the receiver's limit"
        )


def check_frame_lengths(lengths: Sequence[int], limits: Limits) -> int:
    """Raise if frames of these lengths must be refused; return their total size."""
    check_frame_count(len(lengths), limits)
    if lengths[0] > limits.max_header_bytes:
        raise MessageTooLarge(
            f"message refused: its header frame announces {lengths[0]:,} bytes, more than "
            f"the limit of {limits.max_header_bytes:,} bytes (Limits.max_header_bytes); "
            "large values belong in payload frames (pickled), not in the header, or "
            "raise the receiver's limit"
        )
    total = sum(lengths)
    if total > limits.max_message_bytes:
        raise MessageTooLarge(
            f"message refused: it announces {total:,} bytes, more than the limit of "
            f"{limits.max_message_bytes:,} bytes (Limits.max_message_bytes); send the data "
            "in smaller pieces (more chunks or partitions), or raise the receiver's limit"
        )
    return total


def encode_frames(
    frames: Sequence[Frame], limits: Limits = DEFAULT_LIMITS
) -> list[bytes | memoryview]:
    """Return the buffers that put one message of ``frames`` on the wire, in order.

    The first buffer is the prefix (frame count and lengths).  Frames are passed on
    unchanged as flat byte views, never copied, except that runs of tiny frames are
    joined (into the prefix or with each other) so that a send needs fewer iovecs.
    Raise :class:`LocalProtocolError` for no frames, more than ``limits.max_frames``
    frames or a non-contiguous buffer.
    """
    count = len(frames)
    if count == 0:
        raise LocalProtocolError("cannot send a message with no frames")
    if count > limits.max_frames:
        raise LocalProtocolError(
            f"cannot send a message of {count:,} frames: the limit is "
            f"{limits.max_frames:,} (Limits.max_frames)"
        )
    views = [_as_byte_view(f) for f in frames]
    prefix = struct.pack(f"<Q{count}Q", count, *(v.nbytes for v in views))
    out: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = [prefix]  # small pieces to join into one bytes
    for v in views:
        if v.nbytes < _JOIN_THRESHOLD:
            pending.append(v)
            continue
        out.append(pending[0] if len(pending) == 1 else b"".join(pending))
        out.append(v)
        pending = []
    if pending:
        out.append(pending[0] if len(pending) == 1 else b"".join(pending))
    # ``out`` never starts with an empty join: the prefix is always first.
    return [b for b in out if len(b)]


# Decoder states: what the current target buffer holds.
_COUNT, _LENGTHS, _BODY = 0, 1, 2


#: Message bodies at least this large get their own anonymous memory mapping.
_MMAP_THRESHOLD = 1 << 20


def _transparent_huge_pages() -> bool:
    """Whether this kernel gives huge pages to a mapping that asks for them."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


_HUGE_PAGES = hasattr(mmap, "MADV_HUGEPAGE") and _transparent_huge_pages()
#: Bodies at least this large ask for huge pages (a smaller mapping is rarely aligned
#: to 2 MiB, and would get neither huge pages nor populated ones).
_HUGE_THRESHOLD = 8 << 20


def allocate(nbytes: int) -> bytearray | mmap.mmap:
    """Writable memory for a message body of ``nbytes``.

    A large ``bytearray`` is zeroed page by page by the allocator, then written again
    by the socket.  An anonymous mapping that asks for transparent huge pages is
    faulted in 2 MiB at a time as the socket writes it (a 256 MiB body: 128 faults, not
    65,536); without huge pages, the kernel populates all its pages in one call
    (``MAP_POPULATE``).  Receiving a 256 MB array on loopback: 1.1 GB/s into a
    ``bytearray``, 1.6 GB/s populated, 2.5 GB/s with huge pages.

    In a worker, a large body goes into a mapping it received into before and no longer
    uses, when one of the same size is idle (:mod:`shoal.protocol.recycle`).
    """
    if nbytes < _MMAP_THRESHOLD:
        return bytearray(nbytes)
    if nbytes < _HUGE_THRESHOLD:
        return _mapping(nbytes, huge=False)
    buf = recycler.take(nbytes) if recycler.enabled else None
    if buf is None:
        buf = _mapping(nbytes, huge=_HUGE_PAGES)
        recycler.keep(buf)
    return buf


def _mapping(nbytes: int, huge: bool) -> mmap.mmap:
    """A new anonymous mapping: asking for huge pages, or else populated at once."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if not huge:
        return mmap.mmap(-1, nbytes, flags=flags | getattr(mmap, "MAP_POPULATE", 0))
    buf = mmap.mmap(-1, nbytes, flags=flags)
    with contextlib.suppress(OSError):
        buf.madvise(mmap.MADV_HUGEPAGE)
    return buf


class FrameDecoder:
    """Incremental decoder: bytes in (from any split), complete messages out.

    The transport asks :meth:`get_buffer` where to write, writes up to ``len(buf)``
    bytes there (``sock.recv_into``), then calls :meth:`buffer_updated` with how many
    bytes it wrote.  Complete messages are then available from :meth:`next_message`.
    :meth:`receive_data` is the same for bytes already in hand (tests, fuzzing).

    Malformed input raises :class:`RemoteProtocolError` (or :class:`MessageTooLarge`);
    the decoder then stays in that error state and every later call raises the same
    error, except that messages completed before the error are still returned by
    :meth:`next_message` first.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._scratch = memoryview(bytearray(_SCRATCH_SIZE))
        self._count_target = bytearray(8)
        self._messages: deque[list[memoryview]] = deque()
        self._error: ProtocolError | None = None
        self._last_len = -1  # length of the last buffer handed out; -1: none
        self._last_direct = False
        self._count = 0
        self._lengths: tuple[int, ...] = ()
        self._set_target(_COUNT, self._count_target)

    # ------------------------------------------------------------------ public API

    @property
    def in_progress(self) -> bool:
        """True when part of a message has been received but not all of it."""
        return self._state != _COUNT or self._pos > 0

    @property
    def error(self) -> ProtocolError | None:
        """The error the decoder is stuck in, if any."""
        return self._error

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Return a writable buffer for the next bytes of the stream.

        ``sizehint`` is accepted for ``BufferedProtocol`` compatibility and ignored:
        the buffer is either the missing part of the current message (when large) or
        a 64 KiB scratch buffer.
        """
        if self._error is not None:
            raise self._error
        remaining = len(self._target) - self._pos
        if remaining >= _DIRECT_THRESHOLD:
            self._last_direct = True
            buf = self._target_view[self._pos :]
        else:
            self._last_direct = False
            buf = self._scratch
        self._last_len = len(buf)
        return buf

    def buffer_updated(self, nbytes: int) -> None:
        """Account for ``nbytes`` written into the buffer :meth:`get_buffer` returned."""
        if self._error is not None:
            raise self._error
        if not 0 <= nbytes <= self._last_len:
            raise ValueError(
                f"buffer_updated({nbytes}) without a matching get_buffer() "
                f"(last buffer: {self._last_len} bytes)"
            )
        self._last_len = -1
        try:
            if self._last_direct:
                self._pos += nbytes
                if self._pos == len(self._target):
                    self._advance()
            else:
                self._feed(self._scratch[:nbytes])
        except ProtocolError as e:
            self._error = e
            raise

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes already in memory (any split is fine)."""
        src = memoryview(data).cast("B")
        offset = 0
        while offset < len(src):
            buf = self.get_buffer()
            k = min(len(buf), len(src) - offset)
            buf[:k] = src[offset : offset + k]
            offset += k
            self.buffer_updated(k)

    def next_message(self) -> list[memoryview] | None:
        """Return the frames of the next complete message, or None if there is none."""
        if self._messages:
            return self._messages.popleft()
        if self._error is not None:
            raise self._error
        return None

    # ------------------------------------------------------------------ internals

    def _set_target(self, state: int, target: bytearray | mmap.mmap) -> None:
        self._state = state
        self._target = target
        self._target_view = memoryview(target)
        self._pos = 0

    def _feed(self, data: memoryview) -> None:
        """Consume all of ``data``, copying it into the successive targets."""
        offset, n = 0, len(data)
        while offset < n:
            k = min(len(self._target) - self._pos, n - offset)
            self._target_view[self._pos : self._pos + k] = data[offset : offset + k]
            self._pos += k
            offset += k
            if self._pos == len(self._target):
                self._advance()

    def _advance(self) -> None:
        """The current target is full: parse it and move on to the next one."""
        if self._state == _COUNT:
            (count,) = _U64.unpack(self._count_target)
            check_frame_count(count, self.limits)
            self._count = count
            self._set_target(_LENGTHS, bytearray(8 * count))
        elif self._state == _LENGTHS:
            self._lengths = struct.unpack(f"<{self._count}Q", self._target)
            total = check_frame_lengths(self._lengths, self.limits)
            self._set_target(_BODY, allocate(total))
            if total == 0:
                self._finish()
        else:
            self._finish()

    def _finish(self) -> None:
        body = self._target_view
        frames = []
        offset = 0
        for length in self._lengths:
            frames.append(body[offset : offset + length])
            offset += length
        self._messages.append(frames)
        self._lengths = ()
        self._set_target(_COUNT, self._count_target)
