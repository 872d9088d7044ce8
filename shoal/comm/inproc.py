"""``inproc://<pid>/<n>``: a transport between two ends in the same process.

Used by the threaded LocalCluster, by a client in the process of its scheduler, and by
tests.  Frames are handed over as they are (no encoding, no copy), so a receiver sees
the very buffers the sender wrote: senders must not mutate them afterwards (the same
rule as for a TCP write in progress).  A :class:`~shoal.comm.connection.Connection`
goes further and hands its message objects over (:meth:`InProcComm.hand_over`): no
msgpack at all between a client and the scheduler in its process.

The two ends may run on different event loops in different threads: each direction is
a :class:`_Channel` guarded by a ``threading.Lock``, and a waiting reader or writer is
woken on its own loop with ``call_soon_threadsafe``.  Writers block while more than
``_HIGH_WATER`` bytes wait unread in the peer's queue (backpressure); readers enforce
their :class:`~shoal.protocol.frames.Limits` like the TCP decoder does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import ssl
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from shoal.comm.base import Backend, Comm, CommHandler, Listener
from shoal.comm.registry import register_backend
from shoal.errors import CommClosedError, CommError, LocalProtocolError, ProtocolError
from shoal.protocol.frames import Limits, check_frame_lengths, frame_nbytes
from shoal.protocol.opaque import Frame

__all__ = ["HandedOver", "InProcBackend", "InProcComm", "InProcListener", "new_address"]

logger = logging.getLogger(__name__)

#: A writer waits while more than this many bytes sit unread in the peer's queue.
_HIGH_WATER = 64 * 2**20

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]

_counter = itertools.count(1)
_registry_lock = threading.Lock()
_listeners: dict[str, InProcListener] = {}


def new_address() -> str:
    """A fresh, unique ``inproc://<pid>/<n>`` address."""
    return f"inproc://{os.getpid()}/{next(_counter)}"


def _wake(waiter: _Waiter) -> None:
    """Resolve a waiter's future on its own loop, from any thread."""
    loop, fut = waiter

    def resolve() -> None:
        if not fut.done():
            fut.set_result(None)

    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        resolve()
        return
    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # that loop is closed: nobody is waiting any more
        pass


def _as_view(frame: Frame) -> memoryview:
    mv = memoryview(frame)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


class HandedOver:
    """Objects passed to the peer as they are (see :meth:`InProcComm.hand_over`)."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class _Channel:
    """One direction of a connection: a queue of messages, shared by two threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: deque[tuple[list[Frame] | HandedOver, int]] = deque()
        self.nbytes = 0
        self.closed = False  # no more messages will be added
        self.reader: _Waiter | None = None
        self.writers: list[_Waiter] = []

    def close(self) -> None:
        with self.lock:
            self.closed = True
            waiters = self.writers
            self.writers = []
            if self.reader is not None:
                waiters.append(self.reader)
                self.reader = None
        for w in waiters:
            _wake(w)


class InProcComm(Comm):
    """One end of an in-process connection (see the module docstring)."""

    def __init__(
        self, local: str, peer: str, inbound: _Channel, outbound: _Channel, limits: Limits
    ) -> None:
        self._local = local
        self._peer = peer
        self._in = inbound
        self._out = outbound
        self._limits = limits
        self._closed = False
        self._close_reason = ""
        self._reading = False
        self._error: ProtocolError | None = None

    @property
    def local_address(self) -> str:
        """This end's ``inproc://`` address."""
        return self._local

    @property
    def peer_address(self) -> str:
        """The other end's ``inproc://`` address."""
        return self._peer

    def closed(self) -> bool:
        """True once this end was closed or aborted."""
        return self._closed

    async def read(self) -> list[memoryview]:
        """The frames of the next message (see :meth:`Comm.read`)."""
        item = await self.receive()
        if isinstance(item, HandedOver):
            raise LocalProtocolError(f"{self._peer} handed over objects where frames were expected")
        return item

    async def receive(self) -> list[memoryview] | HandedOver:
        """The next message: its frames, or the objects the peer handed over."""
        if self._reading:
            raise RuntimeError(f"another task is already reading from {self!r}")
        self._reading = True
        try:
            return await self._read()
        finally:
            self._reading = False

    async def _read(self) -> list[memoryview] | HandedOver:
        ch = self._in
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise CommClosedError(f"{self._close_reason} ({self._peer})")
            if self._error is not None:
                raise self._error
            frames: list[Frame] | HandedOver | None = None
            wake: list[_Waiter] = []
            fut: asyncio.Future[None] | None = None
            with ch.lock:
                if ch.queue:
                    frames, size = ch.queue.popleft()
                    ch.nbytes -= size
                    if ch.writers and ch.nbytes <= _HIGH_WATER:
                        wake, ch.writers = ch.writers, []
                elif ch.closed:
                    raise CommClosedError(f"connection closed by peer {self._peer}")
                else:
                    fut = loop.create_future()
                    ch.reader = (loop, fut)
            for w in wake:
                _wake(w)
            if isinstance(frames, HandedOver):
                return frames
            if frames is not None:
                try:
                    check_frame_lengths([frame_nbytes(f) for f in frames], self._limits)
                except ProtocolError as e:
                    self._error = e
                    raise
                return [_as_view(f) for f in frames]
            assert fut is not None
            try:
                await fut
            finally:
                with ch.lock:
                    if ch.reader is not None and ch.reader[1] is fut:
                        ch.reader = None

    async def write(self, frames: Sequence[Frame]) -> int:
        """Hand one message to the peer; wait while its queue is over the high-water mark."""
        if not frames:
            raise LocalProtocolError("cannot send a message with no frames")
        if len(frames) > self._limits.max_frames:
            raise LocalProtocolError(
                f"cannot send a message of {len(frames):,} frames: the limit is "
                f"{self._limits.max_frames:,} (Limits.max_frames)"
            )
        if self._closed:
            raise CommClosedError(f"{self._close_reason} ({self._peer})")
        size = sum(frame_nbytes(f) for f in frames)
        ch = self._out
        with ch.lock:
            if ch.closed:
                raise CommClosedError(f"connection closed by peer {self._peer}")
            ch.queue.append((list(frames), size))
            ch.nbytes += size
            reader, ch.reader = ch.reader, None
            full = ch.nbytes > _HIGH_WATER
        if reader is not None:
            _wake(reader)
        if full:
            await self._wait_for_room()
        return size

    def hand_over(self, items: list[Any]) -> None:
        """Pass ``items`` to the peer's :meth:`receive` as they are: no encoding, no
        copy, no size limit (nothing is serialized).  The sender must not mutate them
        afterwards.  Raises CommClosedError once either end is closed."""
        if self._closed:
            raise CommClosedError(f"{self._close_reason} ({self._peer})")
        ch = self._out
        with ch.lock:
            if ch.closed:
                raise CommClosedError(f"connection closed by peer {self._peer}")
            ch.queue.append((HandedOver(items), 0))
            reader, ch.reader = ch.reader, None
        if reader is not None:
            _wake(reader)

    async def _wait_for_room(self) -> None:
        ch = self._out
        loop = asyncio.get_running_loop()
        while True:
            with ch.lock:
                if ch.closed or ch.nbytes <= _HIGH_WATER:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                ch.writers.append((loop, fut))
            await fut

    async def close(self) -> None:
        """Close; the peer still reads what was already sent, then CommClosedError."""
        self._shutdown("the connection was closed by this side")

    def abort(self) -> None:
        """Same as :meth:`close` (nothing is ever half-sent in process)."""
        self._shutdown("the connection was aborted by this side")

    def _shutdown(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        self._out.close()  # the peer reads what is queued, then sees the end
        self._in.close()  # the peer's writes now fail; wakes our own reader


class InProcListener(Listener):
    """Accepts in-process connections at an ``inproc://`` address."""

    def __init__(self, address: str, handle_comm: CommHandler, limits: Limits) -> None:
        self._address = f"inproc://{address}" if address else new_address()
        self._handle_comm = handle_comm
        self._limits = limits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    async def start(self) -> None:
        """Register the address; connections are handled on the current loop."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        with _registry_lock:
            if self._address in _listeners:
                raise CommError(f"{self._address} is already in use")
            _listeners[self._address] = self
        self._started = True

    def stop(self) -> None:
        """Unregister the address."""
        with _registry_lock:
            if _listeners.get(self._address) is self:
                del _listeners[self._address]

    @property
    def listen_address(self) -> str:
        """The ``inproc://`` address."""
        return self._address

    @property
    def contact_address(self) -> str:
        """The ``inproc://`` address."""
        return self._address

    def _deliver(self, comm: InProcComm) -> None:
        """Run the handler for ``comm`` on the listener's loop (from any thread)."""
        loop = self._loop
        assert loop is not None

        def spawn() -> None:
            task = loop.create_task(self._run_handler(comm))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            spawn()
        else:
            loop.call_soon_threadsafe(spawn)

    async def _run_handler(self, comm: InProcComm) -> None:
        try:
            await self._handle_comm(comm)
        except Exception:
            logger.exception("error handling a connection from %s", comm.peer_address)
            comm.abort()


class InProcBackend(Backend):
    """The ``inproc://`` backend."""

    async def connect(
        self, address: str, limits: Limits, ssl_context: ssl.SSLContext | None = None
    ) -> Comm:
        """Connect to the listener at ``inproc://address``; CommClosedError if none."""
        target = f"inproc://{address}"
        with _registry_lock:
            listener = _listeners.get(target)
        if listener is None:
            raise CommClosedError(
                f"could not connect to {target}: no listener there (inproc addresses "
                "only reach listeners in this same process)"
            )
        a_to_b, b_to_a = _Channel(), _Channel()
        local = new_address()
        ours = InProcComm(local, target, b_to_a, a_to_b, limits)
        theirs = InProcComm(target, local, a_to_b, b_to_a, listener._limits)
        try:
            listener._deliver(theirs)
        except RuntimeError as e:  # its loop is closed
            raise CommClosedError(f"could not connect to {target}: {e}") from e
        return ours

    def listener(
        self,
        address: str,
        handle_comm: CommHandler,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Listener:
        """An :class:`InProcListener` (``address`` empty: a fresh one)."""
        return InProcListener(address, handle_comm, limits)


register_backend("inproc", InProcBackend())
