"""dask collections on worker *processes*: graphs, data and results cross process borders.

Worker processes can't import this test module, so the functions sent to them are
lambdas (pickled by value) or come from installed packages.
"""

from __future__ import annotations

import operator
import os

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from shoal import Client, wait
from shoal.client.collections import futures_of


@pytest.fixture
def c(process_client: Client) -> Client:
    return process_client


def test_tasks_run_in_the_worker_processes(c: Client) -> None:
    pids = da.zeros(8, chunks=1).map_blocks(
        lambda b: np.array([os.getpid()]), chunks=(1,), dtype=int
    )
    on = set(pids.compute().tolist())
    assert on and os.getpid() not in on
    worker_pids = set(c.run(os.getpid).values())
    assert on <= worker_pids


def test_array_across_processes(c: Client) -> None:
    x = da.random.default_rng(0).random((300, 200), chunks=(75, 50))
    exprs = [x.dot(x.T).sum(), x.std(axis=0), x.rechunk((300, 20)).mean(axis=1)]
    for got, expected in zip(dask.compute(*exprs), dask.compute(*exprs, scheduler="sync")):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    p = c.persist(x)
    wait(p)
    keys = {f.key for f in futures_of(p)}
    assert set(c.who_has(p)) == keys
    np.testing.assert_allclose((p.T @ p).compute(), (x.T @ x).compute(scheduler="sync"), rtol=1e-12)


def test_dataframe_across_processes(c: Client) -> None:
    assert dask.config.get("dataframe.shuffle.method") == "tasks"
    ts = dask.datasets.timeseries(start="2000-01-01", end="2000-01-08", freq="1h", seed=3)
    indexed = ts.set_index("id")
    pd.testing.assert_frame_equal(
        indexed.compute().sort_index(kind="stable"),
        indexed.compute(scheduler="sync").sort_index(kind="stable"),
    )
    g = ts.groupby("name").agg({"x": "sum", "y": "max"})
    pd.testing.assert_frame_equal(
        g.compute().sort_index(), g.compute(scheduler="sync").sort_index()
    )
    rng = np.random.default_rng(4)
    left = dd.from_pandas(
        pd.DataFrame({"k": rng.integers(0, 30, 300), "a": rng.random(300)}), npartitions=4
    )
    right = dd.from_pandas(pd.DataFrame({"k": np.arange(30), "b": rng.random(30)}), 3)
    m = left.merge(right, on="k", shuffle_method="tasks")
    cols = ["k", "a", "b"]
    pd.testing.assert_frame_equal(
        m.compute().sort_values(cols).reset_index(drop=True),
        m.compute(scheduler="sync").sort_values(cols).reset_index(drop=True),
    )
    mapped = ts.map_partitions(lambda part: part.assign(z=part.x * 2))
    pd.testing.assert_frame_equal(mapped.compute(), mapped.compute(scheduler="sync"))


def test_bag_and_delayed_across_processes(c: Client) -> None:
    b = db.from_sequence(range(500), npartitions=5).map(lambda n: n % 13).filter(bool)
    out = (b.fold(operator.add), b.frequencies(sort=True))
    assert dask.compute(*out) == dask.compute(*out, scheduler="sync")

    level = [dask.delayed(lambda i: i * i)(i) for i in range(256)]
    while len(level) > 1:
        level = [dask.delayed(operator.add)(a, b) for a, b in zip(level[::2], level[1::2])]
    assert level[0].compute() == sum(i * i for i in range(256))
