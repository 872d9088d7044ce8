"""Conformance checks every transport must pass (in the spirit of trio.testing).

A transport is tested through a *pair maker*: a callable that, given optional
:class:`~shoal.protocol.frames.Limits`, returns an async context manager yielding two
connected comms ``(a, b)``.  :func:`comm_pair` builds one for any registered scheme::

    await check_transport(lambda limits=None: comm_pair("tcp://127.0.0.1:0", limits))

Each ``check_*`` coroutine is also usable on its own (``CHECKS`` lists them), so a
test suite can parametrize over them and report failures one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from shoal.comm.base import Comm
from shoal.comm.registry import get_backend, parse_address
from shoal.errors import CommClosedError, MessageTooLarge, ProtocolError
from shoal.protocol.frames import DEFAULT_LIMITS, Limits
from shoal.protocol.opaque import Frame

__all__ = [
    "CHECKS",
    "MakePair",
    "check_transport",
    "comm_pair",
    "inproc_pair",
    "tcp_pair",
    "tls_pair",
]

#: ``make_pair(limits)`` → ``async with`` → ``(a, b)``, two connected comms.
MakePair = Callable[[Limits | None], AbstractAsyncContextManager[tuple[Comm, Comm]]]

_TIMEOUT = 10.0  # generous: a check that hangs fails instead of blocking the suite


@contextlib.asynccontextmanager
async def comm_pair(
    address: str,
    limits: Limits | None = None,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[Comm, Comm]]:
    """Listen at ``address``, connect to it; yield ``(connecting end, accepted end)``.

    ``limits`` apply to the accepted end only (the connecting end has the defaults),
    so that checks can write from ``a`` what ``b`` must refuse.
    """
    scheme, rest = parse_address(address)
    backend = get_backend(scheme)
    accepted: asyncio.Queue[Comm] = asyncio.Queue()

    async def handle(comm: Comm) -> None:
        await accepted.put(comm)

    listener = backend.listener(rest, handle, limits or DEFAULT_LIMITS, server_ssl)
    await listener.start()
    a: Comm | None = None
    b: Comm | None = None
    try:
        a = await backend.connect(
            parse_address(listener.contact_address)[1], DEFAULT_LIMITS, client_ssl
        )
        b = await asyncio.wait_for(accepted.get(), _TIMEOUT)
        yield a, b
    finally:
        listener.stop()
        for c in (a, b):
            if c is not None:
                c.abort()


def tcp_pair(limits: Limits | None = None) -> AbstractAsyncContextManager[tuple[Comm, Comm]]:
    """A connected pair of ``tcp://`` comms on 127.0.0.1."""
    return comm_pair("tcp://127.0.0.1:0", limits)


def tls_pair(limits: Limits | None = None) -> AbstractAsyncContextManager[tuple[Comm, Comm]]:
    """A connected pair of ``tls://`` comms on 127.0.0.1 (throwaway certificates)."""
    from shoal.security import Security

    global _TLS
    if _TLS is None:
        _TLS = Security.temporary()
    return comm_pair("tls://127.0.0.1:0", limits, _TLS.server_context(), _TLS.client_context())


_TLS: Any = None


def inproc_pair(limits: Limits | None = None) -> AbstractAsyncContextManager[tuple[Comm, Comm]]:
    """A connected pair of ``inproc://`` comms."""
    return comm_pair("inproc://", limits)


def _payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 128  # 4 KiB
    reps, extra = divmod(size, len(block))
    return block * reps + block[:extra]


def _as_bytes(frames: list[memoryview]) -> list[bytes]:
    return [bytes(f) for f in frames]


async def _read(comm: Comm) -> list[memoryview]:
    return await asyncio.wait_for(comm.read(), _TIMEOUT)


async def check_round_trip_small(make_pair: MakePair) -> None:
    """Small messages (empty frames included) arrive whole, both ways."""
    async with make_pair(None) as (a, b):
        msg: list[Frame] = [b"header", b"", bytearray(b"x" * 100), memoryview(b"view")]
        n = await a.write(msg)
        assert n >= 110, n
        assert _as_bytes(await _read(b)) == [bytes(f) for f in msg]
        await b.write([b"reply"])
        assert _as_bytes(await _read(a)) == [b"reply"]
        assert a.local_address == b.peer_address
        assert b.local_address == a.peer_address
        assert not a.closed()
        assert not b.closed()


async def check_round_trip_large(make_pair: MakePair) -> None:
    """A 50 MB frame arrives intact (written while the peer reads)."""
    async with make_pair(None) as (a, b):
        big = _payload(50 * 2**20, seed=1)
        _, frames = await asyncio.wait_for(
            asyncio.gather(a.write([b"h", big, b"t"]), b.read()), _TIMEOUT
        )
        assert len(frames) == 3
        assert frames[1].nbytes == len(big)
        assert hashlib.sha256(frames[1]).digest() == hashlib.sha256(big).digest()
        assert bytes(frames[2]) == b"t"


async def check_many_messages_in_order(make_pair: MakePair) -> None:
    """Thousands of messages of varied sizes arrive in order."""
    async with make_pair(None) as (a, b):
        count = 2000
        sizes = [(i * 7919) % 20_000 for i in range(count)]

        async def writer() -> None:
            for i, size in enumerate(sizes):
                await a.write([struct.pack("<I", i), _payload(size, seed=i % 7)])

        async def reader() -> None:
            for i, size in enumerate(sizes):
                header, body = await b.read()
                assert struct.unpack("<I", header)[0] == i
                assert bytes(body) == _payload(size, seed=i % 7)

        await asyncio.wait_for(asyncio.gather(writer(), reader()), _TIMEOUT)


async def check_both_directions_concurrently(make_pair: MakePair) -> None:
    """Both ends write large data at once while reading: no deadlock, no mix-up."""
    async with make_pair(None) as (a, b):

        async def pump(src: Comm, dst: Comm, seed: int) -> None:
            async def send() -> None:
                for i in range(10):
                    await src.write([struct.pack("<I", i), _payload(2 * 2**20, seed + i)])

            async def receive() -> None:
                for i in range(10):
                    header, body = await dst.read()
                    assert struct.unpack("<I", header)[0] == i
                    assert bytes(body) == _payload(2 * 2**20, seed + i)

            await asyncio.gather(send(), receive())

        await asyncio.wait_for(asyncio.gather(pump(a, b, 0), pump(b, a, 100)), _TIMEOUT)


async def check_concurrent_writers_do_not_interleave(make_pair: MakePair) -> None:
    """Messages written by concurrent tasks arrive whole (never interleaved)."""
    async with make_pair(None) as (a, b):
        writers, per_writer = 8, 20

        async def writer(w: int) -> None:
            for i in range(per_writer):
                await a.write([struct.pack("<II", w, i), _payload(300_000, w * 1000 + i)])

        async def reader() -> None:
            seen: dict[int, int] = {}
            for _ in range(writers * per_writer):
                header, body = await b.read()
                w, i = struct.unpack("<II", header)
                assert seen.get(w, -1) == i - 1  # per-writer order is kept
                seen[w] = i
                assert bytes(body) == _payload(300_000, w * 1000 + i)

        await asyncio.wait_for(
            asyncio.gather(reader(), *(writer(w) for w in range(writers))), _TIMEOUT
        )


async def check_close_seen_by_peer(make_pair: MakePair) -> None:
    """After a graceful close, the peer reads what was sent, then CommClosedError."""
    async with make_pair(None) as (a, b):
        await a.write([b"last words"])
        await a.close()
        assert a.closed()
        await a.close()  # idempotent
        assert _as_bytes(await _read(b)) == [b"last words"]
        try:
            await _read(b)
        except CommClosedError:
            pass
        else:
            raise AssertionError("read after the peer closed did not raise CommClosedError")
        for op in (a.read(), a.write([b"x"])):
            try:
                await op
            except CommClosedError:
                pass
            else:
                raise AssertionError("using a closed comm did not raise CommClosedError")


async def check_abort_seen_by_peer(make_pair: MakePair) -> None:
    """After an abort, the peer's reads fail with CommClosedError; writes soon do."""
    async with make_pair(None) as (a, b):
        a.abort()
        a.abort()  # idempotent
        assert a.closed()
        try:
            await _read(b)
        except CommClosedError:
            pass
        else:
            raise AssertionError("read after the peer aborted did not raise CommClosedError")
        for _ in range(100):  # TCP may accept a write or two before noticing
            try:
                await b.write([b"x" * 1000])
            except CommClosedError:
                break
            await asyncio.sleep(0.001)
        else:
            raise AssertionError("writes to an aborted peer never failed")


async def check_abort_wakes_own_reader(make_pair: MakePair) -> None:
    """A task blocked in read() gets CommClosedError when its own end is aborted."""
    async with make_pair(None) as (a, _):
        reader = asyncio.ensure_future(a.read())
        await asyncio.sleep(0.01)
        assert not reader.done()
        a.abort()
        try:
            await asyncio.wait_for(reader, _TIMEOUT)
        except CommClosedError:
            pass
        else:
            raise AssertionError("read() on an aborted comm did not raise CommClosedError")


async def check_read_is_cancel_safe(make_pair: MakePair) -> None:
    """Cancelling a read loses nothing: the next read gets the next message."""
    async with make_pair(None) as (a, b):
        for _ in range(3):
            reader = asyncio.ensure_future(b.read())
            await asyncio.sleep(0.005)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await a.write([b"one", _payload(200_000)])
        assert _as_bytes(await _read(b)) == [b"one", _payload(200_000)]


async def check_oversized_message_refused(make_pair: MakePair) -> None:
    """A message over the reader's limits raises MessageTooLarge, and keeps raising."""
    limits = Limits(max_frames=4, max_header_bytes=1000, max_message_bytes=100_000)
    async with make_pair(limits) as (a, b):
        await a.write([b"fine", b"x" * 50_000])
        assert len(await _read(b)) == 2
        write = asyncio.ensure_future(a.write([b"h", b"x" * 200_000]))
        error: MessageTooLarge | None = None
        try:
            await _read(b)
        except MessageTooLarge as e:
            error = e
        if error is None:
            raise AssertionError("an oversized message was accepted")
        assert "200,001" in str(error), str(error)  # the announced size...
        assert "100,000" in str(error), str(error)  # ...and the limit
        try:
            await _read(b)
        except MessageTooLarge:
            pass
        else:
            raise AssertionError("the comm recovered from an oversized message")
        b.abort()
        with contextlib.suppress(CommClosedError):
            await asyncio.wait_for(write, _TIMEOUT)


async def check_limits_on_frames_and_header(make_pair: MakePair) -> None:
    """Frame count and header size limits are enforced by the reader."""
    for frames in ([b"h"] * 5, [b"h" * 1001]):
        limits = Limits(max_frames=4, max_header_bytes=1000, max_message_bytes=100_000)
        async with make_pair(limits) as (a, b):
            await a.write([b"ok"])
            assert _as_bytes(await _read(b)) == [b"ok"]
            await a.write(frames)
            try:
                await _read(b)
            except ProtocolError:
                pass
            else:
                raise AssertionError(f"{len(frames)} frames accepted despite {limits}")


CHECKS: list[Callable[[MakePair], Awaitable[None]]] = [
    check_round_trip_small,
    check_round_trip_large,
    check_many_messages_in_order,
    check_both_directions_concurrently,
    check_concurrent_writers_do_not_interleave,
    check_close_seen_by_peer,
    check_abort_seen_by_peer,
    check_abort_wakes_own_reader,
    check_read_is_cancel_safe,
    check_oversized_message_refused,
    check_limits_on_frames_and_header,
]


async def check_transport(make_pair: MakePair) -> None:
    """Run every conformance check against the transport ``make_pair`` builds."""
    for check in CHECKS:
        await check(make_pair)
