"""The transport interfaces: :class:`Comm`, :class:`Listener`, :class:`Backend`.

A transport moves *messages*, each a list of frames, in order and whole, between two
ends.  It knows nothing of msgpack or ops (see :mod:`shoal.comm.connection` for that).
Documented in the style of trio's ``_abc.py``: what each method promises, and what it
raises.  The conformance suite in :mod:`shoal.testing.transport` holds every backend
to these promises.
"""

from __future__ import annotations

import abc
import ssl
from collections.abc import Awaitable, Callable, Sequence

from shoal.protocol.frames import Limits
from shoal.protocol.opaque import Frame

__all__ = ["Backend", "Comm", "CommHandler", "Listener"]


class Comm(abc.ABC):
    """One end of a connection that carries messages (lists of frames).

    Reads and writes may happen concurrently with each other (one reader task and any
    number of writer tasks: writes are serialized, never interleaved).  A cancelled
    :meth:`read` loses nothing; a :meth:`write` cancelled after part of a message left
    aborts the comm (the stream could not be resynchronized).
    """

    #: A same-host Unix socket standing in for ``tcp://`` (see :mod:`.same_host`).
    same_host: bool = False

    @property
    @abc.abstractmethod
    def local_address(self) -> str:
        """This end's address, with its scheme (``tcp://10.0.0.1:40404``)."""

    @property
    @abc.abstractmethod
    def peer_address(self) -> str:
        """The other end's address, with its scheme."""

    @abc.abstractmethod
    async def read(self) -> list[memoryview]:
        """Return the frames of the next message.

        Raise :class:`~shoal.errors.CommClosedError` when this end was closed, or the
        peer closed (after every message it sent before closing was read), or the
        connection broke; raise a :class:`~shoal.errors.ProtocolError` subclass (e.g.
        :class:`~shoal.errors.MessageTooLarge`) for input that violates the framing or
        the :class:`~shoal.protocol.frames.Limits`; the comm is then unusable.
        """

    @abc.abstractmethod
    async def write(self, frames: Sequence[Frame]) -> int:
        """Send one message of ``frames``; return its size in bytes on the wire.

        Returns once the data is handed to the OS (or buffered below a high-water
        mark): this is the backpressure.  The frames must not be mutated until then.
        Raise :class:`~shoal.errors.CommClosedError` if the comm is or becomes closed,
        :class:`~shoal.errors.LocalProtocolError` for frames that cannot be sent (none,
        or more than this comm's own ``Limits.max_frames``).
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Close gracefully: finish a write in progress, then close.  Idempotent."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping anything not yet sent.  Idempotent."""

    def abort_after_drain(self, timeout: float) -> None:
        """Close this end now, but let the peer finish sending first where that matters.

        Used after telling a misbehaving peer why it is being disconnected: closing a
        TCP socket with unread data makes the kernel reset the connection, which can
        destroy the explanation before the peer reads it.  The comm is closed at once
        for this side (reads and writes raise); a transport may keep discarding what
        the peer sends, in the background, for up to ``timeout`` seconds before
        releasing the connection.  Default: :meth:`abort`.
        """
        self.abort()

    @abc.abstractmethod
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called or the connection broke."""

    def __repr__(self) -> str:
        state = "closed" if self.closed() else "open"
        return f"<{type(self).__name__} {self.local_address} -> {self.peer_address} {state}>"


#: What a listener calls with each accepted comm (in its own task).
CommHandler = Callable[[Comm], Awaitable[None]]


class Listener(abc.ABC):
    """Accepts connections at an address and hands each comm to a handler."""

    @property
    def same_host_alias(self) -> bytes | None:
        """The abstract Unix socket it also accepts on (see :mod:`.same_host`), if any."""
        return None

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind and start accepting.  Raise :class:`~shoal.errors.CommError` on failure."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop accepting new connections.  Idempotent."""

    @property
    @abc.abstractmethod
    def listen_address(self) -> str:
        """The address bound (real port, even when asked for port 0), with scheme."""

    @property
    @abc.abstractmethod
    def contact_address(self) -> str:
        """An address others can connect to (``0.0.0.0`` replaced by a reachable IP)."""

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


class Backend(abc.ABC):
    """Creates comms and listeners for one URL scheme (see :mod:`shoal.comm.registry`)."""

    @abc.abstractmethod
    async def connect(
        self, address: str, limits: Limits, ssl_context: ssl.SSLContext | None = None
    ) -> Comm:
        """Open a comm to ``address`` (without the scheme): one attempt.

        Raise :class:`~shoal.errors.CommClosedError` when the connection is refused or
        fails (callers retry), :class:`ValueError` for a malformed address.
        """

    @abc.abstractmethod
    def listener(
        self,
        address: str,
        handle_comm: CommHandler,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Listener:
        """A listener (not yet started) at ``address`` (without the scheme)."""
