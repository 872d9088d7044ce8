"""Large results travel between processes of one host as shared memory files
(shoal/comm/shared_memory.py): real workers, real transfers."""

from __future__ import annotations

import gc
import os
import sys
import time
import weakref
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest

from shoal import Client, LocalCluster, config, get_worker, wait
from shoal.comm import shared_memory
from shoal.testing.cluster import cluster

pytestmark = pytest.mark.skipif(
    shared_memory.identity() is None, reason="no memory files on this system"
)

MiB = 2**20

# the worker processes can't import this module: ship its functions
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def small_threshold(fresh_config: pytest.MonkeyPatch) -> None:
    """Shared memory on, for results of 1 MiB and more (worker processes inherit it)."""
    fresh_config.setenv("SHOAL_COMM__SHARED_MEMORY", "true")
    fresh_config.setenv("SHOAL_COMM__SHARED_MEMORY_THRESHOLD", "1 MiB")
    config.refresh()


@pytest.fixture
def processes(small_threshold: None) -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as c,
    ):
        yield c


def make(n: int) -> Any:
    return np.ones(n // 8)


def has_file(key: str) -> bool:
    return get_worker().data.file(key) is not None


def memory_files() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shoal-value")
        except OSError:
            pass
    return n


def overwrite_and_sum(x: Any, key: str) -> tuple[float, bool, bool]:
    shared = has_file(key)  # it came as a mapping of the writer's file
    writeable = bool(x.flags.writeable)
    x[:] = 5.0  # the task's own copy of the pages: the writer's value is unchanged
    return float(x.sum()), shared, writeable


def test_a_large_result_moves_between_worker_processes_as_a_mapping(processes: Client) -> None:
    c = processes
    a, b = sorted(c.nthreads())
    x = c.submit(make, 8 * MiB, workers=[a], pure=False)
    y = c.submit(overwrite_and_sum, x, x.key, workers=[b], pure=False)
    total, shared, writeable = y.result()
    assert (total, shared, writeable) == (5.0 * MiB, True, True)
    assert c.run(has_file, x.key) == {a: True, b: True}
    # the writer's value, and the file, are as the task left them
    assert c.submit(np.sum, x, workers=[a], pure=False).result() == MiB
    # B's value is the task's input, written in place (as with any worker), its own pages
    z = c.submit(np.sum, x, workers=[b], pure=False)
    assert z.result() == 5 * MiB
    # the client on this host maps it too
    got = x.result()
    assert got.sum() == MiB and got.flags.writeable
    del got

    before = c.run(memory_files)
    assert before[a] >= 1 and before[b] >= 1
    del x, y, z
    gc.collect()
    # releasing the key closes the files on both workers
    for _ in range(100):
        if c.run(memory_files) == {a: 0, b: 0}:
            break
        time.sleep(0.05)
    assert c.run(memory_files) == {a: 0, b: 0}


def test_by_default_large_results_travel_over_the_socket(
    fresh_config: pytest.MonkeyPatch,
) -> None:
    fresh_config.setenv("SHOAL_COMM__SHARED_MEMORY_THRESHOLD", "1 MiB")
    config.refresh()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as lc,
        Client(lc) as c,
    ):
        a, b = sorted(c.nthreads())
        x = c.submit(make, 8 * MiB, workers=[a], pure=False)
        y = c.submit(overwrite_and_sum, x, x.key, workers=[b], pure=False)
        assert y.result() == (5.0 * MiB, False, True)
        assert c.run(memory_files) == {a: 0, b: 0}


async def test_a_file_that_cannot_be_mapped_is_asked_for_as_bytes(
    small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cluster(n_workers=1) as (s, (w,)):
        client = await Client(s.address, asynchronous=True)
        try:
            x = client.submit(make, 2 * MiB, pure=False)
            await wait([x])
            assert w.data.file(x.key) is not None
            opaques, missing, files = await shared_memory.request_data(
                client._pool, w.address, [x.key]
            )
            assert list(files) == [x.key] and missing == ()

            def refuse(ref: Any) -> Any:
                raise OSError("the peer freed it meanwhile")

            monkeypatch.setattr(shared_memory, "attach", refuse)
            opaques, missing, files = await shared_memory.request_data(
                client._pool, w.address, [x.key, "no-such-key"]
            )
            assert files == {} and missing == ("no-such-key",)
            assert (await x).sum() == 2 * MiB // 8
        finally:
            await client.close()


async def test_spilled_and_replaced_values_close_their_files(small_threshold: None) -> None:
    async with cluster(n_workers=1) as (s, (w,)):
        client = await Client(s.address, asynchronous=True)
        try:
            x = client.submit(make, 2 * MiB, pure=False)
            await wait([x])
            file = w.data.file(x.key)
            assert file is not None and file.fd >= 0
            assert w.data.file_nbytes == file.size
            assert w.data.evict() > 0  # spilled to disk: the file is closed
            assert file.fd == -1 and w.data.file(x.key) is None and w.data.file_nbytes == 0
            assert (await x).sum() == 2 * MiB // 8  # read back from disk
        finally:
            await client.close()


def test_task_threads_let_go_of_inputs_between_tasks(process_client: Client) -> None:
    """A worker thread waiting for its next task holds nothing of the last one."""

    def keep_a_weak_reference(array: Any) -> None:
        get_worker()._test_probe = weakref.ref(array)  # type: ignore[attr-defined]

    def alive() -> bool:
        gc.collect()
        return get_worker()._test_probe() is not None  # type: ignore[attr-defined]

    c = process_client
    a = sorted(c.nthreads())[0]
    array = c.submit(np.ones, 2**16, workers=[a], pure=False)
    c.submit(keep_a_weak_reference, array, workers=[a], pure=False).result()
    del array
    for _ in range(100):
        if not c.run(alive, workers=[a])[a]:
            break
        time.sleep(0.05)
    assert c.run(alive, workers=[a]) == {a: False}
