"""Connections that speak messages: what servers and clients use.

:func:`connect` and :func:`listen` open comms on any registered transport, run the
handshake (:mod:`shoal.protocol.handshake`) and wrap the comm in a
:class:`Connection`, which reads and writes :class:`~shoal.protocol.messages.Message`
objects (:mod:`shoal.protocol.wire`).

Errors are translated here (httpx's ``map_httpcore_exceptions``): transports raise
``CommError`` subclasses, invalid input raises ``ProtocolError`` subclasses, nothing
else escapes.  A peer that sends something invalid (oversized, malformed) is told why
with an :class:`~shoal.protocol.messages.ErrorReply` before its connection is
aborted, and the listener goes on serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shoal.comm import same_host
from shoal.comm.base import Comm, Listener
from shoal.comm.inproc import HandedOver, InProcComm
from shoal.comm.registry import get_backend, parse_address
from shoal.comm.tcp import connect_same_host
from shoal.errors import (
    CommClosedError,
    CommError,
    ConnectTimeout,
    HandshakeError,
    MessageTooLarge,
    ProtocolError,
)
from shoal.protocol.frames import DEFAULT_LIMITS, Limits
from shoal.protocol.handshake import handshake_flow
from shoal.protocol.messages import ErrorReply, Message
from shoal.protocol.versions import collect_versions, compare_versions
from shoal.protocol.wire import dumps_messages, loads_messages

__all__ = ["HANDSHAKE_TIMEOUT", "Connection", "ConnectionHandler", "connect", "listen"]

logger = logging.getLogger(__name__)

#: Seconds an accepted connection has to complete its handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds spent trying to tell a peer why its message was refused.
_ERROR_REPLY_TIMEOUT = 1.0
#: Seconds spent discarding what such a peer still sends before closing.
_DRAIN_TIMEOUT = 2.0


class Connection:
    """A comm that carries messages, after a successful handshake.

    One task may read while others write (writes are serialized).  ``peer_info`` is
    the peer's hello: ``{"role": ..., "versions": {...}, ...}``.
    """

    def __init__(self, comm: Comm, peer_info: dict[str, Any], *, role: str = "") -> None:
        self.comm = comm
        self.peer_info = peer_info
        self.role = role
        #: in process, batches of hot-path messages (``Message.hand_over``) are handed
        #: over as objects, never encoded; the others are encoded as over TCP (same
        #: checks, same errors).
        self._inproc = comm if isinstance(comm, InProcComm) else None

    @property
    def peer_address(self) -> str:
        """The peer's address, with scheme."""
        return self.comm.peer_address

    @property
    def local_address(self) -> str:
        """This end's address, with scheme."""
        return self.comm.local_address

    @property
    def peer_role(self) -> str:
        """The role the peer announced in its hello."""
        return str(self.peer_info.get("role", ""))

    def closed(self) -> bool:
        """True once closed, aborted or broken."""
        return self.comm.closed()

    async def read(self) -> list[Message]:
        """The messages of the next wire message (several for a batch).

        Raise :class:`CommClosedError` when the connection is closed.  On invalid
        input, send the peer an ``ErrorReply`` saying what was wrong, abort, and raise
        the :class:`ProtocolError`.  An ``ErrorReply`` from the peer is returned like
        any other message.
        """
        try:
            if self._inproc is not None:
                item = await self._inproc.receive()
                if isinstance(item, HandedOver):
                    return item.items
                return loads_messages(item)
            return loads_messages(await self.comm.read())
        except ProtocolError as e:
            await self._refuse(e)
            raise

    async def write(self, msgs: Message | Sequence[Message]) -> None:
        """Send one message, or several as one batch (nothing for an empty list)."""
        if isinstance(msgs, Message):
            msgs = [msgs]
        elif not msgs:
            return
        if self._inproc is not None and all(type(m).hand_over for m in msgs):
            self._inproc.hand_over(list(msgs))
            return
        await self.comm.write(dumps_messages(msgs))

    async def close(self) -> None:
        """Close gracefully (see :meth:`Comm.close`)."""
        await self.comm.close()

    def abort(self) -> None:
        """Close at once."""
        self.comm.abort()

    async def _refuse(self, error: ProtocolError) -> None:
        what = "an oversized" if isinstance(error, MessageTooLarge) else "an invalid"
        text = (
            f"{self.role or 'peer'} at {self.local_address} refused {what} message from "
            f"{self.peer_address} and closed the connection. {error}"
        )
        logger.warning("%s", text)
        try:
            await asyncio.wait_for(self.write(ErrorReply(message=text)), _ERROR_REPLY_TIMEOUT)
        except Exception:
            self.abort()
        else:
            # Let the peer finish sending, so that the reply is not lost in a reset.
            self.comm.abort_after_drain(_DRAIN_TIMEOUT)

    def __repr__(self) -> str:
        state = "closed" if self.closed() else "open"
        return (
            f"<Connection {self.local_address} -> {self.peer_address} "
            f"({self.peer_role or '?'}) {state}>"
        )


async def _handshake(
    comm: Comm,
    role: str,
    secret: bytes | None = None,
    *,
    initiator: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the handshake flow over ``comm``; return the peer's hello."""
    local_versions = collect_versions()
    flow = handshake_flow(role, local_versions, secret=secret, initiator=initiator, extra=extra)
    to_send = next(flow)
    while True:
        await comm.write([to_send])
        try:
            frames = await comm.read()
        except ProtocolError as e:
            raise HandshakeError(f"invalid handshake from {comm.peer_address}: {e}") from e
        try:
            to_send = flow.send(frames[0])
        except StopIteration as stop:
            peer: dict[str, Any] = stop.value
            break
        except HandshakeError as e:
            raise type(e)(f"{e} (from {comm.peer_address})") from e
    problems = compare_versions(local_versions, peer["versions"])
    if problems:
        logger.warning(
            "version mismatch between this %s and the %s at %s:\n  %s",
            role,
            peer.get("role"),
            comm.peer_address,
            "\n  ".join(problems),
        )
    return peer


async def connect(
    address: str,
    *,
    role: str,
    timeout: float = 10.0,
    limits: Limits | None = None,
    secret: bytes | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Connection:
    """Connect to ``address``, handshake, return the :class:`Connection`.

    Refused or failed attempts are retried with backoff until ``timeout`` seconds
    have passed, then :class:`ConnectTimeout` (naming the address and the timeout) is
    raised.  A peer that answers with an invalid hello raises :class:`HandshakeError`;
    one that does not share ``secret`` (the cluster's authentication token) raises
    :class:`~shoal.errors.AuthenticationFailed`.
    """
    scheme, rest = parse_address(address)
    backend = get_backend(scheme)
    limits = limits or DEFAULT_LIMITS
    deadline = time.monotonic() + timeout
    if scheme == "tcp":
        conn = await _connect_same_host(rest, role, limits, secret, timeout / 2, fresh=False)
        if conn is not None:
            return conn
    backoff = 0.01
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        comm: Comm | None = None
        # Offer to move to the listener's same-host Unix socket: if it has one on this
        # host, it will not serve this TCP connection (see _handle_comm).
        offer = scheme == "tcp" and same_host.may_switch(rest)
        try:
            comm = await asyncio.wait_for(backend.connect(rest, limits, ssl_context), left)
            peer = await asyncio.wait_for(
                _handshake(
                    comm,
                    role,
                    secret,
                    initiator=True,
                    extra=same_host.announcement() if offer else None,
                ),
                deadline - time.monotonic(),
            )
            if offer and same_host.learn(rest, peer) is not None:
                await comm.close()
                left = max(deadline - time.monotonic(), 0.1)
                conn = await _connect_same_host(rest, role, limits, secret, left, fresh=True)
                if conn is not None:
                    return conn
                continue  # forgotten: TCP, without the offer
            return Connection(comm, peer, role=role)
        except HandshakeError:
            if comm is not None:
                comm.abort()
            raise
        except (CommClosedError, asyncio.TimeoutError) as e:
            if comm is not None:
                comm.abort()
            last = e
        except BaseException:
            if comm is not None:
                comm.abort()
            raise
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(backoff, left))
        backoff = min(backoff * 2, 1.0)
    reason = f": {last}" if last is not None and str(last) else ""
    raise ConnectTimeout(f"timed out after {timeout} s trying to connect to {address}{reason}")


async def _connect_same_host(
    rest: str,
    role: str,
    limits: Limits,
    secret: bytes | None,
    timeout: float,
    *,
    fresh: bool,
) -> Connection | None:
    """Connect to the ``tcp://`` listener at ``rest`` through its same-host Unix socket,
    if one is known (:mod:`~shoal.comm.same_host`); None when unknown or when that fails
    (it is then forgotten; for a while if it was learned just now: ``fresh``)."""
    name = same_host.lookup(rest)
    if name is None:
        return None
    comm: Comm | None = None
    deadline = time.monotonic() + timeout
    try:
        comm = await asyncio.wait_for(connect_same_host(name, rest, limits), timeout)
        peer = await asyncio.wait_for(
            _handshake(comm, role, secret, initiator=True), max(deadline - time.monotonic(), 0)
        )
    except (CommError, asyncio.TimeoutError) as e:
        # HandshakeError included: whoever holds that name now may not be our listener
        # (it restarted, and the name is free for anyone); TCP says what is true.
        if comm is not None:
            comm.abort()
        same_host.forget(rest, refuse=fresh)
        logger.debug("same-host socket to tcp://%s failed (%s); using TCP", rest, e)
        return None
    except BaseException:
        if comm is not None:
            comm.abort()
        raise
    return Connection(comm, peer, role=role)


#: What :func:`listen` calls with each connection that completed its handshake.
ConnectionHandler = Callable[[Connection], Awaitable[None]]


class ConnectionListener(Listener):
    """The listener :func:`listen` returns: handshakes, then one task per connection.

    The handler owns its connection while it runs; when it returns (or raises, which
    is logged) the connection is closed.  :meth:`stop` stops accepting and aborts
    every connection this listener spawned.
    """

    def __init__(
        self,
        address: str,
        handler: ConnectionHandler,
        *,
        role: str,
        limits: Limits,
        secret: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        scheme, rest = parse_address(address)
        self.role = role
        self._secret = secret
        self._handler = handler
        self._comms: set[Comm] = set()
        self._stopped = False
        self._inner = get_backend(scheme).listener(rest, self._handle_comm, limits, ssl_context)
        self._hello_extra: dict[str, Any] | None = None

    async def start(self) -> None:
        """Start accepting."""
        await self._inner.start()
        alias = self._inner.same_host_alias
        if alias is not None:
            self._hello_extra = same_host.advertisement(alias)

    def stop(self) -> None:
        """Stop accepting and abort the connections this listener spawned."""
        self._stopped = True
        self._inner.stop()
        for comm in list(self._comms):
            comm.abort()
        self._comms.clear()

    @property
    def listen_address(self) -> str:
        """The address bound."""
        return self._inner.listen_address

    @property
    def contact_address(self) -> str:
        """The address others can connect to."""
        return self._inner.contact_address

    @property
    def same_host_alias(self) -> bytes | None:
        """The inner listener's same-host Unix socket, if any."""
        return self._inner.same_host_alias

    @property
    def connections(self) -> int:
        """How many connections spawned by this listener are open."""
        return len(self._comms)

    async def _handle_comm(self, comm: Comm) -> None:
        if self._stopped:
            comm.abort()
            return
        self._comms.add(comm)
        try:
            try:
                peer = await asyncio.wait_for(
                    _handshake(
                        comm, self.role, self._secret, initiator=False, extra=self._hello_extra
                    ),
                    HANDSHAKE_TIMEOUT,
                )
            except (CommError, asyncio.TimeoutError) as e:
                logger.info(
                    "%s at %s: handshake with %s failed: %s",
                    self.role,
                    self.listen_address,
                    comm.peer_address,
                    str(e) or type(e).__name__,
                )
                return
            if self._hello_extra is not None and not comm.same_host and same_host.switching(peer):
                # A peer on this host moves to our Unix socket: wait for it to close this.
                with contextlib.suppress(CommError, ProtocolError, asyncio.TimeoutError):
                    await asyncio.wait_for(comm.read(), HANDSHAKE_TIMEOUT)
                return
            conn = Connection(comm, peer, role=self.role)
            try:
                await self._handler(conn)
            except CommError as e:
                logger.info("connection from %s ended: %s", comm.peer_address, e)
            except ProtocolError as e:  # Connection.read() already logged a warning
                logger.debug("connection from %s refused: %s", comm.peer_address, e)
            except Exception:
                logger.exception(
                    "error in the %s handler for a connection from %s",
                    self.role,
                    comm.peer_address,
                )
        finally:
            self._comms.discard(comm)
            if not comm.closed():
                with contextlib.suppress(Exception):
                    await comm.close()

    def __repr__(self) -> str:
        return f"<ConnectionListener {self.role} at {self.listen_address}>"


async def listen(
    address: str,
    handler: ConnectionHandler,
    *,
    role: str,
    limits: Limits | None = None,
    secret: bytes | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Listener:
    """Listen at ``address`` (``"tcp://0.0.0.0:0"``, ``"inproc://"`` …), started.

    Each accepted connection does the handshake (within :data:`HANDSHAKE_TIMEOUT`;
    a failure, an unauthenticated peer included when there is a ``secret``, is logged
    at INFO and closes that connection only, before any message is read), then
    ``await handler(conn)`` runs in its own task.  The connection is closed when the
    handler returns; exceptions from the handler are logged and never stop the
    listener.
    """
    listener = ConnectionListener(
        address,
        handler,
        role=role,
        limits=limits or DEFAULT_LIMITS,
        secret=secret,
        ssl_context=ssl_context,
    )
    await listener.start()
    return listener
