"""A scheduler with a journal, in process: what it writes replays into the same state."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from shoal import Client, config, fire_and_forget
from shoal.errors import CommError
from shoal.scheduler.journal import read_records
from shoal.scheduler.server import Scheduler
from shoal.scheduler.state import SchedulerState
from shoal.testing.cluster import cluster

sys.path.insert(0, str(Path(__file__).parent / "state"))
from test_sched_journal import after_restart, books


def journaled_events(path: Path) -> list[Any]:
    """The events in a journal a scheduler is using (read without taking its lock)."""
    records, _ = read_records(path.read_bytes())
    return [event for record in records for event in record]


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError(x)


async def test_the_journal_replays_into_the_schedulers_state(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with cluster(n_workers=2, scheduler_kwargs={"journal": path}) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            futs = c.map(inc, range(30))
            total = c.submit(sum, futs)
            bad = c.submit(boom, 1)
            assert await total == sum(range(1, 31))
            await asyncio.wait_for(bad.exception(), 10)
            kept = c.map(inc, range(100, 110))
            await c.gather(kept)
            del futs
            fire_and_forget(c.submit(inc, 7))
            await asyncio.sleep(0.2)
            # what the scheduler journaled replays into exactly the state it has
            replayed = SchedulerState()
            replayed.handle(*journaled_events(path))
            assert books(replayed) == books(s.state)


async def test_a_compacted_journal_still_recovers_the_state(
    tmp_path: Path, fresh_config: pytest.MonkeyPatch
) -> None:
    fresh_config.setenv("SHOAL_SCHEDULER__JOURNAL__COMPACT_BYTES", "2000")
    config.refresh()
    path = tmp_path / "journal"
    async with cluster(n_workers=2, scheduler_kwargs={"journal": path}) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            for i in range(20):
                await c.gather(c.map(inc, range(i * 10, i * 10 + 10)))
            kept = c.map(inc, range(1000, 1010))
            await c.gather(kept)
            assert s.journal is not None
            assert s.journal.compacted_size > 0  # it was compacted at least once
            assert path.stat().st_size < 100_000
            rebuilt = SchedulerState()
            rebuilt.handle(*journaled_events(path))
            assert after_restart(rebuilt) == after_restart(s.state)
            assert not (tmp_path / "journal.compacting").exists()


async def test_a_scheduler_restarted_on_its_journal_gets_its_workers_and_values_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    s = await Scheduler(port=0, journal=path, validate=True, dashboard_address=None)
    port = int(s.address.rsplit(":", 1)[1])
    from shoal.worker.server import Worker

    w = await Worker(s.address, nthreads=1, name="w0")
    try:
        async with Client(s.address, asynchronous=True) as c:
            futs = c.map(inc, range(5))
            assert await c.gather(futs) == [1, 2, 3, 4, 5]
            holder = s.state.tasks[futs[0].key].who_has
            assert holder
            await s.close()  # the worker and the client start reconnecting
            s2 = await Scheduler(port=port, journal=path, validate=True, dashboard_address=None)
            replayed = len(s2.state.transition_log)
            try:
                assert set(s2.state.tasks) >= {f.key for f in futs}
                await s2.wait_for_workers(1)
                for _ in range(200):
                    if all(s2.state.tasks[f.key].state == "memory" for f in futs):
                        break
                    await asyncio.sleep(0.05)
                # adopted from the worker, not run again
                assert all(s2.state.tasks[f.key].state == "memory" for f in futs)
                keys = {f.key for f in futs}
                after = list(s2.state.transition_log)[replayed:]
                assert not [r for r in after if r.key in keys and r.finish == "processing"]
                assert await c.gather(futs) == [1, 2, 3, 4, 5]
                assert await c.submit(inc, 10) == 11
            finally:
                await s2.close()
    finally:
        await w.close()


async def test_a_variable_set_again_after_a_restart_keeps_its_future(
    tmp_path: Path, fresh_config: pytest.MonkeyPatch
) -> None:
    """The recovered scheduler releases what the old variables held once the clients'
    grace ends; a variable of the same name set meanwhile keeps its own future."""
    from shoal import Variable
    from shoal.worker.server import Worker

    fresh_config.setenv("SHOAL_SCHEDULER__CLIENT_TIMEOUT", "1")
    config.refresh()
    path = tmp_path / "journal"
    s = await Scheduler(port=0, journal=path, dashboard_address=None)
    port = int(s.address.rsplit(":", 1)[1])
    w = await Worker(s.address, nthreads=1, name="w0")
    try:
        async with Client(s.address, asynchronous=True) as c:
            await Variable("v", client=c).set(c.submit(inc, 1))
            await s.close()
            s = await Scheduler(port=port, journal=path, dashboard_address=None)
            for _ in range(200):
                if c.id in s.client_streams:
                    break
                await asyncio.sleep(0.05)
            for _ in range(5):  # a pooled connection to the old scheduler fails once
                try:
                    await Variable("warm-up", client=c).set(0)
                    break
                except CommError:
                    pass
            fut = c.submit(inc, 41)
            await Variable("v", client=c).set(fut)
            del fut
            await asyncio.sleep(2)  # past the recovered clients' (and variables') grace
            again = await Variable("v", client=c).get(timeout=5)
            assert await asyncio.wait_for(again.result(), 10) == 42
    finally:
        await s.close()
        await w.close()


async def test_a_journal_that_cannot_be_written_is_set_aside_and_work_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    from shoal.scheduler import journal as journal_module

    path = tmp_path / "journal"
    async with cluster(n_workers=1, scheduler_kwargs={"journal": path}) as (s, _):
        async with Client(s.address, asynchronous=True) as c:
            assert await c.submit(inc, 1) == 2

            def disk_full(fd: int, data: bytes) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(journal_module, "_write_all", disk_full)
            assert await c.submit(inc, 2) == 3  # the cluster goes on
            assert s.journal is None
            assert await c.gather(c.map(inc, range(5))) == [1, 2, 3, 4, 5]
    assert not path.exists()
    assert (tmp_path / "journal.failed").exists()
    assert "goes on WITHOUT a journal" in caplog.text
