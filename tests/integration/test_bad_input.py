"""Bad input gets a clear error to whoever caused it; the servers keep serving."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
import sys
import threading

import pytest

from shoal import Client, config
from shoal.client.futures import _wait
from shoal.errors import SerializeError
from shoal.protocol.frames import Limits
from shoal.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


async def _still_serves(address: str) -> None:
    async with Client(address, asynchronous=True, set_as_default=False) as c:
        assert await c.submit(inc, 1, pure=False) == 2


async def test_random_bytes_on_the_scheduler_port() -> None:
    async with cluster(n_workers=1) as (s, _):
        async with Client(s.address, asynchronous=True, set_as_default=False) as c:
            running = c.submit(__import__("time").sleep, 0.3, pure=False)
            for garbage in (b"\x00" * 7, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 50):
                sock = socket.create_connection(_host_port(s.address))
                sock.sendall(garbage)
                sock.close()
            await running
            await _still_serves(s.address)


async def test_connection_dropped_mid_message() -> None:
    async with cluster(n_workers=1) as (s, ws):
        for target in (s.address, ws[0].address):
            sock = socket.create_connection(_host_port(target))
            # a frame prefix announcing one 1,000-byte frame, then only 10 bytes
            sock.sendall(struct.pack("<QQ", 1, 1000) + b"x" * 10)
            sock.close()
        await asyncio.sleep(0.05)
        await _still_serves(s.address)


async def test_oversized_message_is_refused_with_a_clear_error() -> None:
    limits = Limits(max_message_bytes=2**20)
    async with cluster(n_workers=1, scheduler_kwargs={"limits": limits}) as (s, _):
        async with Client(s.address, asynchronous=True, set_as_default=False) as big:
            fut = big.submit(len, b"x" * (4 * 2**20))
            with pytest.raises(Exception, match=r"4,19\d,\d+ bytes.*limit.*client\.scatter"):
                await asyncio.wait_for(fut, 10)
        await _still_serves(s.address)


async def test_oversized_frame_header_refused_before_allocation() -> None:
    async with cluster(n_workers=1) as (s, _):

        def send_huge_prefix() -> bytes:
            sock = socket.create_connection(_host_port(s.address))
            sock.sendall(struct.pack("<QQ", 1, 2**62))
            sock.settimeout(5)
            received = b""
            # the server closes the connection rather than allocating 4 EiB (this is
            # the handshake, so there is no session to send an error on; after the
            # handshake an oversized message gets an error reply: see the test above)
            with contextlib.suppress(ConnectionError):
                while chunk := sock.recv(65536):
                    received += chunk
            sock.close()
            return received

        hello = await asyncio.get_running_loop().run_in_executor(None, send_huge_prefix)
        assert b"hello" in hello
        await _still_serves(s.address)


async def test_unpicklable_result_gives_a_clear_error(c_s_ws) -> None:
    c, _, ws = c_s_ws
    fut = c.submit(threading.Lock, pure=False, workers=[ws[0].address])
    await _wait([fut], 10, "ALL_COMPLETED")
    assert fut.status == "finished"  # the task itself succeeded
    with pytest.raises(Exception, match="could not serialize"):
        await fut
    # a dependent on another worker can't fetch it: it errs, it doesn't hang
    dep = c.submit(lambda lock: 1, fut, workers=[ws[1].address], pure=False)
    with pytest.raises(Exception, match="serialize"):
        await asyncio.wait_for(dep, 20)
    assert await c.submit(inc, 1) == 2


async def test_function_that_cannot_be_unpickled_on_the_worker(c_s_ws, tmp_path) -> None:
    c, _, _ = c_s_ws
    (tmp_path / "client_only_mod.py").write_text("def f(x):\n    return x + 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import client_only_mod

        fut = c.submit(client_only_mod.f, 1)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("client_only_mod", None)
    with pytest.raises(SerializeError, match="client_only_mod"):
        await asyncio.wait_for(fut, 10)
    assert await c.submit(inc, 1) == 2


async def test_vanished_client_has_its_keys_released_after_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOAL_SCHEDULER__CLIENT_TIMEOUT", "1.0")
    monkeypatch.setenv("SHOAL_CLIENT__RECONNECT_TIMEOUT", "0")  # it won't come back
    config.refresh()
    try:
        async with cluster(n_workers=1) as (s, ws):
            gone = await Client(s.address, asynchronous=True, set_as_default=False)
            fut = gone.submit(inc, 1)
            await fut
            key = fut.key
            assert key in ws[0].data
            gone._conn.abort()  # the client disappears without saying goodbye
            await asyncio.sleep(0.3)
            assert key in ws[0].data  # kept for a while, in case it comes back
            for _ in range(500):
                if key not in ws[0].data:
                    break
                await asyncio.sleep(0.01)
            assert key not in ws[0].data
            await gone.close()
            del fut
            gc.collect()
            await _still_serves(s.address)
    finally:
        monkeypatch.undo()
        config.refresh()
