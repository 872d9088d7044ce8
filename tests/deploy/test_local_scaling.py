"""LocalCluster scaling: graceful scale-down and adaptive scaling."""

from __future__ import annotations

import time

import pytest

from shoal import Client, LocalCluster
from shoal.config import parse_seconds


def inc(x: int) -> int:
    return x + 1


def slow(x: int) -> int:
    time.sleep(0.2)
    return x


def wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("processes", [False, True])
def test_scale_down_keeps_the_data_of_the_workers_that_leave(processes: bool) -> None:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=processes) as cluster,
        Client(cluster) as client,
    ):
        xs = client.scatter(list(range(10)))
        ys = client.map(inc, xs)
        assert client.gather(ys) == list(range(1, 11))
        assert len({w for ws in client.who_has(ys).values() for w in ws}) == 2
        cluster.scale(1)
        assert len(cluster.workers) == 1
        assert len(client.nthreads()) == 1
        assert client.gather(xs + ys) == list(range(10)) + list(range(1, 11))
        log = cluster.scheduler.state.transition_log  # type: ignore[union-attr]
        for y in ys:  # not recomputed (a steal may move it between workers before it runs)
            assert sum(1 for r in log if r.key == y.key and r.finish == "memory") == 1


def test_a_worker_that_fails_to_start_is_not_kept() -> None:
    with LocalCluster(n_workers=1, processes=True, dashboard_address=None) as cluster:
        cluster.host = "203.0.113.5"  # a documentation address: nothing here can bind it
        with pytest.raises(Exception, match=r"203\.0\.113\.5"):
            cluster.scale(2)
        assert list(cluster.workers) == ["0"]
        cluster.host = "127.0.0.1"
        cluster.scale(2)
        assert len(cluster.workers) == 2
        with Client(cluster) as client:
            assert client.submit(inc, 1).result() == 2
            assert len(client.nthreads()) == 2


def test_adapt_grows_under_a_burst_and_retires_idle_workers() -> None:
    with (
        LocalCluster(n_workers=0, threads_per_worker=1, processes=False) as cluster,
        Client(cluster) as client,
    ):
        adaptive = cluster.adapt(minimum=0, maximum=3, interval=0.05, wait_count=2)
        futures = client.map(slow, range(30))
        wait_until(lambda: len(cluster.workers) >= 2)
        assert client.gather(futures) == list(range(30))
        assert len(cluster.workers) <= 3
        # Idle with data held: at least one worker stays to keep it.
        wait_until(lambda: len(cluster.workers) == 1)
        assert client.gather(futures) == list(range(30))
        del futures
        wait_until(lambda: len(cluster.workers) == 0)
        assert adaptive.minimum == 0


def test_adapt_respects_the_minimum_and_checks_its_bounds() -> None:
    with LocalCluster(n_workers=0, processes=False) as cluster:
        cluster.adapt(minimum=2, maximum=4, interval=0.05)
        wait_until(lambda: len(cluster.workers) == 2)
        with pytest.raises(ValueError, match="minimum"):
            cluster.adapt(minimum=3, maximum=1)


def test_parse_seconds() -> None:
    assert parse_seconds(2) == 2.0
    assert parse_seconds("500ms") == 0.5
    assert parse_seconds("2 min") == 120.0
    assert parse_seconds("1.5") == 1.5
    with pytest.raises(ValueError, match="duration"):
        parse_seconds("soon")
