import asyncio
import logging
import mmap
import socket
import struct

import numpy as np
import pytest

from shoal.comm.base import Comm
from shoal.comm.connection import connect, listen
from shoal.comm.registry import get_backend
from shoal.comm.tcp import TCPComm, TCPListener
from shoal.errors import CommClosedError, CommError
from shoal.protocol.frames import Limits
from shoal.protocol.messages import DataReply, Identity
from shoal.protocol.serialize import dumps, loads
from shoal.testing.transport import tcp_pair


async def test_listen_on_port_zero_gives_the_real_port() -> None:
    async def handle(comm: Comm) -> None:
        comm.abort()

    listener = get_backend("tcp").listener("127.0.0.1:0", handle, Limits())
    await listener.start()
    try:
        assert isinstance(listener, TCPListener)
        port = int(listener.listen_address.rsplit(":", 1)[1])
        assert port > 0
        assert listener.contact_address == listener.listen_address
    finally:
        listener.stop()
        listener.stop()  # idempotent


async def test_contact_address_of_wildcard() -> None:
    async def handle(comm: Comm) -> None:
        comm.abort()

    listener = get_backend("tcp").listener("0.0.0.0:0", handle, Limits())
    await listener.start()
    try:
        assert listener.listen_address.startswith("tcp://0.0.0.0:")
        assert not listener.contact_address.startswith("tcp://0.0.0.0")
        port = listener.listen_address.rsplit(":", 1)[1]
        assert listener.contact_address.endswith(f":{port}")
    finally:
        listener.stop()


async def test_listen_on_a_busy_port_is_a_comm_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]

        async def handle(comm: Comm) -> None:
            comm.abort()

        listener = get_backend("tcp").listener(f"127.0.0.1:{port}", handle, Limits())
        with pytest.raises(CommError, match=str(port)):
            await listener.start()


async def test_nodelay_is_set() -> None:
    async with tcp_pair() as (a, b):
        for comm in (a, b):
            assert isinstance(comm, TCPComm)
            assert comm._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_dropped_in_the_middle_of_a_message() -> None:
    accepted: asyncio.Queue[Comm] = asyncio.Queue()

    async def handle(comm: Comm) -> None:
        await accepted.put(comm)

    listener = get_backend("tcp").listener("127.0.0.1:0", handle, Limits())
    await listener.start()
    try:
        host, port = listener.listen_address.removeprefix("tcp://").rsplit(":", 1)
        raw = socket.create_connection((host, int(port)))
        raw.sendall(struct.pack("<QQ", 1, 1000) + b"only part of it")
        raw.close()
        comm = await asyncio.wait_for(accepted.get(), 5)
        with pytest.raises(CommClosedError, match="in the middle of a message"):
            await asyncio.wait_for(comm.read(), 5)
        assert comm.closed()
    finally:
        listener.stop()


async def test_random_bytes_on_the_port_are_logged_and_the_listener_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.comm.connection")

    async def echo(conn):  # type: ignore[no-untyped-def]
        while True:
            await conn.write(await conn.read())

    listener = await listen("tcp://127.0.0.1:0", echo, role="scheduler")
    try:
        host, port = listener.listen_address.removeprefix("tcp://").rsplit(":", 1)
        loop = asyncio.get_running_loop()
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 10, b"\x00" * 8):
            raw = socket.create_connection((host, int(port)))
            raw.setblocking(False)
            await loop.sock_sendall(raw, junk)
            # the listener closes the connection (after its own hello)
            while await asyncio.wait_for(loop.sock_recv(raw, 65536), 5):
                pass
            raw.close()
        conn = await connect(listener.contact_address, role="client")
        await conn.write(Identity())
        assert await conn.read() == [Identity()]
        conn.abort()
    finally:
        listener.stop()
    assert caplog.text.count("handshake with") == 3


async def test_zero_copy_receive_of_a_large_array() -> None:
    """A large array is received into the decoder's buffer and unpickled in place."""
    arr = np.random.default_rng(0).random(4 * 2**20)  # 32 MiB
    async with tcp_pair() as (a, b):
        from shoal.protocol.wire import dumps_messages, loads_messages

        frames = dumps_messages([DataReply(data={"x": dumps(arr)})])
        _, received = await asyncio.gather(a.write(frames), b.read())
        (reply,) = loads_messages(received)
        assert isinstance(reply, DataReply)
        out = loads(reply.data["x"])
        np.testing.assert_array_equal(out, arr)
        assert out.flags.writeable
        body = received[0].obj
        assert isinstance(body, (bytearray, mmap.mmap))  # one buffer per message body
        assert np.shares_memory(out, np.frombuffer(body, dtype="u1"))


async def test_write_after_peer_abort_raises_but_reply_is_readable() -> None:
    """A peer that answers and then aborts: our write fails, its last words are read."""
    async with tcp_pair() as (a, b):
        await b.write([b"goodbye"])
        b.abort()

        async def write_until_it_fails() -> None:
            for _ in range(100):
                await a.write([b"x" * 100_000])
                await asyncio.sleep(0.001)

        with pytest.raises(CommClosedError):
            await write_until_it_fails()
        assert [bytes(f) for f in await a.read()] == [b"goodbye"]
        with pytest.raises(CommClosedError):
            await a.read()


async def test_concurrent_reads_are_refused() -> None:
    async with tcp_pair() as (a, _):
        first = asyncio.ensure_future(a.read())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already reading"):
            await a.read()
        first.cancel()
