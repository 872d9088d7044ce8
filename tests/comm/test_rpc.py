import asyncio
from collections.abc import AsyncIterator

import pytest

from shoal.comm.base import Listener
from shoal.comm.connection import Connection, connect, listen
from shoal.comm.rpc import ConnectionPool, serve_requests
from shoal.errors import CommClosedError, CommError, ConnectTimeout, RemoteError
from shoal.protocol.messages import OK, ErrorReply, Heartbeat, Identity, Message, WhoHas


class Server:
    """A request server that counts its connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self.delay = 0.0
        self.listener: Listener | None = None

    async def dispatch(self, msg: Message) -> Message:
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(msg, Identity):
            return OK(value={"type": "test"})
        if isinstance(msg, WhoHas):
            return OK(value=msg.keys)
        raise ValueError(f"cannot handle {msg.op}")

    async def handler(self, conn: Connection) -> None:
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await serve_requests(conn, self.dispatch)
        finally:
            self.open -= 1

    @property
    def address(self) -> str:
        assert self.listener is not None
        return self.listener.contact_address


@pytest.fixture(params=["tcp://127.0.0.1:0", "inproc://"], ids=["tcp", "inproc"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    srv = Server()
    srv.listener = await listen(request.param, srv.handler, role="scheduler")
    yield srv
    srv.listener.stop()


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(role="client", timeout=5)
    yield p
    await p.close()


async def test_request_and_reuse(server: Server, pool: ConnectionPool) -> None:
    for _ in range(5):
        assert await pool.request(server.address, Identity()) == OK(value={"type": "test"})
    assert server.accepted == 1
    assert pool.idle(server.address) == 1
    assert pool.active == 0
    assert pool.open == 1


async def test_remote_error_keeps_the_connection(server: Server, pool: ConnectionPool) -> None:
    with pytest.raises(RemoteError, match="ValueError: cannot handle heartbeat"):
        await pool.request(server.address, Heartbeat())
    assert await pool.request(server.address, WhoHas(keys=("x",))) == OK(value=("x",))
    assert server.accepted == 1


async def test_concurrent_requests_open_several_connections(
    server: Server, pool: ConnectionPool
) -> None:
    server.delay = 0.02
    replies = await asyncio.gather(
        *(pool.request(server.address, WhoHas(keys=(i,))) for i in range(10))
    )
    assert replies == [OK(value=(i,)) for i in range(10)]
    assert server.accepted == 10
    assert pool.idle(server.address) == 10


async def test_limit_bounds_open_connections(server: Server) -> None:
    server.delay = 0.01
    pool = ConnectionPool(role="client", limit=2)
    try:
        replies = await asyncio.gather(
            *(pool.request(server.address, WhoHas(keys=(i,))) for i in range(12))
        )
        assert replies == [OK(value=(i,)) for i in range(12)]
        assert server.max_open <= 2
        assert pool.open <= 2
    finally:
        await pool.close()


async def test_limit_evicts_idle_connections_to_other_peers() -> None:
    servers = [Server(), Server()]
    for s in servers:
        s.listener = await listen("inproc://", s.handler, role="worker")
    pool = ConnectionPool(role="client", limit=1)
    try:
        for s in servers * 2:
            assert await pool.request(s.address, Identity()) == OK(value={"type": "test"})
        assert pool.open == 1
        assert [s.accepted for s in servers] == [2, 2]
    finally:
        await pool.close()
        for s in servers:
            assert s.listener is not None
            s.listener.stop()


async def test_dead_peer(server: Server, pool: ConnectionPool) -> None:
    await pool.request(server.address, Identity())
    assert server.listener is not None
    server.listener.stop()  # aborts the pooled connection's other end
    with pytest.raises(CommError):
        await pool.request(server.address, Identity())
    assert pool.idle(server.address) == 0  # the broken connection was discarded
    with pytest.raises(ConnectTimeout):
        await pool.request(server.address, Identity(), timeout=0.1)
    pool.remove(server.address)
    assert pool.open == 0


async def test_remove_closes_idle_connections(server: Server, pool: ConnectionPool) -> None:
    await pool.request(server.address, Identity())
    assert pool.idle(server.address) == 1
    pool.remove(server.address)
    assert pool.idle() == 0
    await pool.request(server.address, Identity())
    assert server.accepted == 2


async def test_closed_pool(server: Server) -> None:
    pool = ConnectionPool(role="client")
    await pool.request(server.address, Identity())
    await pool.close()
    with pytest.raises(CommClosedError, match="pool is closed"):
        await pool.request(server.address, Identity())


async def test_cancelled_request_discards_the_connection(
    server: Server, pool: ConnectionPool
) -> None:
    server.delay = 10
    task = asyncio.ensure_future(pool.request(server.address, Identity()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.open == 0
    server.delay = 0
    assert await pool.request(server.address, Identity()) == OK(value={"type": "test"})


async def test_serve_requests_answers_a_batch_in_order(server: Server) -> None:
    conn = await connect(server.address, role="client")
    await conn.write([WhoHas(keys=(1,)), Heartbeat(), WhoHas(keys=(2,))])
    replies = [(await conn.read())[0] for _ in range(3)]
    assert replies[0] == OK(value=(1,))
    assert isinstance(replies[1], ErrorReply)
    assert replies[2] == OK(value=(2,))
    await conn.close()


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        ConnectionPool(role="client", limit=0)


async def test_unencodable_reply_becomes_an_error_reply() -> None:
    async def bad_dispatch(msg: Message) -> Message:
        return OK(value={1, 2})  # a set: msgpack can't encode it

    srv = Server()
    srv.dispatch = bad_dispatch  # type: ignore[method-assign]
    srv.listener = await listen("inproc://", srv.handler, role="worker")
    pool = ConnectionPool(role="client")
    try:
        with pytest.raises(RemoteError, match="could not encode"):
            await pool.request(srv.address, Identity())
    finally:
        await pool.close()
        srv.listener.stop()


async def test_failed_connect_frees_its_slot() -> None:
    pool = ConnectionPool(role="client", limit=1)
    try:
        with pytest.raises(ConnectTimeout):
            await pool.request("inproc://0/424242", Identity(), timeout=0.05)
        assert pool.open == 0
    finally:
        await pool.close()


async def test_a_stale_idle_connection_is_replaced_once() -> None:
    """The peer restarted on the same address: the pooled connection to its old
    process fails, and the request goes through on a new one."""
    first = Server()
    first.listener = await listen("tcp://127.0.0.1:0", first.handler, role="scheduler")
    address = first.address
    pool = ConnectionPool(role="client", timeout=5)
    try:
        assert (await pool.request(address, WhoHas(keys=("a",)))) == OK(value=("a",))
        assert pool.idle(address) == 1
        first.listener.stop()
        second = Server()
        port = int(address.rsplit(":", 1)[1])
        second.listener = await listen(f"tcp://127.0.0.1:{port}", second.handler, role="scheduler")
        try:
            assert (await pool.request(address, WhoHas(keys=("b",)))) == OK(value=("b",))
            assert second.accepted == 1
        finally:
            second.listener.stop()
    finally:
        await pool.close()
