"""Copying lent buffers out of another process's memory (shoal/comm/cross_memory.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from shoal.comm import cross_memory
from shoal.comm.cross_memory import Lender, new_nonce
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import loads
from shoal.worker.transfer import Lend, serve_data

pytestmark = pytest.mark.skipif(
    not cross_memory.available(), reason="no process_vm_readv on this system"
)

MiB = 2**20


def lent_reply(values: dict[str, Any], lender: Lender, nonce: bytes) -> tuple[Any, Any]:
    reply = serve_data(values, list(values), "tcp://here:1", lend=Lend(lender, 1, nonce, 0.0))
    assert not reply.data, "everything with buffers is lent at a threshold of 1 byte"
    return reply.lease, reply.lent


def test_a_lease_holds_until_released_or_expired() -> None:
    lender = Lender(lease_seconds=10.0)
    nonce = new_nonce()
    loan = lender.lend([b"x" * 100, bytearray(50)], nonce, now=0.0)
    assert loan is not None
    spans, (pid, address, seconds) = loan
    assert pid == os.getpid() and address and seconds == 10.0
    assert cross_memory.lease_seconds(loan[1]) == 10.0
    assert spans[1::2] == (100, 50) and lender.lent_bytes_total == 150 and len(lender) == 1
    assert lender.lend([b"again"], nonce, now=0.0) is None, "one lease per nonce"
    assert lender.lend([b"x"], b"short", now=0.0) is None
    assert lender.release(nonce, now=5.0) is True
    assert len(lender) == 0
    assert lender.release(nonce, now=5.0) is False, "released twice"

    late = new_nonce()
    lender.lend([b"y"], late, now=0.0)
    assert lender.release(late, now=10.5) is False, "past its time: the copy can't be trusted"
    forgotten = new_nonce()
    lender.lend([b"z"], forgotten, now=0.0)
    lender.expire(now=11.0)
    assert len(lender) == 0 and lender.release(forgotten, now=11.0) is False
    assert lender.release(new_nonce(), now=0.0) is False


def test_a_lent_bytearray_cannot_be_resized() -> None:
    lender = Lender()
    buf = bytearray(100)
    lender.lend([buf], new_nonce(), now=0.0)
    with pytest.raises(BufferError):
        buf.extend(b"more")  # it would move: the asker would copy freed memory


async def test_read_copies_the_lent_buffers() -> None:
    arr = np.arange(3 * MiB // 8, dtype=np.float64)
    frame = np.arange(1000).tobytes()
    lender = Lender()  # it keeps the lent buffers alive: the PickleBuffer has no other owner
    nonce = new_nonce()
    lease, lent = lent_reply({"a": arr, "b": pickle.PickleBuffer(bytearray(frame))}, lender, nonce)
    copied = await cross_memory.read(lease, lent, nonce)
    got = loads(copied["a"])
    np.testing.assert_array_equal(got, arr)
    assert loads(copied["b"]) == frame
    # a copy: the lender's array and the borrower's are separate memory, and writable
    got[0] = -1.0
    assert arr[0] == 0.0


async def test_lent_buffers_outlive_the_value_until_released() -> None:
    lender = Lender()
    data = {"a": np.full(2 * MiB // 8, 7.0)}
    nonce = new_nonce()
    lease, lent = lent_reply(data, lender, nonce)
    del data["a"]  # the worker freed the key meanwhile
    gc.collect()
    got = loads((await cross_memory.read(lease, lent, nonce))["a"])
    assert got.sum() == 7.0 * 2 * MiB // 8
    assert lender.release(nonce, now=0.0) is True


async def test_large_copies_are_split_over_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = cross_memory._copy

    def counting(pid: int, pieces: list[tuple[int, int, int]]) -> None:
        calls.append(sum(n for _, _, n in pieces))
        real(pid, pieces)

    monkeypatch.setattr(cross_memory, "_copy", counting)
    monkeypatch.setattr(cross_memory.os, "cpu_count", lambda: 2)
    arr = np.random.default_rng(0).random(12 * MiB // 8)
    lender = Lender()
    nonce = new_nonce()
    lease, lent = lent_reply({"a": arr, "b": arr[: MiB // 8].copy()}, lender, nonce)
    copied = await cross_memory.read(lease, lent, nonce)
    np.testing.assert_array_equal(loads(copied["a"]), arr)
    np.testing.assert_array_equal(loads(copied["b"]), arr[: MiB // 8])
    # two threads, each checking the nonce, then copying about half of the 13 MiB
    assert sorted(calls)[:2] == [16, 16] and len(calls) == 4
    halves = sorted(calls)[2:]
    assert sum(halves) == 13 * MiB and abs(halves[0] - halves[1]) <= 1


def test_split_cuts_pieces_into_runs_of_equal_size() -> None:
    runs = cross_memory._split([(0, 1000, 10), (100, 2000, 5)], 3)
    assert [sum(n for *_, n in r) for r in runs] == [5, 5, 5]
    assert runs[1] == [(5, 1005, 5)] and runs[2] == [(100, 2000, 5)]


async def test_a_lease_that_does_not_hold_the_askers_nonce_is_refused() -> None:
    lender = Lender()
    nonce = new_nonce()
    lease, lent = lent_reply({"a": np.ones(MiB // 8)}, lender, nonce)
    pid, address, seconds = lease
    with pytest.raises(OSError, match="not the process that lent"):
        await cross_memory.read(lease, lent, new_nonce())  # not what this asker sent
    # a peer that names bytes it knows to be somewhere (here: a token of its choosing,
    # in this very process) still can't produce a nonce it never received
    known = b"sixteen bytes!!!"
    forged = (os.getpid(), cross_memory._address(known), seconds)
    with pytest.raises(OSError, match="not the process that lent"):
        await cross_memory.read(forged, lent, nonce)
    # another process of this user, pointed at by a peer: refused (no such nonce there,
    # or no permission to read it)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: ASYNC220
    try:
        with pytest.raises(OSError):
            await cross_memory.read((other.pid, address, seconds), lent, nonce)
    finally:
        other.kill()
        other.wait()
    assert loads((await cross_memory.read(lease, lent, nonce))["a"]).sum() == MiB // 8


@pytest.mark.parametrize(
    ("lease", "lent"),
    [
        ((0, 1), {}),
        (("pid", 1), {}),
        ((os.getpid(),), {}),
        ((os.getpid(), 1), {}),
        ((os.getpid(), 1, 60.0, 2), {}),
        ((os.getpid(), 1, "a minute"), {}),
        (None, {}),
        ("ok", {"a": (Opaque([b"h"]), (1, 2))}),
        ("ok", {"a": (Opaque([b"h"]), (1,))}),
        ("ok", {"a": (Opaque([b"h"]), (-5, 2))}),
        ("ok", {"a": (Opaque([b"h", b"extra"]), (1, 2))}),
        ("ok", {"a": "not a tuple"}),
    ],
)
async def test_malformed_leases_and_spans_are_refused(lease: Any, lent: dict[str, Any]) -> None:
    lender = Lender()
    nonce = new_nonce()
    if lease == "ok":  # a real lease; (1, 2): a well-formed span where nothing is mapped
        loan = lender.lend([b"x"], nonce, now=0.0)
        assert loan is not None
        lease = loan[1]
    with pytest.raises(OSError):
        await cross_memory.read(lease, lent, nonce)


async def test_more_than_a_message_may_carry_is_refused_before_allocating() -> None:
    lender = Lender()
    nonce = new_nonce()
    lease, lent = lent_reply({"a": np.ones(MiB // 8)}, lender, nonce)
    with pytest.raises(OSError, match="over the limit"):
        await cross_memory.read(lease, lent, nonce, max_bytes=MiB - 1)
    header, (address, _) = lent["a"]
    huge = {"a": (header, (address, 1 << 50))}  # a petabyte, says the peer
    with pytest.raises(OSError, match="over the limit"):
        await cross_memory.read(lease, huge, nonce)
    got = loads((await cross_memory.read(lease, lent, nonce, max_bytes=MiB))["a"])
    assert got.sum() == MiB // 8


def test_values_without_large_buffers_travel_as_bytes() -> None:
    lender = Lender()
    values = {
        "small": np.ones(10),
        "plain": {"a": 1},
        "big": np.ones(MiB // 8),
        "strided": np.ones((512, 512))[:, ::2],  # pickled in-band: nothing to lend
    }
    reply = serve_data(values, list(values), "tcp://here:1", lend=Lend(lender, MiB, new_nonce(), 0))
    assert set(reply.data) == {"small", "plain", "strided"} and set(reply.lent) == {"big"}
    assert lender.lent_bytes_total == MiB
    assert loads(reply.data["plain"]) == {"a": 1}
    np.testing.assert_array_equal(loads(reply.data["strided"]), values["strided"])


def test_a_reused_nonce_gets_bytes() -> None:
    lender = Lender()
    nonce = new_nonce()
    values = {"big": np.ones(MiB // 8)}
    first = serve_data(values, ["big"], "tcp://here:1", lend=Lend(lender, 1, nonce, 0.0))
    second = serve_data(values, ["big"], "tcp://here:1", lend=Lend(lender, 1, nonce, 0.0))
    assert set(first.lent) == {"big"} and set(second.data) == {"big"} and not second.lent


async def test_threads_that_could_not_start_are_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts = 0
    real_start = cross_memory.threading.Thread.start

    def start_once(self: Any) -> None:
        nonlocal starts
        starts += 1
        if starts > 1:
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(cross_memory.threading.Thread, "start", start_once)
    monkeypatch.setattr(cross_memory.os, "cpu_count", lambda: 4)
    lender = Lender()
    nonce = new_nonce()
    lease, lent = lent_reply({"a": np.ones(16 * MiB // 8)}, lender, nonce)
    with pytest.raises(RuntimeError):
        await cross_memory.read(lease, lent, nonce)
    deadline = time.monotonic() + 5
    while cross_memory._copying and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # the one thread that started finishes its copy
    assert cross_memory._copying == 0
