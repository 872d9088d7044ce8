"""Listen vs contact addresses: the rules, the interface lookup, and servers that use them."""

from __future__ import annotations

import operator
import socket
from typing import Any

import psutil
import pytest

from shoal import Client
from shoal.comm.addressing import (
    BindAddress,
    check_contact_address,
    interface_ip,
    non_loopback_ip,
    resolve_bind,
    split_listen_address,
)
from shoal.comm.registry import parse_address, parse_host_port
from shoal.comm.tcp import reachable_ip
from shoal.scheduler.server import Scheduler
from shoal.security import Security
from shoal.testing.forward import forward
from shoal.worker.execute import get_worker
from shoal.worker.nanny import Nanny, worker_command
from shoal.worker.server import Worker


def test_interface_ip_is_the_interfaces_ipv4_address() -> None:
    assert interface_ip("lo") == "127.0.0.1"


def test_an_unknown_interface_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no network interface 'nope0'.*\blo\b"):
        interface_ip("nope0")


def test_an_interface_without_an_ipv4_address_is_refused() -> None:
    bare = [
        name
        for name, addrs in psutil.net_if_addrs().items()
        if not any(a.family == socket.AF_INET for a in addrs)
    ]
    if not bare:
        pytest.skip("every interface of this host has an IPv4 address")
    with pytest.raises(ValueError, match="has no IPv4 address; give --host"):
        interface_ip(bare[0])


def test_non_loopback_ip_skips_loopback() -> None:
    ip = non_loopback_ip()
    assert ip is None or not ip.startswith("127.")
    assert reachable_ip()  # always an answer, loopback at worst


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, BindAddress("tcp", "127.0.0.1", 0)),
        ({"host": "10.0.0.5", "port": 9000}, BindAddress("tcp", "10.0.0.5", 9000)),
        ({"interface": "lo", "port": 1}, BindAddress("tcp", "127.0.0.1", 1)),
        ({"listen_address": "tcp://0.0.0.0:9000"}, BindAddress("tcp", "0.0.0.0", 9000)),
        ({"listen_address": "tcp://:9000"}, BindAddress("tcp", "", 9000)),
        ({"listen_address": "10.0.0.5:9000"}, BindAddress("tcp", "10.0.0.5", 9000)),
        ({"listen_address": "tls://[::1]:9000"}, BindAddress("tls", "::1", 9000)),
        ({"protocol": "tls://", "host": "h"}, BindAddress("tls", "h", 0)),
    ],
)
def test_resolve_bind(kwargs: dict[str, object], expected: BindAddress) -> None:
    host = kwargs.pop("host", None)
    port = kwargs.pop("port", None)
    assert resolve_bind(host, port, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "h", "interface": "lo"}, "either a host .* or an interface"),
        ({"listen_address": "tcp://0.0.0.0:1", "host": "h"}, "don't give host too"),
        ({"listen_address": "tcp://0.0.0.0:1", "interface": "lo"}, "don't give interface"),
        ({"listen_address": "tcp://0.0.0.0:1", "port": 5}, "don't give port too"),
        ({"listen_address": "tcp://0.0.0.0"}, "no port in address"),
        ({"listen_address": "tls://0.0.0.0:1", "protocol": "tcp"}, "is tls:// but the protocol"),
        ({"listen_address": "inproc://x"}, "inproc:// server has no network address"),
        ({"interface": "nope0"}, "no network interface 'nope0'"),
    ],
)
def test_resolve_bind_refuses_conflicting_options(kwargs: dict[str, object], message: str) -> None:
    host = kwargs.pop("host", None)
    port = kwargs.pop("port", None)
    with pytest.raises(ValueError, match=message):
        resolve_bind(host, port, **kwargs)  # type: ignore[arg-type]


def test_split_listen_address_takes_the_protocols_scheme_by_default() -> None:
    assert split_listen_address(":7", "tls") == BindAddress("tls", "", 7)


def test_check_contact_address() -> None:
    assert check_contact_address("203.0.113.7:9000", "tcp") == "tcp://203.0.113.7:9000"
    assert check_contact_address("tls://h.example:1", "tls") == "tls://h.example:1"
    assert check_contact_address("tcp://[2001:db8::1]:5", "tcp") == "tcp://[2001:db8::1]:5"


@pytest.mark.parametrize(
    ("address", "protocol", "message"),
    [
        ("tcp://h:0", "tcp", "not a wildcard or port 0"),
        ("tcp://0.0.0.0:9000", "tcp", "not a wildcard or port 0"),
        ("tcp://:9000", "tcp", "not a wildcard or port 0"),
        ("tcp://h", "tcp", "no port in address"),
        ("tls://h:1", "tcp", "is tls:// but this server listens on tcp://"),
        ("tcp://h:1", "inproc", "inproc:// server can't advertise"),
    ],
)
def test_check_contact_address_refuses_what_others_cannot_connect_to(
    address: str, protocol: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_contact_address(address, protocol)


def test_constructors_refuse_bad_addresses_at_once() -> None:
    with pytest.raises(ValueError, match="not a wildcard or port 0"):
        Scheduler(contact_address="tcp://h:0")
    with pytest.raises(ValueError, match="either a host"):
        Worker("tcp://127.0.0.1:1", host="127.0.0.1", interface="lo")
    with pytest.raises(ValueError, match="is tls:// but this server listens on tcp://"):
        Nanny("tcp://127.0.0.1:1", contact_address="tls://h:1")


def test_the_nanny_passes_the_contact_address_to_its_worker() -> None:
    args = worker_command(
        "tcp://s:1",
        name="w",
        nthreads=1,
        memory_limit=0,
        host="0.0.0.0",
        contact_address="tcp://203.0.113.7:9000",
    )
    i = args.index("--contact-address")
    assert args[i + 1] == "tcp://203.0.113.7:9000"
    assert args[args.index("--host") + 1] == "0.0.0.0"


def add(x: Any, y: Any) -> Any:
    return x + y


@pytest.mark.usefixtures("tcp_only")
async def test_a_worker_reached_only_through_its_contact_address_serves_peers_and_clients() -> None:
    """Workers bound to one port and advertising a forwarder's: all traffic to them
    (the client's gathers, the other worker's fetches) goes through the forwarders.
    (Same-host sockets off: they would let this process skip the forwarders.)"""
    async with Scheduler(interface="lo", port=0) as s:
        assert s.address.startswith("tcp://127.0.0.1:")
        async with (
            forward("127.0.0.1", 0, "127.0.0.1", 0) as fa,
            forward("127.0.0.1", 0, "127.0.0.1", 0) as fb,
        ):
            a = await Worker(s.address, nthreads=1, contact_address=fa.address)
            b = await Worker(s.address, nthreads=1, contact_address=fb.address)
            # Nothing connects to a worker before a client asks: aim the forwarders now.
            fa.target = get_address_host_port(a.listen_address)
            fb.target = get_address_host_port(b.listen_address)
            try:
                assert a.address == fa.address
                assert a.listen_address != a.address
                async with Client(s.address, asynchronous=True) as c:
                    info = await c.scheduler_info()
                    assert set(info["workers"]) == {fa.address, fb.address}
                    # values over worker.inline-result-bytes: gathers go to the workers
                    x = c.submit(operator.mul, b"x", 3000, workers=[a.address])
                    y = c.submit(operator.mul, b"y", 3000, workers=[b.address])
                    z = c.submit(add, x, y, workers=[a.address])  # fetches y from b
                    assert await z == b"x" * 3000 + b"y" * 3000
                    assert await c.gather([x, y]) == [b"x" * 3000, b"y" * 3000]
                assert fa.connections >= 1  # the client's gather
                assert fb.connections >= 2  # a's fetch and the client's gather
            finally:
                await a.close()
                await b.close()


async def test_a_nanny_worker_advertises_its_contact_address() -> None:
    async with Scheduler(host="127.0.0.1", port=0) as s:
        async with forward("127.0.0.1", 0, "127.0.0.1", 0) as fwd:
            async with Nanny(
                s.address,
                nthreads=1,
                memory_limit=0,
                host="127.0.0.1",
                contact_address=fwd.address,
                nanny_contact_address="tcp://nanny.example:4000",
            ) as n:
                assert await n.wait_for_worker(timeout=30) == fwd.address
                assert n.address == "tcp://nanny.example:4000"
                assert n.worker_pid is not None
                (port,) = [  # where the worker process listens
                    conn.laddr.port
                    for conn in psutil.Process(n.worker_pid).net_connections("tcp")
                    if conn.status == psutil.CONN_LISTEN
                ]
                fwd.target = ("127.0.0.1", port)
                async with Client(s.address, asynchronous=True) as c:
                    info = await c.scheduler_info()
                    assert await c.submit(add, 1, 2) == 3
                    assert (await c.run(addresses)) == {
                        fwd.address: {"listen": f"tcp://127.0.0.1:{port}", "contact": fwd.address}
                    }
                    assert info["workers"][fwd.address]["nanny"] == "tcp://nanny.example:4000"
                assert fwd.connections >= 1


def addresses() -> dict[str, str]:
    w = get_worker()
    return {"listen": w.listen_address, "contact": w.address}


def get_address_host_port(address: str) -> tuple[str, int]:
    return parse_host_port(parse_address(address)[1])


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this host")
async def test_servers_listen_and_advertise_ipv6_addresses() -> None:
    async with Scheduler(host="::1", port=0) as s:
        assert s.address.startswith("tcp://[::1]:")
        async with forward("::1", 0, "::1", 0) as fwd:
            async with Worker(s.address, nthreads=1, host="::1", contact_address=fwd.address) as w:
                fwd.target = get_address_host_port(w.listen_address)
                assert w.listen_address.startswith("tcp://[::1]:")
                assert w.address == fwd.address
                async with Client(s.address, asynchronous=True) as c:
                    # over worker.inline-result-bytes: the client reads it from the worker
                    assert await c.submit(operator.mul, b"z", 3000) == b"z" * 3000
            assert fwd.connections >= 1


async def test_a_scheduler_advertises_its_contact_address() -> None:
    async with Scheduler(host="127.0.0.1", port=0, contact_address="sched.example:8786") as s:
        assert s.address == "tcp://sched.example:8786"
        assert s.listen_address.startswith("tcp://127.0.0.1:")
        # a worker given the real address still joins; everyone is told the contact one
        async with Worker(s.listen_address, nthreads=1) as w:
            async with Client(s.listen_address, asynchronous=True) as c:
                info = await c.scheduler_info()
                assert info["address"] == "tcp://sched.example:8786"
                assert set(info["workers"]) == {w.address}


async def test_a_tls_worker_behind_a_forwarder_is_reached_at_its_contact_address() -> None:
    """TLS runs end to end through the forwarder (which sees only ciphertext)."""
    sec = Security.temporary()
    async with Scheduler(host="127.0.0.1", port=0, protocol="tls", security=sec) as s:
        assert s.address.startswith("tls://127.0.0.1:")
        async with forward("127.0.0.1", 0, "127.0.0.1", 0) as fwd:
            contact = fwd.address.replace("tcp://", "tls://")
            async with Worker(s.address, nthreads=1, contact_address=contact, security=sec) as w:
                fwd.target = get_address_host_port(w.listen_address)
                assert w.address == contact
                async with Client(s.address, asynchronous=True, security=sec) as c:
                    # over worker.inline-result-bytes: the client reads it from the worker
                    assert await c.submit(operator.mul, b"z", 3000) == b"z" * 3000
            assert fwd.connections >= 1
