"""Request/response over pooled connections, and the serving side of it.

A request is one message written on an idle connection to the target, answered by
one message.  :class:`ConnectionPool` keeps connections open for reuse (at most
``limit`` in all, idle ones evicted first) and turns an ``ErrorReply`` into
:class:`~shoal.errors.RemoteError`.  :func:`serve_requests` is the other end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable

from shoal.comm.connection import Connection, connect
from shoal.errors import (
    CommClosedError,
    CommError,
    LocalProtocolError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
)
from shoal.protocol.frames import Limits
from shoal.protocol.messages import ErrorReply, Message

__all__ = ["ConnectionPool", "serve_requests"]

logger = logging.getLogger(__name__)


class ConnectionPool:
    """Pooled connections for requests, keyed by address.

    ``limit`` bounds the open connections (idle and in use); when it is reached an
    idle connection (to any address) is closed, or the request waits for one to be
    released.  ``timeout`` bounds connecting (including the handshake).
    """

    def __init__(
        self,
        *,
        role: str,
        limits: Limits | None = None,
        limit: int = 512,
        timeout: float = 10.0,
        secret: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.role = role
        self.secret = secret
        self.ssl_context = ssl_context
        self.limits = limits
        self.limit = limit
        self.timeout = timeout
        self._idle: dict[str, list[Connection]] = {}
        self._active: set[Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open(self) -> int:
        """Open connections: idle, in use, or being opened."""
        return self._connecting + len(self._active) + sum(map(len, self._idle.values()))

    @property
    def active(self) -> int:
        """Connections in use by a request."""
        return len(self._active)

    def idle(self, address: str | None = None) -> int:
        """Idle connections (to ``address``, or to any address)."""
        if address is not None:
            return len(self._idle.get(address, ()))
        return sum(map(len, self._idle.values()))

    async def request(self, address: str, msg: Message, timeout: float | None = None) -> Message:
        """Send ``msg`` to ``address`` and return the reply.

        ``timeout`` bounds connecting (default: the pool's).  Raise
        :class:`RemoteError` if the reply is an ``ErrorReply`` (the connection stays
        in the pool), a :class:`CommError` if the connection fails (it is discarded).
        An idle pooled connection found closed by the peer (it restarted, or dropped
        idle connections) is replaced by a new one, once (connecting for 2 s at most).
        """
        timeout = self.timeout if timeout is None else timeout
        conn, reused = await self._acquire(address, timeout)
        while True:
            reusable = False
            try:
                await conn.write(msg)
                replies = await conn.read()
                if len(replies) != 1:
                    raise RemoteProtocolError(
                        f"{address} answered a {msg.op!r} request with {len(replies)} messages"
                    )
                reusable = True
                break
            except CommError:
                if not reused:
                    raise
            finally:
                self._release(address, conn, reusable)
            # a peer that restarted listens already; one that died should fail fast
            conn, reused = await self._acquire(address, min(timeout, 2.0), fresh=True)
        reply = replies[0]
        if isinstance(reply, ErrorReply):
            raise RemoteError(reply.message, reply)
        return reply

    async def _acquire(
        self, address: str, timeout: float, fresh: bool = False
    ) -> tuple[Connection, bool]:
        """A connection to ``address`` (a new one with ``fresh``), and whether it was
        taken from the idle ones."""
        while True:
            if self._closed:
                raise CommClosedError("the connection pool is closed")
            idle = self._idle.get(address)
            if fresh and idle:  # the others may be as stale as the one that failed
                for conn in idle:
                    conn.abort()
                idle.clear()
            while idle:
                conn = idle.pop()
                if not conn.closed():
                    self._active.add(conn)
                    return conn, True
            if self.open < self.limit or self._evict_idle():
                break
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
        self._connecting += 1
        try:
            conn = await connect(
                address,
                role=self.role,
                timeout=timeout,
                limits=self.limits,
                secret=self.secret,
                ssl_context=self.ssl_context,
            )
        except BaseException:
            self._connecting -= 1
            self._wake_one()  # the slot is free again
            raise
        self._connecting -= 1
        if self._closed:
            conn.abort()
            raise CommClosedError("the connection pool is closed")
        self._active.add(conn)
        return conn, False

    def _evict_idle(self) -> bool:
        for address, conns in self._idle.items():
            if conns:
                conns.pop(0).abort()
                if not conns:
                    del self._idle[address]
                return True
        return False

    def _release(self, address: str, conn: Connection, reusable: bool) -> None:
        self._active.discard(conn)
        if reusable and not self._closed and not conn.closed():
            self._idle.setdefault(address, []).append(conn)
        else:
            conn.abort()
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def remove(self, address: str) -> None:
        """Close the idle connections to ``address`` (e.g. a peer known to be dead)."""
        for conn in self._idle.pop(address, []):
            conn.abort()
        self._wake_one()

    async def close(self) -> None:
        """Close every connection; later requests raise :class:`CommClosedError`."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
        for conn in list(self._active):
            conn.abort()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def __repr__(self) -> str:
        return f"<ConnectionPool {self.role}: {self.active} active, {self.idle()} idle>"


async def serve_requests(
    conn: Connection, dispatch: Callable[[Message], Awaitable[Message]]
) -> None:
    """Answer requests on ``conn`` with ``dispatch`` until the connection closes.

    An exception from ``dispatch`` is answered with ``ErrorReply("<Type>: <text>")``;
    the connection stays usable.  Returns (without raising) when the connection
    closes or the peer sends invalid input (which ``Connection.read`` reports).
    """
    while True:
        try:
            msgs = await conn.read()
        except CommError:
            return
        except ProtocolError as e:
            logger.info("stopped serving %s: %s", conn.peer_address, e)
            return
        for msg in msgs:
            try:
                reply = await dispatch(msg)
            except Exception as e:
                logger.debug("error answering %r from %s", msg.op, conn.peer_address, exc_info=True)
                reply = ErrorReply(message=f"{type(e).__name__}: {e}")
            try:
                await conn.write(reply)
            except LocalProtocolError as e:  # a reply msgpack can't encode: a bug here
                logger.error("could not encode the reply to %r: %s", msg.op, e)
                try:
                    await conn.write(ErrorReply(message=f"could not encode the reply: {e}"))
                except CommError:
                    return
            except CommError:
                return
