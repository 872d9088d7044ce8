import asyncio
import hashlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from shoal.comm.base import Comm, Listener
from shoal.comm.connection import Connection, connect, listen
from shoal.comm.inproc import new_address
from shoal.comm.registry import get_backend
from shoal.errors import CommClosedError, CommError
from shoal.protocol.frames import Limits
from shoal.protocol.messages import OK, Identity
from shoal.protocol.opaque import Opaque
from shoal.testing.transport import inproc_pair

T = TypeVar("T")


class LoopThread:
    """An event loop running in another thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def other_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def test_addresses_are_unique() -> None:
    a, b = new_address(), new_address()
    assert a != b
    assert a.startswith("inproc://")


async def test_cross_thread_connection(other_loop: LoopThread) -> None:
    handler_threads: list[int] = []

    async def handler(conn: Connection) -> None:
        handler_threads.append(threading.get_ident())
        while True:
            msgs = await conn.read()
            await conn.write(msgs)

    async def start_listener() -> Listener:
        return await listen("inproc://", handler, role="scheduler")

    listener = other_loop.run(start_listener())
    try:
        conn = await connect(listener.contact_address, role="worker")
        assert conn.peer_info["role"] == "scheduler"
        for i in range(200):
            await conn.write(OK(value=i))
            assert await conn.read() == [OK(value=i)]
        big = bytes(range(256)) * (80 * 2**12)  # 80 MiB: over the high-water mark
        await conn.write(OK(value=Opaque([b"pickle", big])))
        (reply,) = await conn.read()
        assert isinstance(reply, OK)
        data = reply.value.frames[1]
        assert hashlib.sha256(data).digest() == hashlib.sha256(big).digest()
        assert handler_threads == [handler_threads[0]]
        assert handler_threads[0] != threading.get_ident()
        await conn.close()
    finally:
        other_loop.loop.call_soon_threadsafe(listener.stop)


async def test_cross_thread_close_is_seen(other_loop: LoopThread) -> None:
    accepted: asyncio.Queue[Comm] = asyncio.Queue()
    main_loop = asyncio.get_running_loop()

    async def handle(comm: Comm) -> None:
        main_loop.call_soon_threadsafe(accepted.put_nowait, comm)
        await comm.write([b"from the other thread"])
        # block in read on the other loop until the main thread closes its end
        try:
            await comm.read()
        except CommClosedError:
            await comm.close()

    listener = get_backend("inproc").listener("", handle, Limits())
    other_loop.run(listener.start())
    try:
        a = await get_backend("inproc").connect(
            listener.listen_address.removeprefix("inproc://"), Limits()
        )
        assert [bytes(f) for f in await a.read()] == [b"from the other thread"]
        await accepted.get()
        await a.close()
        with pytest.raises(CommClosedError):
            await a.read()
    finally:
        listener.stop()


async def test_backpressure_blocks_writer_until_reader_reads() -> None:
    async with inproc_pair() as (a, b):
        big = b"x" * (40 * 2**20)
        await a.write([big])  # under the high-water mark: returns at once
        second = asyncio.ensure_future(a.write([big]))  # over it: waits
        await asyncio.sleep(0.01)
        assert not second.done()
        await b.read()
        await asyncio.wait_for(second, 5)
        await b.read()


async def test_peer_close_unblocks_a_waiting_writer() -> None:
    async with inproc_pair() as (a, b):
        await asyncio.wait_for(a.write([b"x" * (40 * 2**20)]), 5)
        blocked = asyncio.ensure_future(a.write([b"y" * (40 * 2**20)]))
        await asyncio.sleep(0.01)
        assert not blocked.done()
        b.abort()
        await asyncio.wait_for(blocked, 5)
        with pytest.raises(CommClosedError):
            await a.write([b"z"])


async def test_frames_are_passed_as_is() -> None:
    async with inproc_pair() as (a, b):
        payload = bytearray(b"shared")
        await a.write([b"h", payload])
        frames = await b.read()
        assert frames[1].obj is payload


async def test_address_in_use() -> None:
    async def handle(comm: Comm) -> None:
        comm.abort()

    first = get_backend("inproc").listener("", handle, Limits())
    await first.start()
    try:
        name = first.listen_address.removeprefix("inproc://")
        second = get_backend("inproc").listener(name, handle, Limits())
        with pytest.raises(CommError, match="already in use"):
            await second.start()
    finally:
        first.stop()


async def test_listener_with_explicit_name() -> None:
    async def handler(conn: Connection) -> None:
        await conn.read()

    listener = await listen("inproc://my-scheduler", handler, role="scheduler")
    try:
        assert listener.contact_address == "inproc://my-scheduler"
        conn = await connect("inproc://my-scheduler", role="client")
        await conn.write(Identity())
        conn.abort()
    finally:
        listener.stop()
