"""Published datasets: kept on the scheduler for other clients until unpublished."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence

import dask.array as da
import numpy as np
import pytest

from shoal import Client, LocalCluster, futures_of


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, nanny=False) as lc:
        yield lc


def inc(x: int) -> int:
    return x + 1


def wait_until_gone(client: Client, keys: Sequence[object]) -> None:
    deadline = time.monotonic() + 10
    while any(k in client.who_has() for k in keys) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_dataset_outlives_its_publisher_and_is_read_by_a_second_client(
    cluster: LocalCluster,
) -> None:
    with Client(cluster) as first:
        x = da.arange(100, chunks=10).persist()
        total = first.submit(inc, 41)
        first.publish_dataset(x, name="x")
        first.publish_dataset(total=total, label="just a string")
        keys = [total.key, *(f.key for f in futures_of(x))]
        assert len(keys) == 11
        assert sorted(first.list_datasets()) == ["label", "total", "x"]
    gc.collect()
    with Client(cluster) as second:
        assert sorted(second.list_datasets()) == ["label", "total", "x"]
        y = second.get_dataset("x")
        np.testing.assert_array_equal(y.compute(), np.arange(100))
        assert second.get_dataset("total").result() == 42
        assert second.datasets["label"] == "just a string"
        assert "total" in second.datasets and len(second.datasets) == 3
        del y
        second.unpublish_dataset("x")
        del second.datasets["label"]
        assert list(second.datasets) == ["total"]
        second.unpublish_dataset("total")
        gc.collect()
        wait_until_gone(second, keys)
        assert not any(k in second.who_has() for k in keys)


def test_dataset_errors(cluster: LocalCluster) -> None:
    with Client(cluster) as c:
        with pytest.raises(KeyError, match="Dataset 'missing' not found"):
            c.get_dataset("missing")
        assert c.get_dataset("missing", default=None) is None
        with pytest.raises(KeyError, match="Dataset 'missing' not found"):
            c.unpublish_dataset("missing")
        c.publish_dataset(a=1)
        with pytest.raises(KeyError, match=r"Dataset 'a' already exists.*override=True"):
            c.publish_dataset(a=2, b=3)
        assert c.list_datasets() == ["a"]  # all or nothing: b was not published
        c.publish_dataset(a=2, override=True)
        assert c.datasets["a"] == 2
        with pytest.raises(KeyError, match="already exists"):
            c.datasets["a"] = 3
        with pytest.raises(ValueError, match="needs name="):
            c.publish_dataset(1)
        c.unpublish_dataset("a")
        assert c.list_datasets() == []
