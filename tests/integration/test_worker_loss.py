"""A worker process killed mid-computation: its work is redone elsewhere, from lineage."""

from __future__ import annotations

import os
import signal
import time

import pytest

from shoal import Client, LocalCluster


def slow_add(*args: int) -> int:
    time.sleep(0.01)
    return sum(args)


def test_kill_9_a_worker_in_the_middle_of_a_layered_graph() -> None:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        layer = client.map(slow_add, range(100))
        for depth in range(3):
            layer = [
                client.submit(slow_add, a, b, depth, pure=False)
                for a, b in zip(layer, layer[1:] + layer[:1])
            ]
        pids = client.run(os.getpid)
        victim_address = sorted(pids)[0]
        time.sleep(0.3)  # part of the graph is done, some of it on the victim
        os.kill(pids[victim_address], signal.SIGKILL)
        total = client.submit(sum, layer).result(timeout=60)
        # expected value computed locally
        values = [x for x in range(100)]
        for depth in range(3):
            values = [a + b + depth for a, b in zip(values, values[1:] + values[:1])]
        assert total == sum(values)
        assert victim_address not in client.nthreads()


def layered_graph(client: Client, width: int = 150, depth: int = 3) -> tuple[list, int]:
    """``width`` tasks then ``depth`` layers each depending on two of the previous one;
    returns the last layer and the expected sum."""
    layer = client.map(slow_add, range(width), pure=False)
    for d in range(depth):
        layer = [
            client.submit(slow_add, a, b, d, pure=False)
            for a, b in zip(layer, layer[1:] + layer[:1])
        ]
    values = list(range(width))
    for d in range(depth):
        values = [a + b + d for a, b in zip(values, values[1:] + values[:1])]
    return layer, sum(values)


def test_kill_9_during_a_600_task_graph_ten_times_in_a_row() -> None:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        for attempt in range(10):
            client.wait_for_workers(2, timeout=60)
            layer, expected = layered_graph(client)  # 150 x 4 = 600 tasks
            time.sleep(0.2 + 0.05 * attempt)  # somewhere in the middle
            pids = client.run(os.getpid)
            os.kill(pids[sorted(pids)[attempt % 2]], signal.SIGKILL)
            total = client.submit(sum, layer, pure=False).result(timeout=120)
            assert total == expected, f"attempt {attempt}"
            del layer


def test_kill_9_during_a_dataframe_groupby() -> None:
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    df = pd.DataFrame({"k": [i % 7 for i in range(20_000)], "v": range(20_000)})
    expected = df.groupby("k").v.sum()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        ddf = dd.from_pandas(df, npartitions=40).map_partitions(slow_frame, meta=df)
        future = client.compute(ddf.groupby("k").v.sum())
        time.sleep(0.3)
        pids = client.run(os.getpid)
        os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
        result = future.result(timeout=120)
        pd.testing.assert_series_equal(result.sort_index(), expected)


def slow_frame(part: object) -> object:
    time.sleep(0.02)
    return part


def test_a_hung_worker_is_dropped_after_the_worker_ttl_and_its_work_redone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shoal import config

    monkeypatch.setenv("SHOAL_SCHEDULER__WORKER_TTL", "2")
    monkeypatch.setenv("SHOAL_WORKER__TRANSFER_TIMEOUT", "3")  # fetches from it give up
    config.refresh()
    try:
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as client,
        ):
            layer, expected = layered_graph(client, width=60, depth=2)
            pids = client.run(os.getpid)
            hung_address = sorted(pids)[0]
            time.sleep(0.2)
            os.kill(pids[hung_address], signal.SIGSTOP)  # alive, but silent
            try:
                total = client.submit(sum, layer, pure=False).result(timeout=120)
                assert total == expected
                assert hung_address not in client.nthreads()
            finally:
                os.kill(pids[hung_address], signal.SIGCONT)
    finally:
        monkeypatch.undo()
        config.refresh()
