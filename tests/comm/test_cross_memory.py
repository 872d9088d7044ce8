"""Copying lent buffers out of another process's memory (shoal/comm/cross_memory.py)."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from shoal.comm import cross_memory
from shoal.comm.cross_memory import Lender
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import loads
from shoal.worker.transfer import Lend, serve_data

pytestmark = pytest.mark.skipif(
    not cross_memory.available(), reason="no process_vm_readv on this system"
)

MiB = 2**20


def lent_reply(values: dict[str, object], lender: Lender, now: float = 0.0) -> tuple:
    reply = serve_data(values, list(values), "tcp://here:1", lend=Lend(lender, 1, now))
    assert not reply.data, "everything with buffers is lent at a threshold of 1 byte"
    return reply.lease, reply.lent


def test_a_lease_holds_until_released_or_expired() -> None:
    lender = Lender(lease_seconds=10.0)
    spans, (pid, address, token) = lender.lend([b"x" * 100, bytearray(50)], now=0.0)
    assert pid == os.getpid() and address and len(token) == 16
    assert spans[1::2] == (100, 50) and lender.lent_bytes == 150 and len(lender) == 1
    assert lender.release(token, now=5.0) is True
    assert len(lender) == 0
    assert lender.release(token, now=5.0) is False, "released twice"

    _, (_, _, late) = lender.lend([b"y"], now=0.0)
    assert lender.release(late, now=10.5) is False, "past its time: the copy can't be trusted"
    _, (_, _, forgotten) = lender.lend([b"z"], now=0.0)
    lender.expire(now=11.0)
    assert len(lender) == 0 and lender.release(forgotten, now=11.0) is False
    assert lender.release(b"never lent 12345", now=0.0) is False


async def test_read_copies_the_lent_buffers() -> None:
    arr = np.arange(3 * MiB // 8, dtype=np.float64)
    frame = np.arange(1000).tobytes()
    lender = Lender()  # it keeps the lent buffers alive: the PickleBuffer has no other owner
    lease, lent = lent_reply({"a": arr, "b": pickle.PickleBuffer(bytearray(frame))}, lender)
    copied = await cross_memory.read(lease, lent)
    got = loads(copied["a"])
    np.testing.assert_array_equal(got, arr)
    assert loads(copied["b"]) == frame
    # a copy: the lender's array and the borrower's are separate memory, and writable
    got[0] = -1.0
    assert arr[0] == 0.0


async def test_lent_buffers_outlive_the_value_until_released() -> None:
    lender = Lender()
    data = {"a": np.full(2 * MiB // 8, 7.0)}
    lease, lent = lent_reply(data, lender)
    del data["a"]  # the worker freed the key meanwhile
    gc.collect()
    assert loads((await cross_memory.read(lease, lent))["a"]).sum() == 7.0 * 2 * MiB // 8
    assert lender.release(lease[2], now=0.0) is True


async def test_large_copies_are_split_over_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = cross_memory._copy

    def counting(pid: int, pieces: list) -> None:
        calls.append(sum(n for _, _, n in pieces))
        real(pid, pieces)

    monkeypatch.setattr(cross_memory, "_copy", counting)
    monkeypatch.setattr(cross_memory.os, "cpu_count", lambda: 2)
    arr = np.random.default_rng(0).random(12 * MiB // 8)
    lender = Lender()
    lease, lent = lent_reply({"a": arr, "b": arr[: MiB // 8].copy()}, lender)
    copied = await cross_memory.read(lease, lent)
    np.testing.assert_array_equal(loads(copied["a"]), arr)
    np.testing.assert_array_equal(loads(copied["b"]), arr[: MiB // 8])
    # the token check, then two threads of about half of the 13 MiB each
    assert calls[0] == 16 and len(calls) == 3 and sum(calls[1:]) == 13 * MiB
    assert abs(calls[1] - calls[2]) <= 1


def test_split_cuts_pieces_into_runs_of_equal_size() -> None:
    runs = cross_memory._split([(0, 1000, 10), (100, 2000, 5)], 3)
    assert [sum(n for *_, n in r) for r in runs] == [5, 5, 5]
    assert runs[1] == [(5, 1005, 5)] and runs[2] == [(100, 2000, 5)]


async def test_a_pid_that_did_not_lend_is_refused() -> None:
    lender = Lender()
    lease, lent = lent_reply({"a": np.ones(MiB // 8)}, lender)
    pid, address, token = lease
    with pytest.raises(OSError, match="not the process that lent"):
        await cross_memory.read((pid, address, b"another token 16"), lent)
    # another process of this user, pointed at by a peer: its memory has no such token
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: ASYNC220
    try:
        with pytest.raises(OSError):
            await cross_memory.read((other.pid, address, token), lent)
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize(
    ("lease", "lent"),
    [
        ((0, 1, b"t" * 16), {}),
        (("pid", 1, b"t" * 16), {}),
        ((os.getpid(), 1, b"short"), {}),
        ((os.getpid(), 1), {}),
        (None, {}),
        ("ok", {"a": (Opaque([b"h"]), (1, 2))}),
        ("ok", {"a": (Opaque([b"h"]), (1,))}),
        ("ok", {"a": (Opaque([b"h"]), (-5, 2))}),
        ("ok", {"a": (Opaque([b"h", b"extra"]), (1, 2))}),
        ("ok", {"a": "not a tuple"}),
    ],
)
async def test_malformed_leases_and_spans_are_refused(lease: object, lent: dict) -> None:
    lender = Lender()
    if lease == "ok":  # a real lease; (1, 2): a well-formed span where nothing is mapped
        _, lease = lender.lend([b"x"], now=0.0)
    with pytest.raises(OSError):
        await cross_memory.read(lease, lent)


def test_values_without_large_buffers_travel_as_bytes() -> None:
    lender = Lender()
    values = {"small": np.ones(10), "plain": {"a": 1}, "big": np.ones(MiB // 8)}
    reply = serve_data(values, list(values), "tcp://here:1", lend=Lend(lender, MiB, 0.0))
    assert set(reply.data) == {"small", "plain"} and set(reply.lent) == {"big"}
    assert lender.lent_bytes == MiB
    assert loads(reply.data["plain"]) == {"a": 1}


async def test_more_than_a_message_may_carry_is_refused_before_allocating() -> None:
    lender = Lender()
    lease, lent = lent_reply({"a": np.ones(MiB // 8)}, lender)
    with pytest.raises(OSError, match="over the limit"):
        await cross_memory.read(lease, lent, max_bytes=MiB - 1)
    header, (address, _) = lent["a"]
    huge = {"a": (header, (address, 1 << 50))}  # a petabyte, says the peer
    with pytest.raises(OSError, match="over the limit"):
        await cross_memory.read(lease, huge)
    assert loads((await cross_memory.read(lease, lent, max_bytes=MiB))["a"]).sum() == MiB // 8
