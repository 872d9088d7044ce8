"""LocalCluster and the synchronous client, in threads and in processes."""

from __future__ import annotations

import gc
import os
import time

import psutil
import pytest

from shoal import Client, LocalCluster, get_client, wait
from shoal.testing.cluster import shoal_threads


def inc(x: int) -> int:
    return x + 1


def submit_from_task(n: int) -> int:
    client = get_client()
    return sum(client.gather(client.map(inc, range(n))))


def test_threaded_cluster_sync_client() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster:
        assert cluster.scheduler_address.startswith("inproc://")
        assert len(cluster.workers) == 2
        with Client(cluster) as client:
            assert client.submit(inc, 1).result() == 2
            futures = client.map(inc, range(100))
            assert client.gather(futures) == list(range(1, 101))
            done, not_done = wait(futures, timeout=10)
            assert len(done) == 100 and not not_done
            assert client.submit(submit_from_task, 10).result() == sum(range(1, 11))
            assert sum(client.nthreads().values()) == 2
    gc.collect()
    assert shoal_threads(wait=10) == []


def test_process_cluster_leaves_nothing_behind() -> None:
    me = psutil.Process()
    # two threads each: a task that waits on other tasks holds one of them
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True) as cluster:
        with Client(cluster) as client:
            pids = client.run(os.getpid)
            assert len(set(pids.values())) == 2
            assert os.getpid() not in pids.values()
            assert client.submit(inc, 1).result() == 2
            assert client.gather(client.map(inc, range(50))) == list(range(1, 51))
            assert client.submit(submit_from_task, 5).result() == 15
        children = me.children(recursive=True)
        assert {p.pid for p in children} >= set(pids.values())
    gc.collect()
    for _ in range(100):
        if not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids.values()
        ):
            break
        time.sleep(0.05)
    alive = [
        p for p in pids.values() if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
    ]
    assert alive == []
    assert shoal_threads(wait=10) == []


def test_client_without_address_starts_a_cluster() -> None:
    with Client(n_workers=1, threads_per_worker=2, processes=False) as client:
        assert client.cluster is not None
        assert client.submit(inc, 41).result() == 42
        assert list(client.nthreads().values()) == [2]
    assert client.cluster is None
    assert shoal_threads(wait=10) == []


def test_scale_up_and_down() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        with Client(cluster) as client:
            cluster.scale(3)
            client.wait_for_workers(3, timeout=10)
            assert len(client.nthreads()) == 3
            cluster.scale(1)
            for _ in range(100):
                if len(client.nthreads()) == 1:
                    break
                time.sleep(0.02)
            assert len(client.nthreads()) == 1
            assert client.submit(inc, 1).result() == 2


def test_default_sizes() -> None:
    from shoal.deploy.local import default_workers_threads

    assert default_workers_threads(2, None, None, True) == (2, 1)
    assert default_workers_threads(8, None, None, True) == (2, 4)
    assert default_workers_threads(8, None, None, False) == (1, 8)
    assert default_workers_threads(8, 4, None, True) == (4, 2)
    assert default_workers_threads(8, None, 2, True) == (4, 2)


def test_security_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match="security"):
        Client("tcp://127.0.0.1:1", security=object())
