"""The futures API against a real scheduler and workers (async client)."""

from __future__ import annotations

import asyncio
import gc
import operator
import traceback
from typing import Any

import pytest

from shoal import Client, FutureCancelledError, as_completed, fire_and_forget, get_client
from shoal.client.futures import FIRST_COMPLETED, _wait
from shoal.worker.execute import get_worker


def inc(x: int) -> int:
    return x + 1


def raises_zero(x: int) -> float:
    return x / 0


def slow_inc(x: int, delay: float = 0.2) -> int:
    import time

    time.sleep(delay)
    return x + 1


async def test_submit_result(c_s_ws) -> None:
    c, s, ws = c_s_ws
    fut = c.submit(inc, 1)
    assert await fut == 2
    assert await fut.result() == 2
    assert fut.done()
    assert fut.status == "finished"
    assert fut.type == "int"


async def test_pure_keys_deduplicate(c_s_ws) -> None:
    c, _, _ = c_s_ws
    a = c.submit(inc, 1)
    b = c.submit(inc, 1)
    assert a.key == b.key
    d = c.submit(inc, 1, pure=False)
    assert d.key != a.key
    assert await c.gather([a, b, d]) == [2, 2, 2]


async def test_map_and_gather_structure(c_s_ws) -> None:
    c, _, _ = c_s_ws
    futures = c.map(inc, range(20))
    assert await c.gather(futures) == list(range(1, 21))
    nested = {"a": futures[0], "b": [futures[1], (futures[2], 5)]}
    assert await c.gather(nested) == {"a": 1, "b": [2, (3, 5)]}
    two = c.map(operator.add, range(3), range(10, 13))
    assert await c.gather(two) == [10, 12, 14]


def typed(x: object) -> tuple[str, object]:
    return type(x).__name__, x


async def test_map_over_plain_values_keeps_their_types(c_s_ws) -> None:
    # such calls travel as msgpack (compact run specs): bool, bytes, None stay themselves
    c, _, _ = c_s_ws
    values = [True, 1, 2**64 - 1, 2**70, 1.5, "s", "\ud800", b"b", None]
    results = await c.gather(c.map(typed, values))
    assert results == [(type(v).__name__, v) for v in values]


async def test_futures_as_arguments_are_resolved_on_workers(c_s_ws) -> None:
    c, _, _ = c_s_ws
    a = c.submit(inc, 1, workers=[_addr(c_s_ws, 0)])
    b = c.submit(inc, 10, workers=[_addr(c_s_ws, 1)])
    total = c.submit(sum, [a, b])
    kw = c.submit(lambda x, y: x * y, a, y=b)
    assert await total == 13
    assert await kw == 22


def _addr(c_s_ws, i: int) -> str:
    return c_s_ws[2][i].address


async def test_error_reraises_original_type_with_remote_traceback(c_s_ws) -> None:
    c, _, _ = c_s_ws
    fut = c.submit(raises_zero, 1)
    with pytest.raises(ZeroDivisionError) as info:
        await fut
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.name == "raises_zero" for f in frames)
    assert fut.status == "error"
    assert isinstance(await fut.exception(), ZeroDivisionError)
    tb = await fut.traceback()
    assert any(f.name == "raises_zero" for f in traceback.extract_tb(tb))
    dependent = c.submit(inc, fut)
    with pytest.raises(ZeroDivisionError):
        await dependent


async def test_gather_errors_skip(c_s_ws) -> None:
    c, _, _ = c_s_ws
    good = c.submit(inc, 1)
    bad = c.submit(raises_zero, 1)
    assert await c.gather([good, bad], errors="skip") == [2]
    with pytest.raises(ZeroDivisionError):
        await c.gather([good, bad])


async def test_retries(c_s_ws, tmp_path) -> None:
    c, _, _ = c_s_ws
    marker = tmp_path / "count"
    marker.write_text("0")

    def flaky(path: str) -> str:
        import pathlib

        p = pathlib.Path(path)
        n = int(p.read_text())
        p.write_text(str(n + 1))
        if n < 2:
            raise RuntimeError(f"attempt {n}")
        return "ok"

    assert await c.submit(flaky, str(marker), retries=2) == "ok"
    marker.write_text("0")
    with pytest.raises(RuntimeError, match="attempt 1"):
        await c.submit(flaky, str(marker), retries=1, pure=False)


async def test_release_frees_worker_memory(c_s_ws) -> None:
    c, s, ws = c_s_ws
    fut = c.submit(inc, 41)
    assert await fut == 42
    key = fut.key
    assert any(key in w.data for w in ws)
    del fut
    gc.collect()
    for _ in range(200):
        if not any(key in w.data for w in ws) and key not in s.state.tasks:
            break
        await asyncio.sleep(0.01)
    assert not any(key in w.data for w in ws)


async def test_scatter(c_s_ws) -> None:
    c, _, ws = c_s_ws
    [a, b] = await c.scatter([1, 2])
    assert await c.gather([a, b]) == [1, 2]
    assert await c.submit(operator.add, a, b) == 3
    d = await c.scatter({"x": 10})
    assert await d["x"] == 10
    one = await c.scatter(5, workers=[ws[1].address])
    assert await c.who_has([one]) == {one.key: [ws[1].address]}
    everywhere = await c.scatter(7, broadcast=True)
    assert sorted((await c.who_has([everywhere]))[everywhere.key]) == sorted(w.address for w in ws)


async def test_cancel(c_s_ws) -> None:
    c, _, _ = c_s_ws
    fut = c.submit(slow_inc, 1, 2.0)
    await asyncio.sleep(0.05)
    await fut.cancel()
    assert fut.cancelled()
    with pytest.raises(FutureCancelledError):
        await fut


async def test_wait_and_as_completed(c_s_ws) -> None:
    c, _, _ = c_s_ws
    futures = c.map(slow_inc, range(4), delay=0.05)
    done, not_done = await _wait(futures, None, "ALL_COMPLETED")
    assert len(done) == 4
    assert not not_done
    slow = c.submit(slow_inc, 100, 1.0)
    with pytest.raises(TimeoutError):
        await _wait([slow], 0.05, "ALL_COMPLETED")
    done, not_done = await _wait([slow, futures[0]], None, FIRST_COMPLETED)
    assert futures[0] in done
    results = []
    ac = as_completed(c.map(inc, range(5)), with_results=True)
    async for _, value in ac:
        results.append(value)
        if value == 1:
            ac.add(c.submit(inc, 100))
    assert sorted(results) == [1, 2, 3, 4, 5, 101]


async def test_add_done_callback(c_s_ws) -> None:
    c, _, _ = c_s_ws
    seen = asyncio.Event()
    fut = c.submit(inc, 5)
    fut.add_done_callback(lambda f: seen.set())
    await asyncio.wait_for(seen.wait(), 10)


async def test_fire_and_forget_runs_after_release(c_s_ws, tmp_path) -> None:
    c, _, _ = c_s_ws
    out = tmp_path / "side-effect"

    def write(path: str) -> None:
        import time

        time.sleep(0.1)
        with open(path, "w") as f:
            f.write("done")

    fut = c.submit(write, str(out))
    fire_and_forget(fut)
    del fut
    gc.collect()
    for _ in range(300):
        if out.exists():
            break
        await asyncio.sleep(0.01)
    assert out.read_text() == "done"


async def test_queries(c_s_ws) -> None:
    c, s, ws = c_s_ws
    fut = c.submit(inc, 1, workers=[ws[0].address])
    await fut
    assert await c.who_has([fut]) == {fut.key: [ws[0].address]}
    has_what = await c.has_what()
    assert fut.key in has_what[ws[0].address]
    assert await c.nthreads() == {w.address: 1 for w in ws}
    info = await c.scheduler_info()
    assert info["address"] == s.address
    assert set(info["workers"]) == {w.address for w in ws}
    assert set(await c.processing()) == {w.address for w in ws}


async def test_run_on_every_worker(c_s_ws) -> None:
    c, _, ws = c_s_ws
    result = await c.run(lambda: get_worker().name)
    assert result == {w.address: w.name for w in ws}
    only = await c.run(lambda x: x * 2, 21, workers=[ws[0].address])
    assert only == {ws[0].address: 42}

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await c.run(fail)
    returned = await c.run(fail, on_error="return")
    assert all(isinstance(v, ValueError) for v in returned.values())


async def test_run_passes_the_worker_as_dask_worker(c_s_ws) -> None:
    c, _, ws = c_s_ws

    def name(dask_worker: Any, suffix: str = "") -> str:
        return dask_worker.name + suffix

    assert await c.run(name, suffix="!") == {w.address: f"{w.name}!" for w in ws}

    async def address(dask_worker: Any) -> str:
        return str(dask_worker.address)

    assert await c.run(address) == {w.address: w.address for w in ws}
    assert set(await c.run(len, "abc")) == {w.address for w in ws}  # a builtin: no signature needed


async def test_get_worker_inside_task(c_s_ws) -> None:
    c, _, ws = c_s_ws
    fut = c.submit(lambda: get_worker().address, workers=[ws[1].address], pure=False)
    assert await fut == ws[1].address


async def test_async_client_context_manager(c_s_ws) -> None:
    _, s, _ = c_s_ws
    async with Client(s.address, asynchronous=True, set_as_default=False) as c2:
        assert await c2.submit(inc, 2) == 3
    assert c2.status == "closed"


async def test_wait_for_workers(c_s_ws) -> None:
    c, _, _ = c_s_ws
    await c.wait_for_workers(2, timeout=5)
    with pytest.raises(TimeoutError):
        await c.wait_for_workers(3, timeout=0.2)


def test_get_client_outside_task_without_client_raises() -> None:
    import shoal.client.client as mod

    if mod._running_default() is None:
        with pytest.raises(ValueError, match="No clients found"):
            get_client()


RUN_ORDER: list[str] = []


def record(name: str, delay: float = 0.0) -> str:
    import time

    time.sleep(delay)
    RUN_ORDER.append(name)
    return name


async def test_priority_orders_queued_tasks(c_s_ws) -> None:
    c, _, ws = c_s_ws
    RUN_ORDER.clear()
    only = [ws[0].address]
    blocker = c.submit(record, "blocker", 0.3, workers=only)
    await asyncio.sleep(0.1)  # the blocker occupies the worker's single thread
    low = c.submit(record, "low", workers=only, priority=-1)
    normal = c.submit(record, "normal", workers=only)
    high = c.submit(record, "high", workers=only, priority=10)
    await c.gather([blocker, low, normal, high])
    assert RUN_ORDER == ["blocker", "high", "normal", "low"]


async def test_workers_restriction_and_allow_other_workers(c_s_ws) -> None:
    c, _, ws = c_s_ws
    where = await c.gather(
        [c.submit(lambda i: get_worker().address, i, workers=ws[1].address) for i in range(6)]
    )
    assert set(where) == {ws[1].address}
    loose = c.submit(lambda: 1, workers=["tcp://10.255.255.1:1"], allow_other_workers=True)
    assert await asyncio.wait_for(loose, 10) == 1


async def test_get_versions(c_s_ws, monkeypatch) -> None:
    from shoal.client.diagnostics import VersionMismatchError

    c, _, ws = c_s_ws
    versions = await c.get_versions(check=True)
    assert versions["client"]["dask"] == versions["scheduler"]["dask"]
    assert set(versions["workers"]) == {w.address for w in ws}
    for name in ("python", "platform", "shoal", "dask", "msgpack", "cloudpickle", "numpy"):
        assert name in versions["client"]
    # a worker with another dask: check=True names the package and the component
    s_info = c_s_ws[1].worker_info[ws[0].address]
    s_info["versions"] = {**s_info["versions"], "dask": "0.0.1"}
    with pytest.raises(VersionMismatchError, match=r"worker .*dask"):
        await c.get_versions(check=True)


async def test_version_mismatch_is_logged_at_connect(c_s_ws, monkeypatch, caplog) -> None:
    import shoal.comm.connection as connection
    from shoal.protocol.versions import collect_versions

    _, s, _ = c_s_ws
    other = {**collect_versions(), "cloudpickle": "1.0.0"}
    real_flow = connection.handshake_flow

    def client_with_other_versions(role: str, versions: dict, **kwargs: object) -> object:
        return real_flow(role, other if role == "client" else versions, **kwargs)

    monkeypatch.setattr(connection, "handshake_flow", client_with_other_versions)
    with caplog.at_level("WARNING", logger="shoal"):
        async with Client(s.address, asynchronous=True, set_as_default=False):
            pass
    assert any("cloudpickle" in r.getMessage() for r in caplog.records)


async def test_map_more_tasks_than_one_batch() -> None:
    from shoal.testing.cluster import cluster

    async with (
        cluster(n_workers=2, validate=False) as (s, _),
        Client(s.address, asynchronous=True, set_as_default=False) as c,
    ):
        futures = c.map(inc, range(10_500))  # one message with 10,500 run specs
        assert sum(await c.gather(futures)) == sum(range(1, 10_501))


async def test_shutdown_closes_the_scheduler() -> None:
    from shoal.testing.cluster import cluster

    async with cluster(n_workers=1) as (s, _):
        c = await Client(s.address, asynchronous=True, set_as_default=False)
        await c.shutdown()
        await asyncio.wait_for(s.finished(), 10)
        assert c.status == "closed"
