"""The nanny with a real worker child process, and a scheduler in this process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable

import psutil
import pytest

from shoal import Client
from shoal.comm.rpc import ConnectionPool
from shoal.errors import HandshakeError, KilledWorker
from shoal.protocol.messages import OK, ErrorReply, Identity, RestartWorker, Terminate
from shoal.scheduler.server import Scheduler
from shoal.worker.nanny import Nanny, describe_exit, format_bytes, worker_command


def inc(x: int) -> int:
    return x + 1


def hold_memory(nbytes: int) -> int:
    import numpy as np

    block = np.ones(nbytes // 8)  # written, so resident
    time.sleep(60)
    return int(block.sum())


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    s = await Scheduler(host="127.0.0.1", port=0, protocol="tcp")
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(role="client")
    try:
        yield p
    finally:
        await p.close()


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def worker_names(s: Scheduler) -> dict[str, str]:
    return {info["name"]: addr for addr, info in s.worker_info.items()}


async def test_restart_request_starts_a_new_worker_process(
    scheduler: Scheduler, pool: ConnectionPool
) -> None:
    async with Nanny(scheduler.address, nthreads=1, name="n1", memory_limit="1GB") as nanny:
        first = await nanny.wait_for_worker(timeout=30)
        old_pid = nanny.worker_pid
        assert old_pid is not None
        await until(lambda: first in scheduler.worker_info)
        assert scheduler.worker_info[first]["nanny"] == nanny.address
        assert scheduler.worker_info[first]["name"] == "n1"

        reply = await pool.request(nanny.address, Identity())
        assert isinstance(reply, OK)
        assert reply.value["type"] == "Nanny"
        assert reply.value["address"] == nanny.address
        assert reply.value["worker_pid"] == old_pid
        assert reply.value["restarts"] == 0

        reply = await pool.request(nanny.address, RestartWorker(timeout=30))
        assert isinstance(reply, OK)
        new_pid = reply.value["worker_pid"]
        assert new_pid not in (None, old_pid)
        assert new_pid == nanny.worker_pid
        assert reply.value["restarts"] == 1
        assert gone(old_pid)
        # acknowledged once the new worker has registered: the scheduler knows it
        new_address = reply.value["worker_address"]
        assert new_address in scheduler.worker_info
        assert scheduler.worker_info[new_address]["name"] == "n1"
        await until(lambda: first not in scheduler.worker_info)
        async with await Client(scheduler.address, asynchronous=True) as client:
            assert await client.submit(inc, 1) == 2
    assert gone(new_pid)
    assert nanny.status == "closed"


async def test_a_killed_worker_comes_back_and_computes(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.nanny")
    async with Nanny(scheduler.address, nthreads=1, name="phoenix", memory_limit=0) as nanny:
        first = await nanny.wait_for_worker(timeout=30)
        pid = nanny.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: nanny.worker_pid != pid)
        second = await nanny.wait_for_worker(timeout=30)
        assert second != first
        await until(lambda: worker_names(scheduler) == {"phoenix": second})
        async with await Client(scheduler.address, asynchronous=True) as client:
            assert await client.submit(inc, 41) == 42
        assert nanny.restarts == 1
    assert f"Worker process {pid} (phoenix) was killed by SIGKILL" in caplog.text


async def test_a_worker_over_its_memory_budget_is_restarted(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("numpy")
    caplog.set_level(logging.INFO, logger="shoal.nanny")
    async with (
        Nanny(scheduler.address, nthreads=1, name="hog", memory_limit="300MB") as nanny,
        await Client(scheduler.address, asynchronous=True) as client,
    ):
        await nanny.wait_for_worker(timeout=30)
        pid = nanny.worker_pid
        future = client.submit(hold_memory, 400 * 2**20, pure=False)
        # Each worker that runs it is restarted; after allowed-failures deaths the
        # scheduler gives up on the task.
        with pytest.raises(KilledWorker, match="hold_memory"):
            await future
        assert nanny.restarts >= 1
        assert nanny.worker_pid != pid
        assert gone(pid)  # type: ignore[arg-type]
        await nanny.wait_for_worker(timeout=30)
        assert await client.submit(inc, 1) == 2
    assert "Worker exceeded 95% memory budget. Restarting" in caplog.text


async def test_worker_exiting_with_code_0_closes_the_nanny(
    scheduler: Scheduler, pool: ConnectionPool
) -> None:
    nanny = await Nanny(scheduler.address, nthreads=1, memory_limit=0)
    try:
        address = await nanny.wait_for_worker(timeout=30)
        pid = nanny.worker_pid
        await pool.request(address, Terminate())  # the worker closes on purpose
        await asyncio.wait_for(nanny.finished(), 30)
        assert nanny.status == "closed"
        assert nanny.restarts == 0
        assert gone(pid)  # type: ignore[arg-type]
    finally:
        await nanny.close()


async def test_terminate_request_stops_worker_and_nanny(
    scheduler: Scheduler, pool: ConnectionPool
) -> None:
    nanny = await Nanny(scheduler.address, nthreads=1, memory_limit=0)
    try:
        await nanny.wait_for_worker(timeout=30)
        pid = nanny.worker_pid
        assert isinstance(await pool.request(nanny.address, Terminate()), OK)
        await asyncio.wait_for(nanny.finished(), 30)
        assert gone(pid)  # type: ignore[arg-type]
        reply = await nanny.dispatch(RestartWorker(timeout=5))
        assert isinstance(reply, ErrorReply)
        assert "closed" in reply.message
    finally:
        await nanny.close()


async def test_a_worker_that_keeps_dying_is_started_again_after_a_pause(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.nanny")
    # an argument the worker refuses: every child exits with code 2 at once
    nanny = await Nanny(
        scheduler.address, nthreads=1, memory_limit=0, worker_args=["--resources", "bad"]
    )
    try:
        await until(lambda: "waiting" in caplog.text, timeout=60)
        assert "exited with code 2; starting a new one" in caplog.text
        assert "died 5 times" in caplog.text
        assert nanny.status == "running"
    finally:
        await nanny.close()
    assert gone(nanny.worker_pid)  # type: ignore[arg-type]


async def test_a_nanny_needs_an_address_another_process_can_reach() -> None:
    with pytest.raises(ValueError, match="tcp://"):
        Nanny("inproc://abc/1", nthreads=1)


def test_worker_command() -> None:
    args = worker_command(
        "tcp://s:1",
        name="w",
        nthreads=2,
        memory_limit=10,
        port=1234,
        resources={"GPU": 1},
        ready_fd=7,
        extra_args=["--log-level", "DEBUG"],
    )
    assert args[1:6] == ["-m", "shoal.cli.main", "worker", "tcp://s:1", "--no-nanny"]
    joined = " ".join(args)
    for part in (
        "--nthreads 2",
        "--memory-limit 10",
        "--name w",
        "--worker-port 1234",
        "--resources GPU=1.0",
        "--ready-fd 7",
        "--exit-with-parent",
    ):
        assert part in joined
    assert args[-2:] == ["--log-level", "DEBUG"]
    assert "--nanny" in worker_command(
        "tcp://s:1", name="w", nthreads=1, memory_limit=0, nanny=True
    )


@pytest.mark.parametrize(
    ("code", "text"),
    [(0, "exited with code 0"), (1, "exited with code 1"), (-9, "was killed by SIGKILL")],
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_format_bytes() -> None:
    assert format_bytes(100) == "100 B"
    assert format_bytes(300 * 2**20) == "300.00 MiB"


async def test_a_nanny_with_a_secret_refuses_who_does_not_know_it(scheduler: Scheduler) -> None:
    secret = b"s3cret"
    async with Nanny(scheduler.address, nthreads=1, memory_limit=0, secret=secret) as nanny:
        stranger = ConnectionPool(role="client", timeout=5)
        friend = ConnectionPool(role="client", secret=secret)
        try:
            with pytest.raises(HandshakeError):
                await stranger.request(nanny.address, Identity())
            reply = await friend.request(nanny.address, Identity())
            assert isinstance(reply, OK)
            assert reply.value["type"] == "Nanny"
        finally:
            await stranger.close()
            await friend.close()
