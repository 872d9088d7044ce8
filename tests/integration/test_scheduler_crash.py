"""kill -9 of the scheduler in the middle of work, then the same command started again."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from shoal import Client
from shoal.testing.processes import Proc

# the workers are separate processes that can't import this module: ship its functions
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slow_add(*xs: int) -> int:
    time.sleep(0.01)
    return sum(xs) + 1


class Cluster:
    """``shoal scheduler`` (restartable) and two ``shoal worker`` processes."""

    def __init__(self, tmp_path: Path, journal: bool) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.args = ["scheduler", "--host", "127.0.0.1", "--port", str(self.port)]
        self.journal = tmp_path / "scheduler.journal"
        if journal:
            self.args += ["--journal", str(self.journal)]
        self.procs: list[Proc] = []
        self.scheduler = self.start_scheduler()
        for i in range(2):
            self.procs.append(
                Proc("worker", self.address, "--nthreads", "1", "--no-nanny", "--name", f"w{i}")
            )

    def start_scheduler(self) -> Proc:
        proc = Proc(*self.args)
        proc.wait_for(r"Scheduler at: (\S+)")
        self.procs.append(proc)
        return proc

    def crash_and_restart(self, torn: bytes = b"") -> Proc:
        """SIGKILL the scheduler; append ``torn`` (a half-written record) to its
        journal; start the same command again."""
        self.scheduler.popen.send_signal(signal.SIGKILL)
        self.scheduler.popen.wait(timeout=10)
        if torn:
            with self.journal.open("ab") as f:
                f.write(torn)
        self.scheduler = self.start_scheduler()
        return self.scheduler

    def close(self) -> None:
        for proc in self.procs:
            proc.cleanup()


@pytest.fixture
def journaled(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, journal=True)
    yield c
    c.close()


def in_background(fn: Any) -> dict[str, Any]:
    """Run ``fn`` in a thread; the dict gets its ``result`` or ``error`` and the thread."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:
            out["error"] = e

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def wait_until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_layered_graph_survives_a_killed_scheduler(journaled: Cluster) -> None:
    with Client(journaled.address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        layers = [[client.submit(slow_add, i, key=f"l0-{i}") for i in range(100)]]
        for n in range(1, 6):
            prev = layers[-1]
            layers.append(
                [
                    client.submit(slow_add, prev[i], prev[(i + 1) % 100], key=f"l{n}-{i}")
                    for i in range(100)
                ]
            )
        expected = [[i + 1 for i in range(100)]]
        for _ in range(1, 6):
            p = expected[-1]
            expected.append([p[i] + p[(i + 1) % 100] + 1 for i in range(100)])
        final = in_background(lambda: client.gather(layers[-1]))
        wait_until(lambda: sum(f.done() for f in layers[1]) >= 30)
        restarted = journaled.crash_and_restart()
        assert any("Recovered from journal" in line for line in restarted.seen)
        final["thread"].join(timeout=90)
        assert "error" not in final, final.get("error")
        assert final["result"] == expected[-1]
        assert client.gather(layers[2]) == expected[2]


def test_a_dataframe_computation_survives_a_killed_scheduler(journaled: Cluster) -> None:
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")

    def slow(part: Any) -> Any:
        time.sleep(0.05)
        return part

    pdf = pd.DataFrame({"g": [i % 7 for i in range(4000)], "x": range(4000)})
    ddf = dd.from_pandas(pdf, npartitions=40).map_partitions(slow)
    with Client(journaled.address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        total = in_background(lambda: ddf.groupby("g").x.sum().compute())
        wait_until(lambda: len(client.who_has()) >= 10)
        # killed in the middle of a write: the last record is torn
        restarted = journaled.crash_and_restart(torn=b"\x40\x00\x00\x00\x12\x34")
        assert any("torn or corrupt record" in line for line in restarted.seen)
        total["thread"].join(timeout=90)
        assert "error" not in total, total.get("error")
        pd.testing.assert_series_equal(
            total["result"].sort_index(), pdf.groupby("g").x.sum(), check_names=False
        )


def test_without_a_journal_lost_futures_fail_clearly(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, journal=False)
    try:
        with Client(cluster.address, timeout=30) as client:
            client.wait_for_workers(2, timeout=30)
            futures = [client.submit(slow_add, i, 100, key=f"slow-{i}") for i in range(400)]
            wait_until(lambda: any(f.done() for f in futures))
            cluster.crash_and_restart()
            lost = []
            for i, f in enumerate(futures):
                try:
                    assert f.result(timeout=60) == i + 101  # it finished before the crash
                except Exception as e:
                    lost.append(str(e))
            assert len(lost) >= 100
            assert all("restarted without a journal" in text for text in lost), lost[0]
            assert all("submit the computation again" in text for text in lost)
            # the cluster works again: the workers and the client reconnected
            assert client.submit(slow_add, 1, key="again").result(timeout=30) == 2
    finally:
        cluster.close()
