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
from shoal.comm import get_data, shared_memory
from shoal.protocol.serialize import loads
from shoal.testing.cluster import cluster, fresh_process_client

pytestmark = pytest.mark.skipif(
    not shared_memory.supported(), reason="no memory files on this system"
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
    with fresh_process_client(2) as c:
        yield c


def make(n: int) -> Any:
    return np.ones(n // 8)


def has_file(key: str) -> bool:
    return get_worker().data.file(key) is not None


def memory_files() -> tuple[int, int]:
    """Memory files of shoal this process has open, and mappings of them it has."""
    opened = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            opened += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shoal-value")
        except OSError:
            pass
    with open("/proc/self/maps") as f:
        mapped = sum("/memfd:shoal-value" in line for line in f)
    return opened, mapped


def overwrite_and_sum(x: Any) -> tuple[float, bool, int]:
    writeable = bool(x.flags.writeable)
    mapped = memory_files()[1]  # x is a mapping of the writer's file
    x[:] = 5.0  # the task's own copy of the pages: the file is unchanged
    return float(x.sum()), writeable, mapped


def write_into(x: Any) -> None:
    x[0] = 1.0


def test_a_large_array_moves_between_worker_processes_as_a_mapping(processes: Client) -> None:
    c = processes
    a, b = sorted(c.nthreads())
    x = c.submit(make, 8 * MiB, workers=[a], pure=False)
    y = c.submit(overwrite_and_sum, x, workers=[b], pure=False)
    total, writeable, mapped = y.result()
    assert (total, writeable, mapped) == (5.0 * MiB, True, 1)
    assert c.run(has_file, x.key) == {a: True, b: False}  # only its writer keeps the file
    # where it was made the array is read-only: a write there would diverge from the file
    with pytest.raises(ValueError, match="read-only"):
        c.submit(write_into, x, workers=[a], pure=False).result()
    assert c.submit(np.sum, x, workers=[a], pure=False).result() == MiB
    # B's value is the task's input, written in place (as with any worker): its own pages
    z = c.submit(np.sum, x, workers=[b], pure=False)
    assert z.result() == 5 * MiB
    # the client on this host maps the file too, and gets a writable array
    got = x.result()
    assert got.sum() == MiB and got.flags.writeable
    assert memory_files()[1] == 1
    del got
    gc.collect()
    assert memory_files()[1] == 0

    del x, y, z
    # once the key is released, the writer closes its file and nobody maps it
    deadline = time.monotonic() + 10
    while c.run(memory_files) != {a: (0, 0), b: (0, 0)} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.run(memory_files) == {a: (0, 0), b: (0, 0)}


def test_by_default_large_results_travel_over_the_socket(
    fresh_config: pytest.MonkeyPatch,
) -> None:
    fresh_config.setenv("SHOAL_COMM__SHARED_MEMORY_THRESHOLD", "1 MiB")
    config.refresh()
    with fresh_process_client(2) as c:
        a, b = sorted(c.nthreads())
        x = c.submit(make, 8 * MiB, workers=[a], pure=False)
        y = c.submit(overwrite_and_sum, x, workers=[b], pure=False)
        assert y.result() == (5.0 * MiB, True, 0)
        assert c.run(memory_files) == {a: (0, 0), b: (0, 0)}


async def test_a_file_that_cannot_be_mapped_is_asked_for_as_bytes(
    small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cluster(n_workers=1) as (s, (w,)):
        client = await Client(s.address, asynchronous=True)
        try:
            x = client.submit(make, 2 * MiB, pure=False)
            await wait([x])
            assert w.data.file(x.key) is not None
            asked: list[Any] = []
            real_attach = shared_memory.attach

            def refuse(ref: Any) -> Any:
                asked.append(ref)
                raise PermissionError("/proc hides that process's descriptors")

            monkeypatch.setattr(shared_memory, "attach", refuse)
            opaques, missing = await get_data.request_data(
                client._pool, w.address, [x.key, "no-such-key"]
            )
            assert len(asked) == 1 and missing == ("no-such-key",)
            # the bytes came over the socket instead
            np.testing.assert_array_equal(loads(opaques[x.key]), np.ones(2 * MiB // 8))
            # and for a while this worker is asked for bytes straight away
            opaques, missing = await get_data.request_data(client._pool, w.address, [x.key])
            assert len(asked) == 1 and loads(opaques[x.key]).sum() == 2 * MiB // 8
            get_data._refused.clear()
            monkeypatch.setattr(shared_memory, "attach", real_attach)
            assert (await x).sum() == 2 * MiB // 8
        finally:
            await client.close()


async def test_a_spilled_array_closes_its_file(small_threshold: None) -> None:
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


def test_inproc_workers_write_no_files(small_threshold: None) -> None:
    with LocalCluster(n_workers=1, processes=False) as lc, Client(lc) as c:
        x = c.submit(make, 2 * MiB, pure=False)
        assert x.result().sum() == 2 * MiB // 8
        assert c.run(has_file, x.key) == {next(iter(c.nthreads())): False}


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
