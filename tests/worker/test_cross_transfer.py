"""Large values copied straight out of the holder's memory by same-host askers
(shoal/comm/cross_memory.py): real workers, real transfers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import cloudpickle
import numpy as np
import pytest

from shoal import Client, config, get_worker, wait
from shoal.comm import cross_memory, get_data
from shoal.comm.same_host import process_identity
from shoal.protocol.messages import GetData
from shoal.protocol.serialize import loads
from shoal.testing.cluster import cluster, fresh_process_client

pytestmark = pytest.mark.skipif(
    not cross_memory.available() or process_identity() is None,
    reason="no process_vm_readv on this system",
)

MiB = 2**20

# the worker processes can't import this module: ship its functions
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make(n: int) -> Any:
    return np.arange(n // 8, dtype=np.float64)


def lent_bytes() -> int:
    return get_worker().lender.lent_bytes_total


def leases() -> int:
    return len(get_worker().lender)


async def released(w: Any) -> None:
    """Wait (5 s at most) until ``w`` has no lease left: an asker whose copy was quick
    releases it without waiting for the answer."""
    deadline = time.monotonic() + 5
    while len(w.lender) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert len(w.lender) == 0, "released, not pinned for a minute"


def total(x: Any) -> float:
    return float(x.sum())


def expected(n: int) -> float:
    return float(np.arange(n // 8, dtype=np.float64).sum())


@contextlib.asynccontextmanager
async def holding(nbytes: int, **kwargs: Any) -> AsyncIterator[tuple[Client, Any, Any]]:
    """A one-worker cluster in this process (over tcp:// unless told), a client, and a
    future for an array of ``nbytes`` the worker holds."""
    async with cluster(n_workers=1, **kwargs) as (s, (w,)):
        client = await Client(s.address, asynchronous=True)
        try:
            x = client.submit(make, nbytes, pure=False)
            await wait([x])
            yield client, w, x
        finally:
            get_data._refused.clear()
            await client.close()


class Spy:
    """Records the ``get-data`` requests ``request_data`` sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[GetData] = []
        real = get_data._request

        async def spy(pool: Any, address: str, msg: GetData) -> Any:
            self.sent.append(msg)
            return await real(pool, address, msg)

        monkeypatch.setattr(get_data, "_request", spy)


def test_worker_processes_and_the_client_copy_large_values_out_of_memory(
    fresh_config: pytest.MonkeyPatch,
) -> None:
    fresh_config.setenv("SHOAL_COMM__CROSS_MEMORY_THRESHOLD", "1 MiB")
    config.refresh()
    with fresh_process_client(2) as c:
        a, b = sorted(c.nthreads())
        x = c.submit(make, 16 * MiB, workers=[a], pure=False)
        small = c.submit(make, 64 * 1024, workers=[a], pure=False)
        y = c.submit(total, x, workers=[b], pure=False)
        z = c.submit(total, small, workers=[b], pure=False)
        assert y.result() == expected(16 * MiB) and z.result() == expected(64 * 1024)
        got = x.result()
        np.testing.assert_array_equal(got, make(16 * MiB))
        assert got.flags.writeable
        # B and the client borrowed x; the small value went over the socket. (Where
        # Yama's ptrace_scope keeps workers out of each other's memory, B's copy fails
        # and it gets the bytes instead: lent all the same.)
        assert c.run(lent_bytes) == {a: 2 * 16 * MiB, b: 0}
        deadline = time.monotonic() + 5  # releases go out without holding up the copies
        while set(c.run(leases).values()) != {0} and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.run(leases) == {a: 0, b: 0}, "all released"


async def test_a_borrowed_value_takes_one_request(monkeypatch: pytest.MonkeyPatch) -> None:
    async with holding(16 * MiB) as (client, w, x):
        spy = Spy(monkeypatch)
        np.testing.assert_array_equal(await x, make(16 * MiB))
        assert [m.cross_memory is not None for m in spy.sent] == [True], "copied, no retry"
        assert w.lender.lent_bytes_total == 16 * MiB
        await released(w)


async def test_an_inproc_worker_lends_nothing() -> None:
    async with holding(16 * MiB, protocol="inproc") as (client, w, x):
        assert w.lend_min_bytes is None
        np.testing.assert_array_equal(await x, make(16 * MiB))
        assert w.lender.lent_bytes_total == 0


async def test_a_cancelled_copy_still_releases_its_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    async with holding(16 * MiB) as (client, w, x):
        started = asyncio.Event()

        async def stuck(*args: Any) -> Any:
            started.set()
            await asyncio.sleep(3600)

        monkeypatch.setattr(cross_memory, "read", stuck)
        fetch = asyncio.ensure_future(get_data.request_data(client._pool, w.address, [x.key]))
        await started.wait()
        assert len(w.lender) == 1
        fetch.cancel()  # a gather that timed out, say
        with pytest.raises(asyncio.CancelledError):
            await fetch
        await released(w)


async def test_a_quick_copy_is_used_before_the_release_is_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with holding(16 * MiB) as (client, w, x):
        answer = asyncio.Event()
        real = get_data._release

        async def slow(*args: Any) -> bool:
            await answer.wait()
            return await real(*args)

        monkeypatch.setattr(get_data, "_release", slow)
        spy = Spy(monkeypatch)
        opaques, missing = await asyncio.wait_for(
            get_data.request_data(client._pool, w.address, [x.key]), 10
        )
        # over well within the lease (a minute): it held throughout, no need to wait
        assert missing == () and [m.cross_memory is not None for m in spy.sent] == [True]
        np.testing.assert_array_equal(loads(opaques[x.key]), make(16 * MiB))
        assert len(w.lender) == 1, "pinned until the release arrives"
        answer.set()
        await released(w)


async def test_a_closing_client_sends_its_releases_first(monkeypatch: pytest.MonkeyPatch) -> None:
    async with holding(16 * MiB) as (client, w, x):
        real = get_data._release

        async def slow(*args: Any) -> bool:
            await asyncio.sleep(0.2)
            return await real(*args)

        monkeypatch.setattr(get_data, "_release", slow)
        np.testing.assert_array_equal(await x, make(16 * MiB))
        assert len(w.lender) == 1, "the release is still on its way"
        await client.close()
        assert len(w.lender) == 0, "released before the client's connections closed"


async def test_a_worker_gone_before_the_release_loses_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with holding(16 * MiB) as (client, w, big):
        small = client.submit(make, 1024, pure=False)
        await wait([small])
        # a lease too short for the asker to vouch for the copy itself: only the
        # worker's answer to the release could say it held
        w.lender.lease_seconds = 1e-6

        async def unanswered(*args: Any) -> bool:
            return False  # what _release says when the worker can't be reached

        monkeypatch.setattr(get_data, "_release", unanswered)
        spy = Spy(monkeypatch)
        opaques, missing = await get_data.request_data(
            client._pool, w.address, [big.key, small.key]
        )
        # the copy can't be trusted: asked for again; the small value stays
        assert set(opaques) == {big.key, small.key} and missing == ()
        assert [m.keys for m in spy.sent][1:] == [(big.key,)]
        np.testing.assert_array_equal(loads(opaques[big.key]), make(16 * MiB))


async def test_a_kernel_without_the_call_stops_copies_from_every_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cross_memory, "_unsupported", False)  # undone after the test
    async with holding(16 * MiB) as (client, w, x):

        def unsupported(pid: int, pieces: Any) -> None:
            raise OSError(errno.ENOSYS, "Function not implemented")  # seccomp, say

        monkeypatch.setattr(cross_memory, "_copy", unsupported)
        spy = Spy(monkeypatch)
        for _ in range(2):
            opaques, _ = await get_data.request_data(client._pool, w.address, [x.key])
            np.testing.assert_array_equal(loads(opaques[x.key]), make(16 * MiB))
        assert [m.cross_memory is not None for m in spy.sent] == [True, False, False]
        assert not cross_memory.enabled()  # for any worker, not only this one


def test_with_cross_memory_off_nothing_is_lent(fresh_config: pytest.MonkeyPatch) -> None:
    fresh_config.setenv("SHOAL_COMM__CROSS_MEMORY", "false")
    config.refresh()
    with fresh_process_client(1) as c:
        x = c.submit(make, 16 * MiB, pure=False)
        np.testing.assert_array_equal(x.result(), make(16 * MiB))
        assert list(c.run(lent_bytes).values()) == [0]


async def test_a_lease_that_ended_before_the_release_means_asking_for_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with holding(16 * MiB) as (client, w, x):
        w.lender.lease_seconds = -1.0  # every lease is over by the time it is released
        spy = Spy(monkeypatch)
        np.testing.assert_array_equal(await x, make(16 * MiB))
        assert [m.cross_memory is not None for m in spy.sent] == [True, False]
        assert w.lender.lent_bytes_total == 16 * MiB and len(w.lender) == 0


async def test_a_refused_copy_falls_back_to_bytes_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with holding(16 * MiB) as (client, w, x):

        def refuse(pid: int, pieces: Any) -> None:
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(cross_memory, "_copy", refuse)
        spy = Spy(monkeypatch)
        opaques, missing = await get_data.request_data(client._pool, w.address, [x.key])
        assert missing == () and len(opaques) == 1
        assert [m.cross_memory is not None for m in spy.sent] == [True, False]
        assert len(w.lender) == 0, "the asker released the lease it could not use"
        # from then on this worker is asked for bytes straight away
        await get_data.request_data(client._pool, w.address, [x.key])
        assert [m.cross_memory is not None for m in spy.sent[2:]] == [False]
        assert spy.sent[2].map_files, "mapping files is another matter"


async def test_a_lease_pointing_at_another_process_is_not_copied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with holding(16 * MiB) as (client, w, x):
        real_lend = w.lender.lend

        def lie(buffers: Any, nonce: bytes, now: float) -> Any:
            spans, (pid, address, seconds) = real_lend(buffers, nonce, now)
            return spans, (os.getppid(), address, seconds)  # not the lender

        monkeypatch.setattr(w.lender, "lend", lie)
        spy = Spy(monkeypatch)
        np.testing.assert_array_equal(await x, make(16 * MiB))
        assert [m.cross_memory is not None for m in spy.sent] == [True, False]


async def test_leases_nobody_releases_expire_on_the_heartbeat() -> None:
    async with cluster(n_workers=1, worker_kwargs={"heartbeat_interval": 0.02}) as (_, (w,)):
        w.lender.lease_seconds = 0.05
        assert w.lender.lend([bytearray(10)], cross_memory.new_nonce(), time.monotonic())
        assert len(w.lender) == 1  # an asker that died before releasing, say
        deadline = time.monotonic() + 5
        while len(w.lender) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(w.lender) == 0


def make_pair(n: int) -> Any:
    return (make(n), make(n))  # not a plain array: never in a memory file, lent instead


async def test_one_reply_with_a_memory_file_and_a_lent_value(
    fresh_config: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_config.setenv("SHOAL_COMM__SHARED_MEMORY", "true")
    fresh_config.setenv("SHOAL_COMM__SHARED_MEMORY_THRESHOLD", "1 MiB")
    config.refresh()
    async with holding(16 * MiB) as (client, w, x):
        pair = client.submit(make_pair, 8 * MiB, pure=False)
        await wait([pair])
        assert w.data.file(x.key) is not None and w.data.file(pair.key) is None
        spy = Spy(monkeypatch)
        opaques, missing = await get_data.request_data(client._pool, w.address, [x.key, pair.key])
        assert len(spy.sent) == 1 and missing == ()
        np.testing.assert_array_equal(loads(opaques[x.key]), make(16 * MiB))
        _, second = loads(opaques[pair.key])
        np.testing.assert_array_equal(second, make(8 * MiB))
        assert w.lender.lent_bytes_total == 16 * MiB
        await released(w)
