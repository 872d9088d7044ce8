"""``shoal worker`` runs its worker under a nanny by default: real processes, real signals."""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from test_cli import Proc

from shoal import Client
from shoal.comm.rpc import ConnectionPool
from shoal.protocol.messages import OK, Identity


# Proc (a shoal subprocess with its output collected) comes from test_cli.
@pytest.fixture
def scheduler() -> Iterator[str]:
    sched = Proc("scheduler", "--host", "127.0.0.1", "--port", "0")
    try:
        yield sched.wait_for(r"Scheduler at:\s+(tcp://\S+)")
    finally:
        sched.stop(signal.SIGINT)


def start_worker(scheduler: str, *extra: str) -> tuple[Proc, str, str]:
    """``shoal worker`` with its default (a nanny); its nanny's and worker's addresses."""
    worker = Proc(
        "worker",
        scheduler,
        "--nthreads",
        "1",
        "--memory-limit",
        "1GB",
        "--host",
        "127.0.0.1",
        *extra,
    )
    nanny_address = worker.wait_for(r"Nanny at:\s+(tcp://[^\s;]+)")
    worker_address = worker.wait_for(r"Worker at:\s+(tcp://\S+)")
    return worker, nanny_address, worker_address


def identity(address: str) -> dict[str, Any]:
    """Ask the server at ``address`` who it is."""

    async def ask() -> dict[str, Any]:
        pool = ConnectionPool(role="client")
        try:
            reply = await pool.request(address, Identity())
        finally:
            await pool.close()
        assert isinstance(reply, OK)
        return dict(reply.value)

    return asyncio.run(ask())


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_worker_runs_under_a_nanny_by_default_and_a_signal_stops_both(
    scheduler: str, sig: int
) -> None:
    worker, nanny_address, worker_address = start_worker(scheduler, "--name", "alice")
    try:
        with Client(scheduler) as client:
            client.wait_for_workers(1, timeout=20)
            info = client.scheduler_info()["workers"][worker_address]
            assert info["name"] == "alice"
            assert client.submit(operator.add, 1, 1).result(timeout=20) == 2
            (pid,) = client.run(os.getpid).values()
        assert pid != worker.popen.pid
        nanny = identity(nanny_address)
        assert nanny["type"] == "Nanny"
        assert nanny["name"] == "alice"
        assert nanny["worker_pid"] == pid
        assert nanny["worker_address"] == worker_address
        assert pid in {p.pid for p in psutil.Process(worker.popen.pid).children()}
        # the signal goes to the nanny only, not to the worker's process group
        assert worker.stop(sig) == 0
        assert gone(pid)
    finally:
        worker.cleanup()


def test_a_killed_worker_comes_back_and_retiring_it_ends_the_command(scheduler: str) -> None:
    worker, _, first = start_worker(scheduler, "--name", "bob")
    try:
        with Client(scheduler) as client:
            client.wait_for_workers(1, timeout=20)
            (pid,) = client.run(os.getpid).values()
            os.kill(pid, signal.SIGKILL)
            second = worker.wait_for(r"Worker at:\s+(tcp://\S+)")
            assert second != first
            deadline = time.monotonic() + 20
            while list(client.scheduler_info()["workers"]) != [second]:
                assert time.monotonic() < deadline, client.scheduler_info()["workers"]
                time.sleep(0.05)
            assert client.scheduler_info()["workers"][second]["name"] == "bob"
            assert client.submit(operator.add, 1, 2).result(timeout=20) == 3
            (new_pid,) = client.run(os.getpid).values()
            # a retired worker exits with code 0: its nanny ends too, with code 0
            client.retire_workers([second])
        assert worker.popen.wait(timeout=30) == 0
        assert gone(new_pid)
    finally:
        worker.cleanup()


def test_a_nanny_killed_with_sigkill_leaves_no_worker(scheduler: str) -> None:
    worker, _, _ = start_worker(scheduler)
    try:
        (child,) = psutil.Process(worker.popen.pid).children()
        worker.popen.kill()
        worker.popen.wait(timeout=10)
        # the worker reads its standard input from the nanny: end of file, it closes
        assert gone(child.pid)
    finally:
        worker.cleanup()


def test_no_nanny_runs_the_worker_in_the_command_process(scheduler: str) -> None:
    worker = Proc("worker", scheduler, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1")
    try:
        address = worker.wait_for(r"Worker at:\s+(tcp://\S+)")
        with Client(scheduler) as client:
            client.wait_for_workers(1, timeout=20)
            assert client.run(os.getpid) == {address: worker.popen.pid}
        assert worker.stop() == 0
    finally:
        worker.cleanup()


def test_help_describes_the_nanny() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "--nanny / --no-nanny" in out.stdout
    assert "--nanny-port" in out.stdout
    assert "--ready-fd" not in out.stdout
