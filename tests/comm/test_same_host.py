"""Same-host Unix sockets standing in for loopback TCP (shoal/comm/same_host.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import numpy as np
import pytest

from shoal import Client, LocalCluster
from shoal.comm import same_host
from shoal.comm.connection import Connection, connect, listen
from shoal.errors import AuthenticationFailed
from shoal.protocol.messages import Identity

pytestmark = pytest.mark.skipif(
    same_host.host_identity() is None, reason="no abstract Unix sockets on this system"
)


@pytest.fixture(autouse=True)
def fresh_tables() -> Iterator[None]:
    """Start and end with nothing remembered (ports are reused between tests)."""
    same_host._aliases.clear()
    same_host._refused.clear()
    yield
    same_host._aliases.clear()
    same_host._refused.clear()


async def echo(conn: Connection) -> None:
    while True:
        await conn.write(await conn.read())


async def test_a_peer_on_this_host_moves_to_the_unix_socket() -> None:
    seen: list[Connection] = []

    async def handler(conn: Connection) -> None:
        seen.append(conn)
        await echo(conn)

    listener = await listen("tcp://127.0.0.1:0", handler, role="scheduler")
    try:
        address = listener.contact_address
        for _ in range(2):  # the first learns the socket over TCP, the second goes straight
            conn = await connect(address, role="client")
            assert conn.comm.same_host
            assert conn.peer_address == address
            assert conn.local_address == f"local://pid-{os.getpid()}"
            await conn.write(Identity())
            assert await conn.read() == [Identity()]
            await conn.close()
        # the handler never saw the TCP connection that offered the move
        assert [c.peer_address for c in seen] == [f"local://pid-{os.getpid()}"] * 2
    finally:
        listener.stop()


@pytest.mark.usefixtures("tcp_only")
async def test_turned_off_by_config() -> None:
    listener = await listen("tcp://127.0.0.1:0", echo, role="scheduler")
    try:
        conn = await connect(listener.contact_address, role="client")
        assert not conn.comm.same_host
        assert same_host.HELLO_FIELD not in conn.peer_info
        await conn.write(Identity())
        assert await conn.read() == [Identity()]
        await conn.close()
    finally:
        listener.stop()


async def test_a_listener_restarted_on_the_same_port_is_reached_again() -> None:
    """The remembered socket name is stale: dropped at once, and the TCP handshake tells
    the new one."""
    listener = await listen("tcp://127.0.0.1:0", echo, role="scheduler")
    address = listener.contact_address
    conn = await connect(address, role="client")
    assert conn.comm.same_host
    await conn.close()
    listener.stop()
    listener = await listen(address, echo, role="scheduler")
    try:
        conn = await asyncio.wait_for(connect(address, role="client", timeout=5), 5)
        assert conn.comm.same_host
        await conn.write(Identity())
        assert await conn.read() == [Identity()]
        await conn.close()
    finally:
        listener.stop()


async def test_the_unix_socket_still_authenticates() -> None:
    listener = await listen("tcp://127.0.0.1:0", echo, role="scheduler", secret=b"s" * 32)
    try:
        address = listener.contact_address
        conn = await connect(address, role="client", secret=b"s" * 32)
        assert conn.comm.same_host
        await conn.close()
        assert same_host.lookup(address.removeprefix("tcp://")) is not None
        # straight to the known Unix socket, with a wrong secret and with none
        with pytest.raises(AuthenticationFailed):
            await connect(address, role="client", secret=b"x" * 32)
        with pytest.raises(AuthenticationFailed):
            await connect(address, role="client")
        # a failed handshake there drops the name (it might belong to someone else now);
        # a good client learns it again over TCP
        conn = await connect(address, role="client", secret=b"s" * 32)
        assert conn.comm.same_host
        await conn.close()
    finally:
        listener.stop()


def test_a_hello_from_another_host_or_namespace_is_not_followed() -> None:
    name = b"\0shoal-" + b"0" * 24
    other = {same_host.HELLO_FIELD: {"host": "another-boot/1:2", "socket": name}}
    assert same_host.learn("10.0.0.9:4000", other) is None
    assert not same_host.switching(other)
    ours = same_host.advertisement(name)
    assert same_host.switching(ours)
    assert same_host.learn("10.0.0.9:4000", ours) == name
    same_host.forget("10.0.0.9:4000", refuse=False)  # a stale name: just dropped
    assert same_host.lookup("10.0.0.9:4000") is None
    assert same_host.may_switch("10.0.0.9:4000")
    same_host.learn("10.0.0.9:4000", ours)
    same_host.forget("10.0.0.9:4000", refuse=True)  # a name just learned did not work
    assert not same_host.may_switch("10.0.0.9:4000")  # for a while
    malformed = {same_host.HELLO_FIELD: {"host": same_host.host_identity(), "socket": "name"}}
    assert same_host.learn("10.0.0.9:4000", malformed) is None
    assert same_host.learn("10.0.0.9:4000", {same_host.HELLO_FIELD: [1, 2]}) is None


def known_peers() -> list[str]:
    return sorted(same_host._aliases)


def checksum(a: np.ndarray) -> float:
    return float(a.sum())


def test_workers_in_processes_fetch_from_each_other_over_unix_sockets() -> None:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as c,
    ):
        a, b = sorted(c.nthreads())
        x = c.submit(np.ones, 4_000_000, workers=[a])
        assert c.submit(checksum, x, workers=[b]).result() == 4_000_000.0
        assert c.gather(x).sum() == 4_000_000.0
        peers = c.run(known_peers)
        strip = lc.scheduler_address.removeprefix("tcp://")
        assert strip in peers[a] and strip in peers[b]  # both reached the scheduler so
        assert a.removeprefix("tcp://") in peers[b]  # b fetched from a so
        assert a.removeprefix("tcp://") in known_peers()  # and this client gathered from a


async def test_a_stale_name_held_by_another_listener_falls_back_to_tcp() -> None:
    """The listener restarted and someone else now holds its old socket name: that
    one fails the handshake, and the real listener is found again through TCP."""
    secret = b"s" * 32
    first = await listen("tcp://127.0.0.1:0", echo, role="scheduler", secret=secret)
    address = first.contact_address
    rest = address.removeprefix("tcp://")
    conn = await connect(address, role="client", secret=secret)
    await conn.close()
    first.stop()
    impostor = await listen("tcp://127.0.0.1:0", echo, role="scheduler", secret=b"x" * 32)
    real = await listen(address, echo, role="scheduler", secret=secret)
    try:
        name = impostor.same_host_alias
        same_host._aliases[rest] = name  # as if the old name were now the impostor's
        conn = await asyncio.wait_for(connect(address, role="client", secret=secret), 10)
        assert conn.comm.same_host
        assert same_host.lookup(rest) == real.same_host_alias
        await conn.write(Identity())
        assert await conn.read() == [Identity()]
        await conn.close()
    finally:
        impostor.stop()
        real.stop()
