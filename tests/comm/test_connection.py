import asyncio
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import shoal.comm.connection as connection_module
from shoal.comm.base import Comm
from shoal.comm.connection import Connection, connect, listen
from shoal.comm.registry import get_backend, parse_address
from shoal.errors import (
    CommClosedError,
    ConnectTimeout,
    HandshakeError,
    MessageTooLarge,
    RemoteProtocolError,
    VersionMismatch,
)
from shoal.protocol.frames import Limits
from shoal.protocol.handshake import decode_hello, encode_hello, make_hello
from shoal.protocol.messages import OK, ErrorReply, Heartbeat, Identity, Message
from shoal.protocol.versions import collect_versions

ADDRESSES = ["tcp://127.0.0.1:0", "tcp-only", "inproc://"]


@pytest.fixture(params=ADDRESSES, ids=["tcp", "tcp-only", "inproc"])
def address(request: pytest.FixtureRequest) -> str:
    """tcp: a peer on this host moves to the listener's Unix socket; tcp-only: it stays."""
    if request.param == "tcp-only":
        request.getfixturevalue("tcp_only")
        return "tcp://127.0.0.1:0"
    return str(request.param)


Handler = Callable[[Connection], Awaitable[None]]


async def echo(conn: Connection) -> None:
    while True:
        msgs = await conn.read()
        await conn.write(msgs)


async def test_handshake_and_messages(address: str) -> None:
    seen: list[Connection] = []

    async def handler(conn: Connection) -> None:
        seen.append(conn)
        await echo(conn)

    listener = await listen(address, handler, role="scheduler")
    try:
        conn = await connect(listener.contact_address, role="client")
        assert conn.peer_info["role"] == "scheduler"
        assert conn.peer_role == "scheduler"
        assert conn.peer_info["versions"] == collect_versions()
        await conn.write(Heartbeat(metrics={"cpu": 1.5}))
        assert await conn.read() == [Heartbeat(metrics={"cpu": 1.5})]
        await conn.write([Identity(), OK(value=(1, "two"))])  # a batch
        assert await conn.read() == [Identity(), OK(value=(1, "two"))]
        await conn.write([])  # nothing to send
        assert len(seen) == 1  # over tcp://, the TCP connection that offered the move isn't
        assert seen[0].peer_info["role"] == "client"
        assert seen[0].peer_address == conn.local_address
        assert "client" in repr(seen[0])
        await conn.close()
        assert conn.closed()
    finally:
        listener.stop()


async def test_connect_to_nothing_times_out(address: str) -> None:
    if address.startswith("tcp"):
        with socket.socket() as s:  # a port with no listener
            s.bind(("127.0.0.1", 0))
            target = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    else:
        target = "inproc://0/999999"
    with pytest.raises(ConnectTimeout) as info:
        await connect(target, role="client", timeout=0.2)
    assert target in str(info.value)
    assert "0.2 s" in str(info.value)
    assert isinstance(info.value, TimeoutError)


async def test_connect_retries_until_the_listener_appears() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = f"tcp://127.0.0.1:{port}"
    pending = asyncio.ensure_future(connect(target, role="client", timeout=10))
    await asyncio.sleep(0.05)
    assert not pending.done()
    listener = await listen(target, echo, role="scheduler")
    try:
        conn = await pending
        await conn.write(Identity())
        assert await conn.read() == [Identity()]
        conn.abort()
    finally:
        listener.stop()


async def test_unknown_scheme() -> None:
    with pytest.raises(ValueError, match=r"tcp://.*inproc://|inproc://.*tcp://"):
        await connect("udp://1.2.3.4:5", role="client")


@pytest.mark.parametrize("size", [100_000, 20_000_000])
async def test_oversized_message_gets_an_error_reply(
    address: str, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []

    async def handler(conn: Connection) -> None:
        try:
            await echo(conn)
        except MessageTooLarge as e:
            errors.append(e)
            raise

    limits = Limits(max_message_bytes=10_000)
    listener = await listen(address, handler, role="worker", limits=limits)
    try:
        conn = await connect(listener.contact_address, role="client")
        await conn.write(Identity())
        assert await conn.read() == [Identity()]
        try:
            await conn.write(OK(value=b"x" * size))
        except CommClosedError:
            pass  # the peer may abort before the whole message left
        (reply,) = await conn.read()
        assert isinstance(reply, ErrorReply)
        announced = re.search(r"announces ([\d,]+) bytes", reply.message)
        assert announced, reply.message  # the announced size...
        assert size < int(announced[1].replace(",", "")) < size + 100
        assert "10,000" in reply.message  # ...the limit...
        assert "max_message_bytes" in reply.message  # ...and what to change
        with pytest.raises(CommClosedError):
            await conn.read()
        conn.abort()
        for _ in range(500):  # until the handler saw the error
            if errors:
                break
            await asyncio.sleep(0.01)
        assert len(errors) == 1
        # the listener keeps serving others
        other = await connect(listener.contact_address, role="client")
        await other.write(Identity())
        assert await other.read() == [Identity()]
        other.abort()
    finally:
        listener.stop()
    assert "refused an oversized message" in caplog.text


async def test_malformed_message_gets_an_error_reply(address: str) -> None:
    listener = await listen(address, echo, role="scheduler")
    try:
        conn = await connect(listener.contact_address, role="client")
        await conn.comm.write([b"\xc1 not msgpack"])
        (reply,) = await conn.read()
        assert isinstance(reply, ErrorReply)
        assert "invalid message" in reply.message
        with pytest.raises(CommClosedError):
            await conn.read()
    finally:
        listener.stop()


async def test_reading_invalid_input_raises_and_aborts(address: str) -> None:
    """The side that reads garbage raises the ProtocolError, after telling the peer."""
    server_conn: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    async def handler(conn: Connection) -> None:
        server_conn.set_result(conn)
        await conn.comm.write([b"\x93 garbage"])
        await asyncio.sleep(10)

    listener = await listen(address, handler, role="scheduler")
    try:
        conn = await connect(listener.contact_address, role="client")
        with pytest.raises(RemoteProtocolError):
            await conn.read()
        assert conn.closed()
        srv = await server_conn
        (reply,) = await srv.read()
        assert isinstance(reply, ErrorReply)
    finally:
        listener.stop()


async def test_error_reply_from_peer_is_a_message(address: str) -> None:
    async def handler(conn: Connection) -> None:
        await conn.read()
        await conn.write(ErrorReply(message="no"))
        await conn.read()

    listener = await listen(address, handler, role="scheduler")
    try:
        conn = await connect(listener.contact_address, role="client")
        await conn.write(Identity())
        assert await conn.read() == [ErrorReply(message="no")]
        await conn.write(Identity())
        with pytest.raises(CommClosedError):  # the handler returned: connection closed
            await conn.read()
    finally:
        listener.stop()


async def test_handler_errors_are_logged_and_the_listener_survives(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def handler(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom in handler")
        await echo(conn)

    listener = await listen(address, handler, role="scheduler")
    try:
        first = await connect(listener.contact_address, role="client")
        with pytest.raises(CommClosedError):
            await first.read()
        second = await connect(listener.contact_address, role="client")
        await second.write(Identity())
        assert await second.read() == [Identity()]
        second.abort()
    finally:
        listener.stop()
    assert "boom in handler" in caplog.text


async def test_stop_aborts_spawned_connections(address: str) -> None:
    listener = await listen(address, echo, role="scheduler")
    conn = await connect(listener.contact_address, role="client")
    await conn.write(Identity())
    await conn.read()
    listener.stop()
    with pytest.raises(CommClosedError):
        await asyncio.wait_for(conn.read(), 5)
    with pytest.raises(ConnectTimeout):
        await connect(listener.contact_address, role="client", timeout=0.1)


async def raw_comm(address: str) -> Comm:
    scheme, rest = parse_address(address)
    return await get_backend(scheme).connect(rest, Limits())


async def test_bad_hello_is_logged_and_closed(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.comm.connection")
    listener = await listen(address, echo, role="scheduler")
    try:
        for bad in ([b"\xc1"], [encode_hello({"op": "hello"})]):
            comm = await raw_comm(listener.contact_address)
            await comm.write(bad)
            decode_hello((await comm.read())[0])  # the listener's own hello
            with pytest.raises(CommClosedError):
                await comm.read()
            comm.abort()
        ok = await connect(listener.contact_address, role="client")
        ok.abort()
    finally:
        listener.stop()
    assert caplog.text.count("handshake with") == 2


async def test_other_protocol_version_is_refused(address: str) -> None:
    """A client facing a server that speaks another protocol gets VersionMismatch."""

    async def fake_server(comm: Comm) -> None:
        await comm.read()  # the client's hello
        await comm.write([encode_hello({**make_hello("scheduler", {}), "protocol": 99})])
        comm.abort()

    scheme, rest = parse_address(address)
    fake = get_backend(scheme).listener(rest, fake_server, Limits())
    await fake.start()
    try:
        with pytest.raises(VersionMismatch, match="99"):
            await connect(fake.contact_address, role="client", timeout=5)
    finally:
        fake.stop()


async def test_silent_peer_times_out_in_handshake(
    address: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.comm.connection")
    monkeypatch.setattr(connection_module, "HANDSHAKE_TIMEOUT", 0.1)
    listener = await listen(address, echo, role="scheduler")
    try:
        comm = await raw_comm(listener.contact_address)  # never says hello
        await comm.read()  # the listener's hello
        with pytest.raises(CommClosedError):
            await asyncio.wait_for(comm.read(), 5)
        comm.abort()
    finally:
        listener.stop()
    assert "handshake with" in caplog.text


async def test_version_mismatch_is_a_warning(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    listener = await listen(address, echo, role="scheduler")
    try:
        comm = await raw_comm(listener.contact_address)
        versions = {**collect_versions(), "cloudpickle": "0.0.1"}
        await comm.write([encode_hello(make_hello("client", versions))])
        await comm.read()
        # the handshake succeeded despite the mismatch: messages flow
        from shoal.protocol.wire import dumps_messages, loads_messages

        await comm.write(dumps_messages([Identity()]))
        assert loads_messages(await comm.read()) == [Identity()]
        comm.abort()
    finally:
        listener.stop()
    assert "version mismatch" in caplog.text
    assert "cloudpickle" in caplog.text


async def test_handshake_error_when_server_is_not_shoal() -> None:
    async def not_shoal(comm: Comm) -> None:
        await comm.read()
        await comm.write([b"\xc1"])
        comm.abort()

    listener = get_backend("tcp").listener("127.0.0.1:0", not_shoal, Limits())
    await listener.start()
    try:
        with pytest.raises(HandshakeError, match="valid hello"):
            await connect(listener.contact_address, role="client", timeout=5)
    finally:
        listener.stop()


@pytest.fixture
async def echo_listener(address: str) -> AsyncIterator[str]:
    listener = await listen(address, echo, role="scheduler")
    yield listener.contact_address
    listener.stop()


async def test_many_connections(echo_listener: str) -> None:
    conns = await asyncio.gather(*(connect(echo_listener, role="w") for _ in range(20)))

    async def ping(conn: Connection, i: int) -> list[Message]:
        await conn.write(OK(value=i))
        return await conn.read()

    replies = await asyncio.gather(*(ping(c, i) for i, c in enumerate(conns)))
    assert replies == [[OK(value=i)] for i in range(20)]
    for c in conns:
        await c.close()
