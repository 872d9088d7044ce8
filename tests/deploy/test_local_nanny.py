"""LocalCluster(processes=True) runs each worker under a nanny (a Nanny server in the
cluster's process, as distributed's are): deaths, scaling, closing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable

import psutil
import pytest

from shoal import Client, LocalCluster
from shoal.deploy.process import WorkerProcess
from shoal.errors import KilledWorker, RemoteError
from shoal.testing.cluster import shoal_threads
from shoal.worker.nanny import Nanny


def inc(x: int) -> int:
    return x + 1


def getenv(name: str) -> str | None:
    return os.environ.get(name)  # looked up where it runs (os.environ.get would pickle ours)


def die() -> None:
    os._exit(1)


def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def names(client: Client) -> dict[str, str]:
    return {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}


def test_a_worker_killed_with_sigkill_comes_back_with_its_name() -> None:
    me = psutil.Process()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        nannies = dict(cluster.workers)
        assert all(isinstance(w, Nanny) for w in nannies.values())
        before = names(client)
        pids = client.run(os.getpid)
        # one process per worker: the nannies run in this process
        assert set(pids.values()) <= {p.pid for p in me.children(recursive=True)}
        assert set(pids.values()) == {w.worker_pid for w in nannies.values()}  # type: ignore[union-attr]
        info = client.scheduler_info()["workers"]
        assert {info[a]["nanny"] for a in pids} == {w.address for w in nannies.values()}
        victim = before["0"]
        os.kill(pids[victim], signal.SIGKILL)

        def back() -> bool:
            now = names(client)
            return set(now) == {"0", "1"} and now["0"] != victim

        until(back)
        after = names(client)
        assert after["1"] == before["1"]
        assert client.gather(client.map(inc, range(20))) == list(range(1, 21))
        assert alive(set(pids.values())) == {pids[before["1"]]}
        new_pids = client.run(os.getpid)
        assert cluster.workers == nannies  # the same nannies
        assert set(new_pids.values()) == {w.worker_pid for w in nannies.values()}  # type: ignore[union-attr]
        everything = {p.pid for p in me.children(recursive=True)}
    until(lambda: not alive(everything | set(new_pids.values())))
    assert shoal_threads() == []


def test_a_task_that_kills_its_worker_ends_in_killed_worker() -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        first = client.run(os.getpid)
        future = client.submit(die, retries=0)
        with pytest.raises(KilledWorker, match=re.escape(str(future.key))):
            future.result(timeout=120)
        # the nanny started the worker again each time, and it is still there
        until(lambda: len(client.scheduler_info()["workers"]) == 1)
        assert client.submit(inc, 1).result(timeout=30) == 2
        assert set(client.run(os.getpid).values()).isdisjoint(first.values())
        assert list(names(client)) == ["0"]
        # the same nanny, now with a new worker process
        assert cluster.workers["0"].worker_pid in client.run(os.getpid).values()  # type: ignore[union-attr]


def test_scale_down_and_close_leave_no_process() -> None:
    me = psutil.Process()
    with (
        LocalCluster(n_workers=3, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        everything = {p.pid for p in me.children(recursive=True)}
        assert len(everything) == 3  # three workers (their nannies are in this process)
        data = client.scatter(list(range(10)))
        cluster.scale(1)
        assert len(cluster.workers) == 1
        # retired workers exit with code 0, and their nannies close
        until(lambda: len(alive(everything)) == 1)
        assert client.gather(data) == list(range(10))
        assert client.submit(inc, 1).result(timeout=30) == 2
        cluster.scale(2)
        assert len(client.scheduler_info()["workers"]) == 2
        everything |= {p.pid for p in me.children(recursive=True)}
    until(lambda: not alive(everything))
    assert [p for p in me.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE] == []


def test_processes_without_a_nanny() -> None:
    me = psutil.Process()
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, nanny=False) as cluster,
        Client(cluster) as client,
    ):
        (proc,) = cluster.workers.values()
        assert isinstance(proc, WorkerProcess)
        assert not proc.nanny and proc.nanny_address is None
        assert "--no-nanny" in proc.args
        assert list(client.run(os.getpid).values()) == [proc.pid]
        with pytest.raises(RemoteError, match="runs without a nanny"):
            client.run(os.getpid, nanny=True)
        assert client.submit(inc, 1).result(timeout=30) == 2
        everything = {p.pid for p in me.children(recursive=True)}
    until(lambda: not alive(everything))


def test_a_worker_process_under_a_nanny_gets_the_environment_given() -> None:
    with (
        LocalCluster(n_workers=0, processes=True) as cluster,
        Client(cluster) as client,
    ):
        proc = WorkerProcess(
            cluster.scheduler_address,
            name="env",
            nthreads=1,
            memory_limit=0,
            nanny=True,
            env={"SHOAL_TEST_MARKER": "hello", **cluster.security.environment()},
        )
        proc.start()
        try:
            client.wait_for_workers(1, timeout=30)
            (marker,) = client.run(getenv, "SHOAL_TEST_MARKER").values()
            assert marker == "hello"
            (nanny,) = client.run(getenv, "SHOAL_NANNY_ADDRESS").values()
            assert nanny.startswith("tcp://127.0.0.1:")
            (worker_pid,) = client.run(os.getpid).values()
            assert worker_pid in {p.pid for p in psutil.Process(proc.pid).children()}
        finally:
            asyncio.run(proc.close())
        until(lambda: not alive({worker_pid, proc.pid or 0}))


def kind_of(dask_worker: object) -> str:
    return type(dask_worker).__name__


def test_run_on_the_nannies() -> None:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        workers = client.run(os.getpid)
        nannies = client.run(os.getpid, nanny=True)
        assert set(nannies) == set(workers)  # by worker address, as distributed answers
        assert set(nannies.values()) == {os.getpid()}  # LocalCluster's nannies live here
        assert os.getpid() not in workers.values()
        assert client.run(kind_of, nanny=True) == dict.fromkeys(workers, "Nanny")
        assert client.run(kind_of) == dict.fromkeys(workers, "Worker")
        one = sorted(workers)[0]
        assert client.run(kind_of, nanny=True, workers=[one]) == {one: "Nanny"}
