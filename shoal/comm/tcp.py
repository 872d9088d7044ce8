"""``tcp://`` transport on non-blocking sockets, without asyncio streams.

Why not ``asyncio`` streams or ``transport.write``: on a partial send they copy the
unsent remainder of every buffer into their own bytearray (CPython 3.11), which for a
1 GiB frame is a 1 GiB copy; and on the receiving side a ``StreamReader`` copies every
chunk at least once more.  Here:

* reads go ``sock.recv_into(decoder.get_buffer())`` then ``decoder.buffer_updated(n)``
  (:class:`~shoal.protocol.frames.FrameDecoder`), so a large frame is received straight
  into the message's preallocated buffer;
* writes go ``sock.sendmsg(views)`` (scatter/gather, at most ``IOV_MAX`` buffers per
  call), and after a partial send the remainder is kept as memoryview slices: frames
  are never copied.

The socket is registered for writing only while a write waits for it; for reading it
stays registered between reads (a stream costs no ``epoll_ctl`` per message) and is
unregistered as soon as data arrives that nobody reads, so data the application does
not read stays in the kernel (TCP flow control is the backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Sequence

from shoal.comm import same_host
from shoal.comm.addressing import non_loopback_ip
from shoal.comm.base import Backend, Comm, CommHandler, Listener
from shoal.comm.registry import parse_host_port, register_backend, unparse_host_port
from shoal.errors import CommClosedError, CommError, ProtocolError
from shoal.protocol.frames import FrameDecoder, Limits, encode_frames
from shoal.protocol.opaque import Frame

__all__ = ["TCPBackend", "TCPComm", "TCPListener", "reachable_ip"]

logger = logging.getLogger(__name__)

try:
    _IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _IOV_MAX = 16
if _IOV_MAX <= 0:  # pragma: no cover
    _IOV_MAX = 16

_WOULD_BLOCK = (BlockingIOError, InterruptedError)
#: Send buffer asked for on same-host Unix sockets (their default, ~200 KB, makes a
#: large frame cross in hundreds of wake-ups of both processes).
_UNIX_SNDBUF = 4 * 2**20
#: How long close() waits for a write in progress before dropping it.
_CLOSE_TIMEOUT = 10.0


def _format_sockaddr(addr: tuple[str, int] | tuple[str, int, int, int]) -> str:
    return "tcp://" + unparse_host_port(addr[0], addr[1])


def reachable_ip(family: int = socket.AF_INET) -> str:
    """An IP address of this host that others can probably reach.

    Uses the source address the OS would pick to reach a public address (no packet is
    sent); without a route there (a container or a network namespace on a private
    network), the address of the host name unless that is loopback, then the first
    address of an interface that is up, then loopback.
    """
    target = ("8.8.8.8", 80) if family == socket.AF_INET else ("2001:4860:4860::8888", 80)
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(target)
            ip: str = s.getsockname()[0]
            return ip
    except OSError:
        pass
    if family == socket.AF_INET:
        with contextlib.suppress(OSError):
            ip = socket.gethostbyname(socket.gethostname())
            if not ip.startswith("127."):
                return ip
    return non_loopback_ip(family) or ("127.0.0.1" if family == socket.AF_INET else "::1")


class TCPComm(Comm):
    """A :class:`Comm` over a connected TCP socket (see the module docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        limits: Limits,
        *,
        local: str | None = None,
        peer: str | None = None,
        unix: bool = False,
    ) -> None:
        """Wrap a connected socket; ``unix``: it is a same-host Unix socket standing in
        for TCP (see :mod:`.same_host`), whose ends ``local`` and ``peer`` name."""
        self.same_host = unix
        sock.setblocking(False)
        if unix:  # what a send may queue: the kernel caps it at net.core.wmem_max
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _UNIX_SNDBUF)
        with contextlib.suppress(OSError):  # not on every socket family
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._limits = limits
        self._decoder = FrameDecoder(limits)
        self._local = local or _format_sockaddr(sock.getsockname())
        try:
            self._peer = peer or _format_sockaddr(sock.getpeername())
        except OSError:
            self._peer = "tcp://<unknown>"
        self._closed = False
        self._close_reason = "the connection is closed"
        self._reading = False
        self._write_lock = asyncio.Lock()
        self._write_error: CommClosedError | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._read_waiter: asyncio.Future[None] | None = None
        self._reader_registered = False

    @property
    def local_address(self) -> str:
        """This end's ``tcp://ip:port``."""
        return self._local

    @property
    def peer_address(self) -> str:
        """The peer's ``tcp://ip:port``."""
        return self._peer

    def closed(self) -> bool:
        """True once closed or broken."""
        return self._closed

    # ------------------------------------------------------------------ reading

    async def read(self) -> list[memoryview]:
        """The frames of the next message (see :meth:`Comm.read`)."""
        if self._reading:
            raise RuntimeError(f"another task is already reading from {self!r}")
        self._reading = True
        try:
            return await self._read()
        finally:
            self._reading = False

    async def _read(self) -> list[memoryview]:
        decoder = self._decoder
        sock = self._sock
        while True:
            if self._closed:
                raise CommClosedError(f"{self._close_reason} ({self._peer})")
            msg = decoder.next_message()  # raises the decoder's sticky ProtocolError
            if msg is not None:
                return msg
            try:
                n = sock.recv_into(decoder.get_buffer())
            except _WOULD_BLOCK:
                await self._wait_readable()
                continue
            except OSError as e:
                self._fail(f"connection to {self._peer} broken while reading: {e}")
                raise CommClosedError(self._close_reason) from e
            if n == 0:
                if decoder.in_progress:
                    reason = f"connection closed by peer {self._peer} in the middle of a message"
                else:
                    reason = f"connection closed by peer {self._peer}"
                self._fail(reason)
                raise CommClosedError(reason)
            try:
                decoder.buffer_updated(n)
            except ProtocolError:
                # Messages completed before the invalid input are still delivered: the
                # next next_message() returns them, then raises this error for good.
                # Writing stays possible, so that the caller can tell the peer why.
                pass

    def _on_readable(self) -> None:
        waiter = self._read_waiter
        if waiter is None:
            # Nobody is reading: unregister now, or the loop would call this again on
            # every iteration until the next read().
            self._reader_registered = False
            self._loop.remove_reader(self._fd)
        elif not waiter.done():
            waiter.set_result(None)

    async def _wait_readable(self) -> None:
        # The reader stays registered after read() returns, and is only removed when
        # data arrives while nobody reads: a stream read in a loop (and a large message
        # arriving in hundreds of chunks) costs no epoll_ctl per message.
        if self._closed:  # callers re-check after waking
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._read_waiter = fut
        self._waiters.add(fut)
        if not self._reader_registered:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reader_registered = True
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            self._read_waiter = None

    async def _wait_writable(self) -> None:
        if self._closed:  # callers re-check after waking
            return
        fut: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        self._loop.add_writer(self._fd, wake)
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)
            if not self._closed:
                self._loop.remove_writer(self._fd)

    # ------------------------------------------------------------------ writing

    async def write(self, frames: Sequence[Frame]) -> int:
        """Send one message (see :meth:`Comm.write`); never copies large frames."""
        buffers = encode_frames(frames, self._limits)
        views = [memoryview(b) for b in buffers]
        nbytes = sum(v.nbytes for v in views)
        async with self._write_lock:
            self._check_writable()
            await self._send(views)
        return nbytes

    def _check_writable(self) -> None:
        if self._write_error is not None:
            raise CommClosedError(str(self._write_error))
        if self._closed:
            raise CommClosedError(f"{self._close_reason} ({self._peer})")

    async def _send(self, views: list[memoryview]) -> None:
        sock = self._sock
        i, total = 0, len(views)
        sent_any = False
        try:
            while i < total:
                try:
                    n = sock.sendmsg(views[i : i + _IOV_MAX])
                except _WOULD_BLOCK:
                    await self._wait_writable()
                    self._check_writable()
                    continue
                except OSError as e:
                    self._write_failed(e)
                    raise CommClosedError(str(self._write_error)) from e
                sent_any = sent_any or n > 0
                while n > 0:  # drop what was sent; keep the rest as slices
                    size = views[i].nbytes
                    if n >= size:
                        n -= size
                        i += 1
                    else:
                        views[i] = views[i][n:]
                        n = 0
                while i < total and views[i].nbytes == 0:
                    i += 1
        except asyncio.CancelledError:
            if sent_any and i < total:
                self.abort()  # half a message is on the wire: the stream is lost
            raise

    def _write_failed(self, e: OSError) -> None:
        # The peer may have closed after telling us why (e.g. an ErrorReply about an
        # oversized message): keep the socket readable so that the reply can be read;
        # reading then ends with CommClosedError and closes everything.
        reason = f"connection to {self._peer} broken while writing: {e}"
        if e.errno in (errno.EPIPE, errno.ECONNRESET):
            reason = f"connection closed by peer {self._peer} ({e.strerror})"
        self._write_error = CommClosedError(reason)

    # ------------------------------------------------------------------ closing

    def _fail(self, reason: str) -> None:
        self._close_reason = reason
        self._shutdown()

    def _shutdown(self, *, close_socket: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        for fut in list(self._waiters):
            if not fut.done():
                fut.set_result(None)
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        if close_socket:
            self._sock.close()

    async def close(self) -> None:
        """Finish a write in progress, send FIN, close the socket."""
        if self._closed:
            return
        try:
            # Wait for a write in progress, but a peer that never reads can't hang us.
            await asyncio.wait_for(self._write_lock.acquire(), _CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        else:
            self._write_lock.release()
            if not self._closed and self._write_error is None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)
        finally:
            self._close_reason = "the connection was closed by this side"
            self._shutdown()

    def abort_after_drain(self, timeout: float) -> None:
        """Close now for this side; send FIN and discard incoming data in the background
        until EOF or ``timeout``, then close the socket.

        Without this, closing while the peer is still sending (say, the rest of an
        oversized message) makes the kernel answer with a reset, and the peer loses
        the ErrorReply we just sent: it would only see "connection reset".
        """
        if self._closed:
            return
        sock = self._sock
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        self._close_reason = "the connection was aborted by this side"
        self._shutdown(close_socket=False)
        task = self._loop.create_task(_drain_and_close(sock, timeout))
        _background.add(task)
        task.add_done_callback(_background.discard)

    def abort(self) -> None:
        """Close the socket now."""
        if not self._closed:
            self._close_reason = "the connection was aborted by this side"
            self._shutdown()


#: Drains in progress (referenced so that they are not garbage collected).
_background: set[asyncio.Task[None]] = set()


async def _drain_and_close(sock: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sink = bytearray(256 * 1024)
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                if await asyncio.wait_for(loop.sock_recv_into(sock, sink), left) == 0:
                    break
            except (OSError, asyncio.TimeoutError):
                break
    finally:
        sock.close()


async def _connect_socket(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
            return sock
        except OSError as e:
            sock.close()
            last = e
        except BaseException:
            sock.close()
            raise
    raise last or OSError(f"no address found for {host!r}")


class TCPListener(Listener):
    """Accepts TCP connections (see :class:`Listener`)."""

    def __init__(self, address: str, handle_comm: CommHandler, limits: Limits) -> None:
        host, port = parse_host_port(address, default_port=0)
        self._host = host or "0.0.0.0"
        self._port = port
        self._handle_comm = handle_comm
        self._limits = limits
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listen_address = ""
        self._contact_address = ""
        self._alias: tuple[socket.socket, bytes] | None = None

    @property
    def same_host_alias(self) -> bytes | None:
        """The abstract Unix socket this listener also accepts on (see :mod:`.same_host`)."""
        return self._alias[1] if self._alias is not None else None

    async def start(self) -> None:
        """Bind, listen and accept in the background."""
        if self._sock is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, type_, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
                sock.listen(1024)
                sock.setblocking(False)
            except BaseException:
                sock.close()
                raise
        except OSError as e:
            raise CommError(
                f"could not listen on tcp://{unparse_host_port(self._host, self._port)}: {e}"
            ) from e
        self._sock = sock
        bound = sock.getsockname()
        self._listen_address = _format_sockaddr(bound)
        ip = bound[0]
        if ip in ("0.0.0.0", "::"):
            ip = reachable_ip(family)
        self._contact_address = "tcp://" + unparse_host_port(ip, bound[1])
        loop.add_reader(sock.fileno(), self._accept, sock)
        self._alias = same_host.bind_alias()
        if self._alias is not None:
            loop.add_reader(self._alias[0].fileno(), self._accept, self._alias[0])

    def _accept(self, listening: socket.socket) -> None:
        if self._sock is None or self._loop is None:  # stopped
            return
        unix = listening is not self._sock
        for _ in range(64):  # bounded, so one busy listener can't starve the loop
            try:
                conn, _ = listening.accept()
            except _WOULD_BLOCK:
                return
            except OSError as e:  # e.g. EMFILE: log and keep serving
                logger.warning("error accepting on %s: %s", self._listen_address, e)
                return
            try:
                if unix:
                    label = same_host.peer_label(conn)
                    comm = TCPComm(
                        conn, self._limits, local=self._listen_address, peer=label, unix=True
                    )
                else:
                    comm = TCPComm(conn, self._limits)
            except OSError as e:  # the peer already went away
                conn.close()
                logger.info("connection dropped right after accept: %s", e)
                continue
            task = self._loop.create_task(self._run_handler(comm))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, comm: TCPComm) -> None:
        try:
            await self._handle_comm(comm)
        except Exception:
            logger.exception("error handling a connection from %s", comm.peer_address)
            comm.abort()

    def stop(self) -> None:
        """Stop accepting; connections already accepted are left to their handlers."""
        if self._sock is None:
            return
        socks = [self._sock] + ([self._alias[0]] if self._alias is not None else [])
        for sock in socks:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sock = None
        self._alias = None

    @property
    def listen_address(self) -> str:
        """``tcp://host:port`` as bound."""
        return self._listen_address

    @property
    def contact_address(self) -> str:
        """``tcp://ip:port`` others can connect to."""
        return self._contact_address


async def connect_same_host(name: bytes, address: str, limits: Limits) -> TCPComm:
    """A comm to the ``tcp://`` listener at ``address`` through its same-host Unix
    socket ``name``; :class:`CommClosedError` when that fails."""
    try:
        sock = await same_host.connect_alias(name)
    except OSError as e:
        raise CommClosedError(f"could not connect to tcp://{address} on this host: {e}") from e
    return TCPComm(sock, limits, local=same_host.local_label(), peer=f"tcp://{address}", unix=True)


class TCPBackend(Backend):
    """The ``tcp://`` backend."""

    async def connect(
        self, address: str, limits: Limits, ssl_context: ssl.SSLContext | None = None
    ) -> Comm:
        """One connection attempt; failures are :class:`CommClosedError`."""
        host, port = parse_host_port(address)
        try:
            sock = await _connect_socket(host, port)
        except OSError as e:
            raise CommClosedError(f"could not connect to tcp://{address}: {e}") from e
        try:
            return TCPComm(sock, limits)
        except OSError as e:
            sock.close()
            raise CommClosedError(f"could not connect to tcp://{address}: {e}") from e

    def listener(
        self,
        address: str,
        handle_comm: CommHandler,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Listener:
        """A :class:`TCPListener`."""
        return TCPListener(address, handle_comm, limits)


register_backend("tcp", TCPBackend())
