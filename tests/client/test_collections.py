"""dask's scheduler protocol on shoal: ``Client.get``, ``compute``, ``persist``, futures in
graphs, the default scheduler, annotations, large graphs, large embedded objects.

Every value is checked against dask's synchronous scheduler on the same graph. The
collections themselves (arrays, dataframes, bags, delayed) are in
``test_collections_dask.py``.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import operator
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from dask._task_spec import Alias, DataNode, List, Task, TaskRef
from dask.base import get_scheduler
from dask.core import flatten

from shoal import Client, Future, LocalCluster, get_worker, wait
from shoal.client.collections import futures_of
from shoal.worker.server import Worker

# ---------------------------------------------------------------- helpers


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def total(*xs: int) -> int:
    return sum(xs)


def where(_: Any = None) -> str:
    """The address of the worker running this task."""
    return get_worker().address


def block_where(block: np.ndarray) -> np.ndarray:
    """map_blocks function: one string per block, naming its worker."""
    return np.array([get_worker().address], dtype=object)


def as_lists(x: Any) -> Any:
    """dask's own ``get`` answers nested lists of keys with tuples; compare as lists."""
    if isinstance(x, (list, tuple)):
        return [as_lists(v) for v in x]
    return x


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------- fixtures


def assert_cluster_empty(lc: LocalCluster) -> None:
    """Once every client is gone, the scheduler and the workers hold nothing."""
    assert lc.scheduler is not None
    state = lc.scheduler.state
    assert wait_until(lambda: not state.tasks), f"tasks left: {list(state.tasks.values())[:10]}"
    workers = [w for w in lc.workers.values() if isinstance(w, Worker)]
    assert wait_until(lambda: all(not w.data for w in workers)), [list(w.data) for w in workers]


@pytest.fixture
def c(tcp_cluster: LocalCluster) -> Iterator[Client]:
    """A synchronous client (dask's default scheduler while it runs)."""
    with Client(tcp_cluster) as client:
        yield client
    gc.collect()
    assert dask.config.get("scheduler", None) is None
    assert_cluster_empty(tcp_cluster)


@pytest.fixture
def addrs(c: Client) -> list[str]:
    return sorted(c.nthreads())


# ---------------------------------------------------------------- 1. get: the scheduler protocol


def test_get_legacy_graph_every_key_type_and_nested_keys(c: Client) -> None:
    dsk = {
        "x": 100,
        "y": (inc, "x"),
        ("a", 0, 1): (add, "y", 10),
        7: (inc, "y"),
        2.5: (inc, 7),
        b"b": (inc, 2.5),
        ("t", 3): (add, "x", (sum, ["y", ("a", 0, 1)])),  # a list of keys as an argument
        "lit": (len, "not-a-key"),  # a string that is no key stays a string
    }
    keys = [["y", ("a", 0, 1)], [7, [2.5, b"b"]], ("t", 3), "lit"]
    expected = as_lists(dask.get(dsk, keys))
    assert c.get(dsk, keys) == expected == [[101, 111], [102, [103, 104]], 100 + 101 + 111, 9]
    # one key, not in a list, gives one value; a tuple key is one key, not a list
    assert c.get(dsk, ("a", 0, 1)) == 111
    assert c.get(dsk, 2.5) == 103
    assert c.get(dsk, b"b") == 104


def test_get_task_spec_graph(c: Client) -> None:
    dsk = {
        "data": DataNode("data", [1, 2, 3]),
        ("s", 0): Task(("s", 0), sum, TaskRef("data")),
        ("s", 1): Task(("s", 1), add, TaskRef(("s", 0)), 10),
        "both": Task("both", total, TaskRef(("s", 0)), TaskRef(("s", 1))),
        "listed": Task("listed", list, List(TaskRef("data"), TaskRef("both"), 5)),
        "alias": Alias("alias", "both"),
        "kw": Task("kw", dict, a=TaskRef(("s", 1)), b=3),
    }
    keys = [["both", "listed"], "alias", "kw", ("s", 1)]
    expected = as_lists(dask.get(dsk, keys, scheduler="sync"))
    assert c.get(dsk, keys) == expected == [[22, [[1, 2, 3], 22, 5]], 22, {"a": 16, "b": 3}, 16]


def test_get_high_level_graph_of_an_array(c: Client) -> None:
    x = (da.arange(20, chunks=5).reshape(4, 5).rechunk(2) + 1).T
    dsk, keys = x.__dask_graph__(), x.__dask_keys__()  # keys: a list of lists of tuples
    got = c.get(dsk, keys)
    expected = dask.get(dsk, keys)
    assert len(got) == len(expected) == 3
    for row_got, row_expected in zip(got, expected):
        for a, b in zip(row_got, row_expected):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(da.core.concatenate3(got), np.arange(1, 21).reshape(4, 5).T)


def test_get_keywords_workers_and_unknown(c: Client, addrs: list[str]) -> None:
    dsk = {"a": (where,), "b": (where, "a")}
    assert c.get(dsk, ["a", "b"], workers=[addrs[1]]) == [addrs[1], addrs[1]]
    # keywords other schedulers take (num_workers=...) are accepted and ignored
    assert c.get({"x": (inc, 1)}, "x", num_workers=3) == 2


def test_get_sync_false_returns_futures_in_the_shape_of_keys(c: Client) -> None:
    dsk = {"x": 1, "y": (inc, "x"), "z": (add, "x", "y")}
    futures = c.get(dsk, [["y"], "z"], sync=False)
    assert isinstance(futures[0][0], Future)
    assert isinstance(futures[1], Future)
    assert futures[1].key == "z"
    assert c.gather(futures) == [[2], 3]


def test_get_reraises_task_errors(c: Client) -> None:
    dsk = {"x": 0, "y": (operator.truediv, 1, "x"), "z": (inc, "y")}
    with pytest.raises(ZeroDivisionError):
        c.get(dsk, "z")
    with pytest.raises(ZeroDivisionError):
        dask.get(dsk, "z")


def test_dask_compute_with_scheduler_client_get(tcp_cluster: LocalCluster) -> None:
    rng = np.random.default_rng(0)
    values = rng.random(1_000)
    x = da.from_array(values, chunks=100)
    d = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(10)])
    # not the default scheduler: only scheduler=client.get sends work to shoal
    with Client(tcp_cluster, set_as_default=False) as c:
        assert dask.config.get("scheduler", None) is None
        assert dask.compute(x.sum(), d, scheduler=c.get) == dask.compute(
            x.sum(), d, scheduler="sync"
        )
        where_blocks = x.map_blocks(block_where, chunks=(1,), dtype=object)
        (on,) = dask.compute(where_blocks, scheduler=c.get)
        assert set(on) <= set(c.nthreads())
    assert_cluster_empty(tcp_cluster)


def dask_settings() -> dict[str, Any]:
    """The dask settings a shoal client changes while it is the default."""
    names = ("scheduler", "dataframe.shuffle.method", "array.rechunk.method")
    return {name: dask.config.get(name, None) for name in names}


def test_client_is_dask_default_scheduler_until_closed(tcp_cluster: LocalCluster) -> None:
    before = dask_settings()
    x = da.arange(40, chunks=5)
    blocks = x.map_blocks(block_where, chunks=(1,), dtype=object)
    d = dask.delayed(where)()
    c = Client(tcp_cluster)
    try:
        workers = set(c.nthreads())
        assert dask.config.get("scheduler") is c
        assert get_scheduler() == c.get
        assert dask.config.get("dataframe.shuffle.method") == "tasks"
        assert dask.config.get("array.rechunk.method") == "tasks"
        # x.compute(), dask.compute(...) and x.persist() all run on the workers
        assert set(blocks.compute()) <= workers
        (on_blocks, on_delayed) = dask.compute(blocks, d)
        assert set(on_blocks) <= workers
        assert on_delayed in workers
        persisted = blocks.persist()
        futures = futures_of(persisted)
        assert len(futures) == blocks.npartitions == 8
        assert {f.key for f in futures} == set(blocks.__dask_keys__())
        wait(persisted)
        held = {k for ks in c.has_what().values() for k in ks}
        assert {f.key for f in futures} <= held
        (persisted2,) = dask.persist(x + 1)
        assert len(futures_of(persisted2)) == x.npartitions
        np.testing.assert_array_equal(persisted2.compute(), np.arange(1, 41))
        del persisted, persisted2, futures
    finally:
        c.close()
    assert dask_settings() == before
    assert get_scheduler() != c.get
    # dask works locally again (a task here is not on a worker)
    np.testing.assert_array_equal((x + 1).compute(), np.arange(1, 41))
    with pytest.raises(ValueError, match="outside of a task"):
        d.compute()
    gc.collect()
    assert_cluster_empty(tcp_cluster)


def test_dask_default_scheduler_after_clients_close_out_of_order(
    tcp_cluster: LocalCluster,
) -> None:
    saved = copy.deepcopy(dask.config.config)
    first = Client(tcp_cluster)
    second = Client(tcp_cluster)
    assert dask.config.get("scheduler") is second
    first.close()
    assert dask.config.get("scheduler") is second
    second.close()
    try:
        assert dask.config.get("scheduler", None) is None, "dask still uses a closed client"
    finally:
        # whatever happened, leave dask's config as the other tests expect it
        dask.config.config.clear()
        dask.config.config.update(saved)
    gc.collect()
    assert_cluster_empty(tcp_cluster)


def test_scheduler_may_be_the_client_object(tcp_cluster: LocalCluster) -> None:
    x = da.arange(10, chunks=3)
    with Client(tcp_cluster, set_as_default=False) as c:
        assert dask.compute(x.sum(), scheduler=c) == (45,)
        with dask.config.set(scheduler=c):
            assert x.sum().compute() == 45
            assert futures_of(x.persist())
    gc.collect()
    assert_cluster_empty(tcp_cluster)


async def test_dask_compute_with_an_asynchronous_default_client_says_so(c_s_ws) -> None:
    x = da.arange(10, chunks=5)
    error: tuple[type, str] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # today: a never-awaited coroutine
        try:
            x.sum().compute()
        except Exception as e:
            error = (type(e), str(e))  # not e itself: its frames hold the coroutine
        gc.collect()
    assert error is not None and error[0] is RuntimeError, error
    assert "asynchronous" in error[1]


# ---------------------------------------------------------------- 2. compute and persist


def test_compute_returns_futures(c: Client) -> None:
    rng = da.random.default_rng(0)
    x = rng.random((60, 40), chunks=(20, 20))
    total_sum, col_mean = x.sum(), x.mean(axis=0)
    expected_sum, expected_mean = dask.compute(total_sum, col_mean, scheduler="sync")

    fut = c.compute(total_sum)
    assert isinstance(fut, Future)
    assert fut.result() == pytest.approx(expected_sum, rel=1e-12)

    futs = c.compute([total_sum, col_mean])
    assert isinstance(futs, list) and all(isinstance(f, Future) for f in futs)
    got_sum, got_mean = c.gather(futs)
    assert got_sum == pytest.approx(expected_sum, rel=1e-12)
    np.testing.assert_allclose(got_mean, expected_mean, rtol=1e-12)

    # a tuple gives a tuple; sync=True gives values
    as_tuple = c.compute((total_sum, col_mean))
    assert isinstance(as_tuple, tuple) and isinstance(as_tuple[1], Future)
    values = c.compute([total_sum, col_mean], sync=True)
    assert values[0] == pytest.approx(expected_sum, rel=1e-12)
    np.testing.assert_allclose(values[1], expected_mean, rtol=1e-12)
    np.testing.assert_allclose(c.compute(x, sync=True), x.compute(scheduler="sync"))

    # the graph as it is, unoptimized
    unopt = c.compute(col_mean, optimize_graph=False)
    np.testing.assert_allclose(unopt.result(), expected_mean, rtol=1e-12)

    # a delayed value and a plain (non-dask) value
    d = dask.delayed(add)(dask.delayed(inc)(1), 10)
    assert c.compute(d).result() == 12
    assert c.compute([d, 5], sync=True) == [12, 5]


def test_persist_returns_a_collection_backed_by_futures(c: Client) -> None:
    rng = da.random.default_rng(1)
    x = rng.normal(size=(80, 30), chunks=(20, 30))
    y = x + 1
    persisted = c.persist(y)
    assert isinstance(persisted, da.Array)
    futures = futures_of(persisted)
    assert len(futures) == y.npartitions == 4
    assert all(isinstance(f, Future) for f in futures)
    assert {f.key for f in futures} == set(flatten(y.__dask_keys__()))
    done, not_done = wait(persisted)
    assert not not_done and len(done) == 4

    who_has = c.who_has(persisted)
    assert set(who_has) == {f.key for f in futures}
    assert all(who_has[f.key] for f in futures)
    has_what = c.has_what()
    assert set(has_what) == set(c.nthreads())
    assert {f.key for f in futures} <= {k for ks in has_what.values() for k in ks}

    # the persisted graph is only the futures: nothing is recomputed
    assert len(persisted.__dask_graph__()) == 4

    expected = y.compute(scheduler="sync")
    np.testing.assert_allclose(persisted.compute(), expected)
    np.testing.assert_allclose((persisted * 2).sum(axis=0).compute(), (expected * 2).sum(axis=0))
    np.testing.assert_allclose(c.compute(persisted.T @ persisted).result(), expected.T @ expected)

    # a list persists to a list; the persisted array survives the loss of the original
    a, b = c.persist([x.sum(axis=1), x[:10]])
    del persisted, x, y
    gc.collect()
    np.testing.assert_allclose(a.compute(), expected.sum(axis=1) - 30)
    np.testing.assert_allclose(b.compute(), expected[:10] - 1)


def test_persist_a_persisted_collection(c: Client) -> None:
    x = da.arange(30, chunks=10) ** 2
    p = c.persist(x)
    again = c.persist(p)  # nothing left to compute: the same keys, wanted once more
    assert {f.key for f in futures_of(again)} == {f.key for f in futures_of(p)}
    del p
    gc.collect()
    np.testing.assert_array_equal(again.compute(), np.arange(30) ** 2)


def failing_block(block: np.ndarray) -> np.ndarray:
    if block[0] >= 20:
        raise ValueError(f"bad block starting at {block[0]}")
    return block


def test_errors_in_collections_reraise_with_their_type(c: Client) -> None:
    x = da.arange(30, chunks=10).map_blocks(failing_block)
    with pytest.raises(ValueError, match="bad block starting at 20"):
        x.compute()
    fut = c.compute(x.sum())
    with pytest.raises(ValueError, match="bad block starting at 20"):
        fut.result()
    assert fut.status == "error"
    p = c.persist(x)
    done, _ = wait(p)
    assert sorted(f.status for f in done) == ["error", "finished", "finished"]
    with pytest.raises(ValueError, match="bad block starting at 20"):
        p.compute()
    # the blocks that worked are fine
    np.testing.assert_array_equal(x[:20].compute(), np.arange(20))


def test_persist_delayed_and_dask_persist(c: Client) -> None:
    d = dask.delayed(add)(dask.delayed(inc)(1), 10)
    p = c.persist(d)
    assert len(futures_of(p)) == 1
    wait(p)
    assert p.key in c.who_has(p)
    assert p.compute() == 12
    assert (p + 1).compute() == 13
    (q,) = dask.persist(dask.delayed(inc)(p))
    assert futures_of(q)
    assert q.compute() == 13


def test_graph_using_a_future_already_on_the_cluster(c: Client) -> None:
    fut = c.submit(inc, 1)
    fut2 = c.submit(inc, 10)
    # the future under its own key, and under another name (an alias of it)
    assert c.get({"y": (inc, fut.key), fut.key: fut}, "y") == 3
    assert c.get({"w": fut2, "z": (add, "w", fut.key), fut.key: fut}, "z") == 13
    # a future object inside a legacy task, and as a whole task
    assert c.get({"y": (inc, fut), "v": (add, "y", fut2)}, ["y", "v"]) == [3, 14]
    assert c.get({"copy": fut}, "copy") == 2
    # a task-spec graph referring to the future's key
    assert c.get({"t": Task("t", add, TaskRef(fut.key), 5)}, "t") == 7
    # dask.delayed calls taking futures: positional, keyword, inside a list
    assert dask.delayed(inc)(fut).compute() == 3
    assert c.compute(dask.delayed(add)(fut, y=fut2)).result() == 13
    assert dask.delayed(sum)([fut, fut2, 100]).compute() == 113
    nested = dask.delayed(add)(dask.delayed(inc)(fut), dask.delayed(inc)(fut2))
    assert c.compute(nested, sync=True) == dask.delayed(add)(3, 12).compute(scheduler="sync")
    # the futures are still theirs, untouched
    assert c.gather([fut, fut2]) == [2, 11]


def test_graph_using_a_persisted_collection_with_more_work(c: Client) -> None:
    x = da.random.default_rng(3).random(100, chunks=10)
    p = c.persist(x)
    wait(p)
    z = (p[::-1] + p).cumsum(axis=0)
    expected = (x[::-1] + x).cumsum(axis=0).compute(scheduler="sync")
    np.testing.assert_allclose(c.compute(z, sync=True), expected)
    np.testing.assert_allclose(z.compute(), expected)


async def test_async_client_get_compute_persist(c_s_ws) -> None:
    """The same API awaited; the scheduler and the workers show where the keys are."""
    c, s, ws = c_s_ws
    dsk = {"a": 1, ("b", 0): (inc, "a"), ("b", 1): (add, "a", ("b", 0))}
    assert await c.get(dsk, [("b", 0), [("b", 1)]]) == as_lists(
        dask.get(dsk, [("b", 0), [("b", 1)]])
    )
    x = da.random.default_rng(11).random((40, 40), chunks=10)
    expected = x.sum(axis=0).compute(scheduler="sync")
    fut = c.compute(x.sum(axis=0))
    assert isinstance(fut, Future)
    np.testing.assert_allclose(await fut, expected, rtol=1e-12)
    np.testing.assert_allclose(await c.compute(x.sum(axis=0), sync=True), expected, rtol=1e-12)

    p = c.persist(x)
    keys = {f.key for f in futures_of(p)}
    assert keys == set(flatten(x.__dask_keys__()))
    await c.gather(futures_of(p))
    assert all(s.state.tasks[k].state == "memory" for k in keys)
    on_workers = {k for w in ws for k in w.data}
    assert keys <= on_workers
    total_fut = c.compute(p.sum())
    assert await total_fut == pytest.approx(x.sum().compute(scheduler="sync"), rel=1e-12)
    # once released, the keys leave the scheduler and the workers
    del p, total_fut, fut
    gc.collect()
    for _ in range(500):
        if not s.state.tasks and not any(w.data for w in ws):
            break
        await asyncio.sleep(0.01)
    assert not s.state.tasks
    assert not any(w.data for w in ws)


# ---------------------------------------------------------------- 7. two clients


def test_two_clients_share_the_cluster(tcp_cluster: LocalCluster) -> None:
    x = da.random.default_rng(7).random((200, 50), chunks=(25, 50))
    expected_x = x.compute(scheduler="sync")
    with Client(tcp_cluster) as c1, Client(tcp_cluster, set_as_default=False) as c2:
        # the same keys persisted by both, plus something of each
        p1 = c1.persist(x)
        p2 = c2.persist(x)
        s1 = c1.compute(x.sum())
        s2 = c2.compute(x.mean(axis=0))
        assert s1.result() == pytest.approx(expected_x.sum(), rel=1e-12)
        np.testing.assert_allclose(s2.result(), expected_x.mean(axis=0), rtol=1e-12)
        wait(p1)
        wait(p2)
        # the first client lets go of everything; the second still has its data
        keys = {f.key for f in futures_of(p2)}
        for f in futures_of(p1):
            f.release()
        del p1, s1
        gc.collect()
        c1.close()
        assert set(c2.who_has(p2)) == keys
        assert all(c2.who_has(p2).values())
        np.testing.assert_allclose(c2.compute(p2, sync=True), expected_x)
        np.testing.assert_allclose(
            c2.compute((p2 * 3).std(axis=1), sync=True), (expected_x * 3).std(axis=1)
        )
        del p2, s2
    gc.collect()
    assert_cluster_empty(tcp_cluster)


def test_two_clients_compute_the_same_graph_at_once(tcp_cluster: LocalCluster) -> None:
    leaves = [dask.delayed(inc)(i) for i in range(200)]
    total_d = dask.delayed(total)(*leaves)
    expected = total_d.compute(scheduler="sync")
    with Client(tcp_cluster) as c1, Client(tcp_cluster, set_as_default=False) as c2:
        f1 = c1.compute(total_d)
        f2 = c2.compute(total_d)
        assert f1.key == f2.key
        f1.release()  # the first one gives up at once; the second still gets it
        del f1
        assert f2.result() == expected
    gc.collect()
    assert_cluster_empty(tcp_cluster)


def test_threads_compute_through_the_default_client_at_once(c: Client) -> None:
    """dask.compute from many threads: different graphs, and the very same graph."""

    def job(seed: int) -> tuple[float, float]:
        x = da.random.default_rng(seed).random((80, 80), chunks=20)
        y = (x @ x.T).sum()
        return y.compute(), y.compute(scheduler="sync")

    with ThreadPoolExecutor(6) as pool:
        for got, expected in pool.map(job, range(12)):
            assert got == pytest.approx(expected, rel=1e-12)

    x = da.random.default_rng(99).random((200, 200), chunks=20)
    expected_std = x.std().compute(scheduler="sync")
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: x.std().compute(), range(12)))
    assert results == pytest.approx([expected_std] * 12, rel=1e-12)


# ---------------------------------------------------------------- 8. annotations


def flaky(counter_file: str, x: int) -> int:
    """Fail the first two calls (counted in a file), then succeed."""
    path = Path(counter_file)
    calls = int(path.read_text()) if path.exists() else 0
    path.write_text(str(calls + 1))
    if calls < 2:
        raise RuntimeError(f"flaky failure number {calls + 1}")
    return x + 1


def test_annotate_retries(c: Client, tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    with dask.annotate(retries=2):
        d = dask.delayed(flaky, pure=False)(str(counter), 41)
    assert d.compute() == 42
    assert counter.read_text() == "3"
    # without retries the first failure is final
    counter2 = tmp_path / "calls2"
    d2 = dask.delayed(flaky, pure=False)(str(counter2), 1)
    with pytest.raises(RuntimeError, match="flaky failure number 1"):
        d2.compute()
    # and retries= of compute itself applies to the whole graph
    counter3 = tmp_path / "calls3"
    d3 = dask.delayed(flaky, pure=False)(str(counter3), 1)
    assert c.compute(d3, retries=2).result() == 2


def test_annotate_workers_puts_tasks_there(c: Client, addrs: list[str]) -> None:
    for target in addrs:
        with dask.annotate(workers=[target]):
            ds = [dask.delayed(where, pure=False)(i) for i in range(8)]
        assert set(dask.compute(*ds)) == {target}
    # an array graph, unoptimized (dask's low-level fusion drops layer annotations)
    with dask.annotate(workers=[addrs[1]]):
        blocks = da.ones(12, chunks=2).map_blocks(block_where, chunks=(1,), dtype=object)
    on = c.compute(blocks, optimize_graph=False).result()
    assert set(on) == {addrs[1]}
    with dask.config.set({"optimization.fuse.active": False}):
        assert set(blocks.compute()) == {addrs[1]}
    # the workers= keyword of compute and persist
    on2 = c.compute(dask.delayed(where, pure=False)(), workers=[addrs[0]]).result()
    assert on2 == addrs[0]
    p = c.persist(
        da.zeros(12, chunks=3).map_blocks(block_where, chunks=(1,), dtype=object),
        workers=addrs[1],
    )
    assert set(p.compute()) == {addrs[1]}
    assert {w for ws in c.who_has(p).values() for w in ws} == {addrs[1]}


def test_annotate_priority_is_accepted(c: Client) -> None:
    with dask.annotate(priority=10):
        high = dask.delayed(inc)(1)
        x = da.arange(10, chunks=5) * 2
    with dask.annotate(priority=-5):
        low = dask.delayed(inc)(2)
    assert dask.compute(high, low, x.sum()) == dask.compute(high, low, x.sum(), scheduler="sync")


async def test_annotations_are_recorded_on_the_scheduler(c_s_ws) -> None:
    """priority=, retries=, workers= and resources= reach the scheduler's task state."""
    c, s, ws = c_s_ws
    gpu = await Worker(s.address, nthreads=1, name="gpu", resources={"GPU": 2}).start()
    try:
        with dask.annotate(priority=7, retries=3):
            p = dask.delayed(inc)(1)
        with dask.annotate(resources={"GPU": 1}):
            r = dask.delayed(where, pure=False)()
        with dask.annotate(workers=[ws[1].address]):
            w = dask.delayed(where, pure=False)()
        with dask.annotate(workers=["tcp://127.0.0.1:9"], allow_other_workers=True):
            loose = dask.delayed(where, pure=False)()
        fp, fr, fw, fl = c.compute([p, r, w, loose])
        assert await fp == 2
        assert await fr == gpu.address  # only that worker has a GPU
        assert await fw == ws[1].address
        assert await fl in {w.address for w in [*ws, gpu]}  # the named worker is not there
        tasks = s.state.tasks
        assert tasks[fp.key].priority[0] == -7
        assert tasks[fp.key].retries == 3
        assert tasks[fr.key].resources == {"GPU": 1}
        assert tasks[fw.key].worker_restrictions == (ws[1].address,)
        assert tasks[fw.key].allow_other_workers is False
        assert tasks[fl.key].allow_other_workers is True
    finally:
        await gpu.close()


# ---------------------------------------------------------------- 9. graphs that scale


@pytest.mark.timeout(240)
def test_get_100_000_task_graph(c: Client) -> None:
    n = 100_000
    dsk: dict[Any, Any] = {("x", i): (inc, i) for i in range(n)}
    dsk["total"] = (total, *[("x", i) for i in range(0, n, n // 100)])
    expected = sum(i + 1 for i in range(0, n, n // 100))
    start = time.perf_counter()
    assert c.get(dsk, "total") == expected
    print(f"100,000-task graph through client.get: {time.perf_counter() - start:.1f} s")


def pair_sum(a: int, b: int) -> int:
    return a + b


def test_delayed_tree_through_the_client(c: Client) -> None:
    level = [dask.delayed(inc)(i) for i in range(2_000)]
    while len(level) > 1:
        pairs = [dask.delayed(pair_sum)(a, b) for a, b in zip(level[::2], level[1::2])]
        level = pairs + (level[-1:] if len(level) % 2 else [])
    assert level[0].compute() == level[0].compute(scheduler="sync") == sum(range(1, 2_001))


async def test_graph_over_the_frame_limit_does_not_hang(c_s_ws, monkeypatch) -> None:
    from shoal.comm import connection
    from shoal.protocol.frames import Limits

    _, s, _ = c_s_ws
    monkeypatch.setattr(connection, "DEFAULT_LIMITS", Limits(max_frames=50))
    async with Client(s.address, asynchronous=True, set_as_default=False) as c2:
        dsk: dict[Any, Any] = {("x", i): (inc, i) for i in range(100)}
        dsk["total"] = (total, *[("x", i) for i in range(100)])
        fut = c2.get(dsk, "total", sync=False)
        # not a hang (TimeoutError) but a clear error that names the limit
        with pytest.raises(Exception, match="max_frames"):
            await asyncio.wait_for(c2.gather(fut), 10)


# ---------------------------------------------------------------- 10. large objects in graphs


def test_warns_on_large_object_in_a_task(c: Client) -> None:
    big = np.ones(2_000_000)  # 16 MB
    d = dask.delayed(len)(big)
    with pytest.warns(UserWarning, match="Large object of size") as record:
        assert d.compute() == 2_000_000
    (w,) = [r for r in record if "Large object" in str(r.message)]
    assert w.filename == __file__  # the line that computes the graph
    text = str(w.message)
    assert repr(d.key) in text
    assert "15.26 MiB" in text
    # a legacy graph holding the data under its own key names that key
    with pytest.warns(UserWarning, match=r"Large object of size 15\.26 MiB.*'data'"):
        assert c.get({"data": big, "n": (len, "data")}, "n") == 2_000_000


def test_no_warning_for_small_objects(c: Client) -> None:
    small = np.ones(1_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dask.delayed(len)(small).compute() == 1_000
        assert c.get({"data": small, "n": (len, "data")}, "n") == 1_000
        assert c.compute(da.from_array(np.ones(100_000), chunks=10_000).sum(), sync=True) == 1e5


def _scaled(x: float, factor: float = 1.0) -> float:
    return x * factor


def test_plain_function_tasks_travel_compact() -> None:
    from shoal.client.collections import _dumps_node
    from shoal.protocol.runspec import loads_run_spec

    def compact(node: Any) -> bool:
        return bytes(_dumps_node(node, {}).frames[0][:1]) == b"\x01"

    factor = 3.0

    def closure(x: float) -> float:
        return x * factor

    simple = Task("b", operator.add, TaskRef("a"), 2)
    assert compact(simple)
    assert loads_run_spec(_dumps_node(simple, {}))({"a": 40}) == 42
    assert compact(Task("c", _scaled, TaskRef(("x", 0)), 2.0))
    # anything else is the node itself, pickled, and runs as dask runs it
    for node in (
        Task("d", _scaled, TaskRef("a"), factor=2.0),  # keywords
        Task("e", closure, TaskRef("a")),  # a closure: its cells may change
        Task("f", sum, List(TaskRef("a"), 1)),  # a nested container
        Task("g", _scaled, Task("h", operator.neg, 1)),  # an inlined task
    ):
        assert not compact(node)
        assert loads_run_spec(_dumps_node(node, {}))({"a": 5}) == node({"a": 5})


def test_each_graph_pickles_its_functions_afresh(c: Client) -> None:
    # a method travels with its object (and a __main__ function with its globals): a
    # later graph sees the object as it is then, as with dask's own schedulers
    table = {"k": 1}
    graph = {"v": Task("v", table.get, "k")}
    assert c.get(graph, "v") == 1
    table["k"] = 99
    assert c.get(graph, "v") == 99
