"""``tls://`` transport: TLS over TCP, on asyncio's SSL streams.

Encryption needs the :mod:`ssl` module's buffering, so unlike ``tcp://`` this transport
copies data once more on each side; it is for clusters on networks that can't be
trusted. Contexts come from :class:`shoal.security.Security` (``server_context`` for
listeners, ``client_context`` for connections); without one, ``tls://`` refuses to
start rather than fall back to clear text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence

from shoal.comm.base import Backend, Comm, CommHandler, Listener
from shoal.comm.registry import parse_host_port, register_backend, unparse_host_port
from shoal.comm.tcp import reachable_ip
from shoal.errors import CommClosedError, CommError, ProtocolError
from shoal.protocol.frames import FrameDecoder, Limits, encode_frames
from shoal.protocol.opaque import Frame

__all__ = ["TLSBackend", "TLSComm", "TLSListener"]

logger = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024
_NO_CONTEXT = (
    "tls:// needs TLS certificates: pass Security(tls_ca_file=..., tls_cert=..., "
    "tls_key=...) (or Security.temporary() for a LocalCluster), or --tls-ca-file, "
    "--tls-cert and --tls-key on the command line"
)


def _address(sockaddr: object) -> str:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return "tls://" + unparse_host_port(str(sockaddr[0]), int(sockaddr[1]))
    return f"tls://{sockaddr}"


class TLSComm(Comm):
    """One end of a TLS connection (see :class:`~shoal.comm.base.Comm`)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._decoder = FrameDecoder(limits)
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._local = _address(writer.get_extra_info("sockname"))
        self._peer = _address(writer.get_extra_info("peername"))

    @property
    def local_address(self) -> str:
        """This end's ``tls://ip:port``."""
        return self._local

    @property
    def peer_address(self) -> str:
        """The other end's ``tls://ip:port``."""
        return self._peer

    def closed(self) -> bool:
        """True once closed here or by the peer."""
        return self._closed

    async def read(self) -> list[memoryview]:
        """The next message's frames (see :meth:`Comm.read`)."""
        while True:
            msg = self._decoder.next_message()
            if msg is not None:
                return msg
            if self._closed:
                raise CommClosedError(f"the connection to {self._peer} is closed")
            try:
                data = await self._reader.read(_READ_SIZE)
            except (OSError, ssl.SSLError) as e:
                self.abort()
                raise CommClosedError(f"connection to {self._peer} broke: {e}") from e
            if not data:
                self.abort()
                if self._decoder.in_progress:
                    raise CommClosedError(f"{self._peer} closed the connection mid-message")
                raise CommClosedError(f"connection closed by peer {self._peer}")
            try:
                self._decoder.receive_data(data)
            except ProtocolError:
                self.abort()
                raise

    async def write(self, frames: Sequence[Frame]) -> int:
        """Send one message (see :meth:`Comm.write`)."""
        if self._closed:
            raise CommClosedError(f"the connection to {self._peer} is closed")
        buffers = encode_frames(frames, self._limits)
        async with self._write_lock:
            if self._closed:
                raise CommClosedError(f"the connection to {self._peer} is closed")
            try:
                for buf in buffers:
                    self._writer.write(buf)
                await self._writer.drain()
            except (OSError, ssl.SSLError, RuntimeError) as e:
                self.abort()
                raise CommClosedError(f"could not send to {self._peer}: {e}") from e
            except asyncio.CancelledError:
                self.abort()  # part of the message may have left: the stream is unusable
                raise
        return sum(memoryview(b).nbytes for b in buffers)

    async def close(self) -> None:
        """Close gracefully (TLS close_notify, then the socket)."""
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 5)

    def abort(self) -> None:
        """Close at once."""
        self._closed = True
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()


class TLSListener(Listener):
    """Accepts TLS connections (see :class:`Listener`)."""

    def __init__(
        self,
        address: str,
        handle_comm: CommHandler,
        limits: Limits,
        context: ssl.SSLContext | None,
    ) -> None:
        host, port = parse_host_port(address, default_port=0)
        self._host = host or "0.0.0.0"
        self._port = port
        self._handle_comm = handle_comm
        self._limits = limits
        self._context = context
        self._server: asyncio.Server | None = None
        self._listen_address = ""
        self._contact_address = ""

    async def start(self) -> None:
        """Bind and accept in the background; a TLS handshake that fails drops that peer."""
        if self._context is None:
            raise CommError(_NO_CONTEXT)
        try:
            self._server = await asyncio.start_server(
                self._on_connection,
                self._host,
                self._port,
                ssl=self._context,
                reuse_address=True,
                ssl_handshake_timeout=10,
            )
        except OSError as e:
            raise CommError(
                f"could not listen on tls://{unparse_host_port(self._host, self._port)}: {e}"
            ) from e
        sock = self._server.sockets[0]
        bound = sock.getsockname()
        self._listen_address = _address(bound)
        ip = bound[0]
        if ip in ("0.0.0.0", "::"):
            ip = reachable_ip(sock.family)
        self._contact_address = "tls://" + unparse_host_port(ip, bound[1])

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        comm = TLSComm(reader, writer, self._limits)
        try:
            await self._handle_comm(comm)
        except Exception:
            logger.exception("error handling a connection from %s", comm.peer_address)
            comm.abort()

    def stop(self) -> None:
        """Stop accepting."""
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def listen_address(self) -> str:
        """``tls://host:port`` as bound."""
        return self._listen_address

    @property
    def contact_address(self) -> str:
        """``tls://ip:port`` others can connect to."""
        return self._contact_address


class TLSBackend(Backend):
    """The ``tls://`` backend."""

    async def connect(
        self, address: str, limits: Limits, ssl_context: ssl.SSLContext | None = None
    ) -> Comm:
        """One attempt: TCP connect then TLS handshake. A refused connection is a
        :class:`CommClosedError` (retried); a failed handshake or a missing context is a
        :class:`CommError` saying why (not retried)."""
        if ssl_context is None:
            raise CommError(_NO_CONTEXT)
        host, port = parse_host_port(address)
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl_context, server_hostname=host, ssl_handshake_timeout=10
            )
        except ssl.SSLError as e:
            raise CommError(
                f"TLS handshake with tls://{address} failed: {e.reason or e}; check that "
                "both sides use certificates from the same CA"
            ) from e
        except (OSError, asyncio.TimeoutError) as e:
            raise CommClosedError(f"could not connect to tls://{address}: {e}") from e
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return TLSComm(reader, writer, limits)

    def listener(
        self,
        address: str,
        handle_comm: CommHandler,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Listener:
        """A :class:`TLSListener` (its context decides which clients it accepts)."""
        return TLSListener(address, handle_comm, limits, ssl_context)


register_backend("tls", TLSBackend())
