"""Every dask collection on shoal: arrays, dataframes, bags, delayed.

Each result is compared with dask's synchronous scheduler on the same collection (same
seeded data, same graph), and each kind of collection is shown to run on the workers.
"""

from __future__ import annotations

import gc
import operator
import time
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from shoal import Client, LocalCluster, get_worker, wait
from shoal.client.collections import futures_of
from shoal.worker.server import Worker


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def c(tcp_cluster: LocalCluster) -> Iterator[Client]:
    """A synchronous client: dask's default scheduler while it runs."""
    with Client(tcp_cluster) as client:
        assert dask.config.get("scheduler") is client
        yield client
    gc.collect()
    # nothing of the graphs is left on the cluster
    assert tcp_cluster.scheduler is not None
    state = tcp_cluster.scheduler.state
    assert wait_until(lambda: not state.tasks), list(state.tasks.values())[:10]
    workers = [w for w in tcp_cluster.workers.values() if isinstance(w, Worker)]
    assert wait_until(lambda: all(not w.data for w in workers))


def worker_address() -> str:
    return get_worker().address


# ---------------------------------------------------------------- 3. dask.array


@pytest.fixture
def x() -> da.Array:
    """A seeded random array of 4 x 3 chunks."""
    return da.random.default_rng(0).random((200, 150), chunks=(50, 50))


def test_array_reductions(c: Client, x: da.Array) -> None:
    exprs = [x.sum(), x.mean(), x.std(), x.sum(axis=0), x.mean(axis=1), x.std(axis=0), x.max()]
    got = dask.compute(*exprs)
    expected = dask.compute(*exprs, scheduler="sync")
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12)
    # and the numbers are right, not only equal to dask's
    values = x.compute(scheduler="sync")
    np.testing.assert_allclose(got[2], values.std(), rtol=1e-12)
    # the same through client.compute
    np.testing.assert_allclose(c.compute(x.std(axis=0)).result(), expected[5], rtol=1e-12)


def test_array_dot_transpose(c: Client, x: da.Array) -> None:
    y = x.dot(x.T)
    got = y.compute()
    assert got.shape == (200, 200)
    np.testing.assert_allclose(got, y.compute(scheduler="sync"), rtol=1e-12)
    values = x.compute(scheduler="sync")
    np.testing.assert_allclose(got, values @ values.T, rtol=1e-12)


def test_array_rechunk(c: Client, x: da.Array) -> None:
    assert dask.config.get("array.rechunk.method") == "tasks"
    for chunks in [(200, 10), (30, 150), (64, 64), (7, 150)]:
        y = x.rechunk(chunks)
        got = y.compute()
        np.testing.assert_array_equal(got, y.compute(scheduler="sync"))
    y = x.rechunk((7, 150))
    p = c.persist(y)
    assert len(futures_of(p)) == y.npartitions == 29
    np.testing.assert_array_equal(c.compute(p, sync=True), x.compute(scheduler="sync"))


def test_array_random_with_a_seed(c: Client) -> None:
    rng = da.random.default_rng(0)
    a = rng.normal(10, 2, size=(1_000, 20), chunks=(100, 20))
    rs = da.random.RandomState(0)
    b = rs.randint(0, 100, size=500, chunks=50)
    got_a, got_b = dask.compute(a, b)
    exp_a, exp_b = dask.compute(a, b, scheduler="sync")
    np.testing.assert_array_equal(got_a, exp_a)
    np.testing.assert_array_equal(got_b, exp_b)
    assert got_a.mean() == pytest.approx(10, abs=0.1)
    # the same seed gives the same numbers again
    np.testing.assert_array_equal(
        da.random.default_rng(0).normal(10, 2, size=(1_000, 20), chunks=(100, 20)).compute(),
        got_a,
    )


def test_array_runs_on_the_workers(c: Client, x: da.Array) -> None:
    on = x.map_blocks(
        lambda b: np.array([[worker_address()]], dtype=object), chunks=(1, 1), dtype=object
    ).compute()
    assert on.shape == (4, 3)
    assert set(on.ravel()) <= set(c.nthreads())


def test_array_persist_then_more_work(c: Client, x: da.Array) -> None:
    p = x.persist()
    assert len(futures_of(p)) == 12
    wait(p)
    z = ((p - p.mean(axis=0)) / p.std(axis=0)).T @ p
    expected = ((x - x.mean(axis=0)) / x.std(axis=0)).T @ x
    np.testing.assert_allclose(z.compute(), expected.compute(scheduler="sync"), rtol=1e-10)


# ---------------------------------------------------------------- 4. dask.dataframe


@pytest.fixture
def ts() -> dd.DataFrame:
    """Seeded timeseries: 10 days, one partition a day, 240 rows."""
    return dask.datasets.timeseries(start="2000-01-01", end="2000-01-11", freq="1h", seed=42)


def sort_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_index(kind="stable")


def test_dataframe_groupby_agg(c: Client, ts: dd.DataFrame) -> None:
    g = ts.groupby("name").agg({"x": "sum", "y": ["mean", "max"], "id": "count"})
    got = g.compute()
    expected = g.compute(scheduler="sync")
    pd.testing.assert_frame_equal(sort_frame(got), sort_frame(expected))
    # checked against pandas too
    pdf = ts.compute(scheduler="sync")
    ref = pdf.groupby("name").agg({"x": "sum", "y": ["mean", "max"], "id": "count"})
    pd.testing.assert_frame_equal(sort_frame(got), sort_frame(ref), check_exact=False)
    series = ts.groupby("name").x.mean()
    pd.testing.assert_series_equal(
        c.compute(series).result().sort_index(), series.compute(scheduler="sync").sort_index()
    )


def tag_worker(part: pd.DataFrame) -> pd.Series:
    return pd.Series([worker_address()] * len(part), index=part.index, dtype=object)


def test_dataframe_set_index_shuffles_with_tasks(c: Client, ts: dd.DataFrame) -> None:
    # while a shoal client is dask's default, dask picks the task-based shuffle
    assert dask.config.get("dataframe.shuffle.method") == "tasks"
    indexed = ts.set_index("id")
    names = {str(k[0] if isinstance(k, tuple) else k) for k in indexed.__dask_graph__()}
    assert any("taskshuffle" in n for n in names)
    assert not any("diskshuffle" in n or "p2p" in n for n in names)

    got = indexed.compute()
    expected = indexed.compute(scheduler="sync")
    assert got.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(sort_frame(got), sort_frame(expected))
    assert len(got) == 240

    # the shuffled partitions are made on the workers
    on = indexed.map_partitions(tag_worker, meta=("w", object)).compute()
    assert set(on) <= set(c.nthreads())

    # sorting by a float column (divisions from quantiles computed on the cluster too)
    by_x = ts.set_index("x", npartitions=4)
    pd.testing.assert_frame_equal(by_x.compute(), by_x.compute(scheduler="sync"))


def test_dataframe_merge(c: Client) -> None:
    rng = np.random.default_rng(5)
    left = pd.DataFrame({"k": rng.integers(0, 50, 400), "a": rng.random(400)})
    right = pd.DataFrame({"k": np.arange(0, 60, 2), "b": rng.random(30)})
    dl = dd.from_pandas(left, npartitions=5)
    dr = dd.from_pandas(right, npartitions=3)
    for how in ("inner", "left"):
        m = dl.merge(dr, on="k", how=how, shuffle_method="tasks")
        cols = ["k", "a", "b"]
        got = m.compute().sort_values(cols).reset_index(drop=True)
        expected = m.compute(scheduler="sync").sort_values(cols).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected)
        ref = left.merge(right, on="k", how=how).sort_values(cols).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, ref)
    # default method (chosen by dask under a shoal client), a broadcastable side
    m = dl.merge(dr, on="k")
    got = c.compute(m, sync=True).sort_values(["k", "a"]).reset_index(drop=True)
    expected = m.compute(scheduler="sync").sort_values(["k", "a"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


def add_z(part: pd.DataFrame, factor: float) -> pd.DataFrame:
    return part.assign(z=part.x * factor + part.y)


def test_dataframe_map_partitions(c: Client, ts: dd.DataFrame) -> None:
    mapped = ts.map_partitions(add_z, 3.0)
    got = mapped.compute()
    expected = mapped.compute(scheduler="sync")
    pd.testing.assert_frame_equal(got, expected)
    assert got.z.tolist() == pytest.approx((expected.x * 3.0 + expected.y).tolist())
    lengths = ts.map_partitions(len).compute()
    assert list(lengths) == list(ts.map_partitions(len).compute(scheduler="sync")) == [24] * 10


def test_dataframe_from_pandas_persist_and_reduce(c: Client) -> None:
    rng = np.random.default_rng(9)
    pdf = pd.DataFrame(
        {"g": rng.integers(0, 5, 1_000), "v": rng.normal(size=1_000), "w": rng.random(1_000)}
    )
    ddf = dd.from_pandas(pdf, npartitions=8)
    p = c.persist(ddf)
    assert len(futures_of(p)) == 8
    wait(p)

    def work(df: dd.DataFrame) -> tuple[Any, ...]:
        return (df.v * df.w).sum(), df.groupby("g").v.std(), df.w.quantile(0.5), df.describe()

    got = dask.compute(*work(p))
    # a persisted collection refers to data on the cluster: compare with the original
    expected = dask.compute(*work(ddf), scheduler="sync")
    assert got[0] == pytest.approx(expected[0], rel=1e-12)
    pd.testing.assert_series_equal(got[1].sort_index(), expected[1].sort_index())
    assert got[2] == pytest.approx(expected[2])
    pd.testing.assert_frame_equal(got[3], expected[3])
    assert got[0] == pytest.approx((pdf.v * pdf.w).sum(), rel=1e-12)


# ---------------------------------------------------------------- 5. dask.bag


def is_odd(n: int) -> bool:
    return n % 2 == 1


def test_bag_map_filter_fold_frequencies(c: Client) -> None:
    b = db.from_sequence(range(1_000), npartitions=8)
    pipeline = b.map(lambda n: n * 3).filter(is_odd)
    folded = pipeline.fold(operator.add)
    folded_with_initial = pipeline.fold(operator.add, initial=100)
    mapped = pipeline.map(lambda n: n % 7).frequencies(sort=True)
    items = pipeline.take(5, npartitions=-1)
    got = dask.compute(folded, folded_with_initial, mapped, pipeline)
    expected = dask.compute(folded, folded_with_initial, mapped, pipeline, scheduler="sync")
    assert got == expected
    assert got[0] == sum(n * 3 for n in range(1_000) if (n * 3) % 2)
    assert got[1] == got[0] + 8 * 100  # dask adds ``initial`` once per partition
    assert items == (3, 9, 15, 21, 27)

    words = db.from_sequence(["shoal", "dask", "bag", "shoal", "dask", "shoal"] * 50, npartitions=4)
    freqs = dict(words.frequencies().compute())
    assert freqs == dict(words.frequencies().compute(scheduler="sync"))
    assert freqs == {"shoal": 150, "dask": 100, "bag": 50}

    on = db.from_sequence(range(16), npartitions=4).map(lambda _: worker_address()).compute()
    assert set(on) <= set(c.nthreads())

    persisted = c.persist(pipeline)
    assert len(futures_of(persisted)) == 8
    assert persisted.fold(operator.add).compute() == got[0]
    assert persisted.compute() == expected[3]


# ---------------------------------------------------------------- 6. dask.delayed


def pair_sum(a: int, b: int) -> int:
    return a + b


def leaf(i: int) -> int:
    return i * i


def test_delayed_tree_of_1000_leaves(c: Client) -> None:
    level = [dask.delayed(leaf)(i) for i in range(1_000)]
    while len(level) > 1:
        pairs = [dask.delayed(pair_sum)(a, b) for a, b in zip(level[::2], level[1::2])]
        level = pairs + (level[-1:] if len(level) % 2 else [])
    (root,) = level
    expected = sum(i * i for i in range(1_000))
    assert root.compute(scheduler="sync") == expected
    assert root.compute() == expected
    assert c.compute(root).result() == expected
    p = c.persist(root)
    assert p.compute() == expected
    assert dask.delayed(worker_address)().compute() in c.nthreads()
