"""LocalCluster(resources=...): every worker declares them, and they limit what runs at once."""

from __future__ import annotations

import time

import pytest

from shoal import Client, LocalCluster
from shoal.deploy.process import WorkerProcess, format_resources


def record(tag: str, seconds: float) -> tuple[str, float, float]:
    """Sleep ``seconds``; return ``(tag, start, end)`` on the monotonic clock."""
    start = time.monotonic()
    time.sleep(seconds)
    return tag, start, time.monotonic()


def _overlap(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def test_gpu_tasks_never_overlap_while_plain_ones_do() -> None:
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, resources={"GPU": 1}
        ) as cluster,
        Client(cluster) as client,
    ):
        (info,) = client.scheduler_info()["workers"].values()
        assert info["resources"] == {"GPU": 1.0}
        gpu = [client.submit(record, f"gpu{i}", 0.4, resources={"GPU": 1}) for i in range(2)]
        plain = client.submit(record, "plain", 0.2)
        g0, g1 = client.gather(gpu)
        p = plain.result()
        assert not _overlap(g0, g1), (g0, g1)
        # Two threads: the plain task runs beside one of the GPU tasks.
        assert _overlap(p, g0) or _overlap(p, g1), (p, g0, g1)
        (worker,) = cluster.workers.values()
        assert worker.state.available_resources == {"GPU": 1.0}  # type: ignore[union-attr]


def test_process_workers_declare_the_resources() -> None:
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, resources={"GPU": 1, "MEM": 10e9}
        ) as cluster,
        Client(cluster) as client,
    ):
        (info,) = client.scheduler_info()["workers"].values()
        assert info["resources"] == {"GPU": 1.0, "MEM": 10e9}
        assert client.submit(record, "g", 0, resources={"GPU": 1}).result()[0] == "g"


def test_worker_process_command_line() -> None:
    proc = WorkerProcess(
        "tcp://s:1", name="w", nthreads=1, memory_limit=1, resources={"GPU": 2, "MEM": 1e10}
    )
    i = proc.args.index("--resources")
    assert proc.args[i + 1] == "GPU=2.0,MEM=10000000000.0"
    assert (
        "--resources" not in WorkerProcess("tcp://s:1", name="w", nthreads=1, memory_limit=1).args
    )


@pytest.mark.parametrize("name", ["A B", "A=B", "A,B", ""])
def test_names_a_command_line_cannot_carry(name: str) -> None:
    with pytest.raises(ValueError, match="command line"):
        format_resources({name: 1})
