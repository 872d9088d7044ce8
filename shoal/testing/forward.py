"""A TCP port forwarder: stands in for NAT or a container's published port in tests.

``async with forward("127.0.0.1", 0, "127.0.0.1", 9001) as fwd`` accepts on
``fwd.address`` and copies bytes both ways to ``127.0.0.1:9001``, counting the
connections it carried (``fwd.connections``). A server that binds to its own address
and advertises ``fwd.address`` as its contact address is then reached only through the
forwarder, as a worker behind NAT would be.

As a program (in another network namespace, say)::

    python -m shoal.testing.forward 10.0.0.2:9000 127.0.0.1:9001

prints ``forwarding 10.0.0.2:9000 -> 127.0.0.1:9001`` once listening, and runs until
killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from shoal.comm.registry import parse_host_port, unparse_host_port

__all__ = ["Forwarder", "forward", "main"]


class Forwarder:
    """A running forwarder (see :func:`forward`)."""

    def __init__(self, server: asyncio.Server, target: tuple[str, int]) -> None:
        self.server = server
        self.target = target
        #: how many connections were forwarded so far
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def host_port(self) -> tuple[str, int]:
        """The ``(host, port)`` this forwarder accepts on."""
        sockname = self.server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    @property
    def address(self) -> str:
        """``tcp://host:port`` to connect to."""
        return "tcp://" + unparse_host_port(*self.host_port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(_pump(reader, up_writer)),
            asyncio.ensure_future(_pump(up_reader, writer)),
        ]
        try:
            await asyncio.gather(*pumps)
        finally:
            for p in pumps:
                p.cancel()
            for w in (writer, up_writer):
                w.close()

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop accepting and drop every forwarded connection."""
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


@contextlib.asynccontextmanager
async def forward(
    host: str, port: int, target_host: str, target_port: int
) -> AsyncIterator[Forwarder]:
    """Forward connections made to ``host:port`` (0: a free port) to the target."""
    fwd: Forwarder | None = None

    def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert fwd is not None
        fwd._on_connection(reader, writer)

    server = await asyncio.start_server(on_connection, host, port, reuse_address=True)
    fwd = Forwarder(server, (target_host, target_port))
    try:
        yield fwd
    finally:
        await fwd.close()


async def _run(listen: str, target: str) -> None:
    host, port = parse_host_port(listen)
    target_host, target_port = parse_host_port(target)
    async with forward(host, port, target_host, target_port):
        print(f"forwarding {listen} -> {target}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """``python -m shoal.testing.forward LISTEN_HOST:PORT TARGET_HOST:PORT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m shoal.testing.forward LISTEN_HOST:PORT TARGET_HOST:PORT")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args[0], args[1]))


if __name__ == "__main__":
    main()
