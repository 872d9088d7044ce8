"""A running scheduler takes 1,000 malformed or oversized inputs, then computes normally."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from typing import Any

import msgpack

from shoal import Client
from shoal.comm.connection import connect
from shoal.protocol.frames import encode_frames
from shoal.protocol.handshake import encode_hello, make_hello
from shoal.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def _hello_bytes() -> bytes:
    return b"".join(bytes(b) for b in encode_frames([encode_hello(make_hello("client", {}))]))


def _raw_input(rng: random.Random) -> bytes:
    """Bytes a broken or hostile peer might send on a fresh connection."""
    kind = rng.randrange(6)
    if kind == 0:  # noise
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 1:  # a header claiming absurd sizes, right away
        return struct.pack("<Q", rng.choice([0, 1, 2**20, 2**40, 2**64 - 1])) + rng.randbytes(16)
    if kind == 2:  # a valid hello, then a header claiming a huge frame
        return _hello_bytes() + struct.pack("<QQ", 1, rng.choice([2**31, 2**40, 2**63]))
    if kind == 3:  # a valid hello, then frame count over the limit
        return _hello_bytes() + struct.pack("<Q", 10**9)
    if kind == 4:  # a valid hello, then a truncated message
        return _hello_bytes() + struct.pack("<QQ", 1, 100) + b"x" * rng.randrange(100)
    return b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # the wrong protocol


def _message(rng: random.Random) -> Any:
    """Plausible-looking but malformed messages for after the handshake."""
    ops = [
        "update-graph",
        "register-client",
        "register-worker",
        "gather-keys",
        "who-has",
        "scattered-data",
        "retire-workers",
        "replicate",
        "no-such-op",
        "task-finished",
    ]
    junk: list[Any] = [None, 1, -1, 2**63, "x", b"\x00", [], {}, [1, [2, [3]]], {"a": {"b": 1}}]
    obj: dict[Any, Any] = {"op": rng.choice(ops)}
    for _ in range(rng.randrange(4)):
        obj[rng.choice(["keys", "tasks", "client", "address", "n", "workers", 7])] = rng.choice(
            junk
        )
    if rng.random() < 0.2:
        return rng.choice(junk)  # not even a map
    return obj


def _send_raw(address: str, payloads: list[bytes]) -> None:
    host, port = _host_port(address)
    for data in payloads:
        with socket.create_connection((host, port), timeout=5) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(2)
                while s.recv(65536):
                    pass
            except OSError:
                pass  # the scheduler hung up on us: fine


async def test_a_thousand_bad_inputs_then_a_normal_computation() -> None:
    rng = random.Random(20261125)
    async with cluster(n_workers=2, nthreads=1, validate=False) as (s, _):
        raw = [_raw_input(rng) for _ in range(600)]
        await asyncio.get_running_loop().run_in_executor(None, _send_raw, s.address, raw)
        for _ in range(400):  # handshake done, then a malformed message
            conn = await connect(s.address, role="client", timeout=5)
            try:
                await conn.comm.write([msgpack.packb(_message(rng), use_bin_type=True)])
                await asyncio.wait_for(conn.comm.read(), 2)
            except Exception:
                pass  # refused with an error reply, or disconnected
            finally:
                conn.comm.abort()
        assert s.status == "running"
        async with Client(s.address, asynchronous=True, set_as_default=False) as c:
            assert await c.gather(c.map(inc, range(50))) == list(range(1, 51))
