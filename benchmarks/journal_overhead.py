"""The scheduler journal's cost on tiny tasks: map of a no-op, with and without it.

``python -m benchmarks.journal_overhead [--rounds 4] [--tasks 10000]`` alternates
LocalClusters (2 worker processes, 1 thread each) without and with
``journal=`` (a fresh file each time), three timed maps per cluster after a warm-up,
and prints the median tasks/s of each, their ratio and the journal's bytes per task.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from shoal import Client, LocalCluster


def noop(x: int) -> int:
    return x


def one_cluster(journal: str | None, tasks: int) -> tuple[float, int]:
    """Median tasks/s of three maps of ``tasks`` no-ops; bytes journaled per task."""
    kwargs = {"journal": journal} if journal else {}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, **kwargs
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(noop, range(2000), key=[f"warm-{i}" for i in range(2000)]))
        rates = []
        for r in range(3):
            start = time.perf_counter()
            futures = client.map(noop, range(tasks), key=[f"noop-{r}-{i}" for i in range(tasks)])
            client.gather(futures)
            rates.append(tasks / (time.perf_counter() - start))
            del futures
            time.sleep(0.5)
    per_task = os.path.getsize(journal) // (2000 + 3 * tasks) if journal else 0
    return statistics.median(rates), per_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    without: list[float] = []
    with_journal: list[float] = []
    per_task = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            rate, _ = one_cluster(None, args.tasks)
            without.append(rate)
            rate, per_task = one_cluster(os.path.join(tmp, f"journal-{i}"), args.tasks)
            with_journal.append(rate)
            print(f"round {i + 1}: without {without[-1]:,.0f} tasks/s, with {rate:,.0f} tasks/s")
    a, b = statistics.median(without), statistics.median(with_journal)
    print(f"median without a journal: {a:,.0f} tasks/s [{min(without):,.0f}..{max(without):,.0f}]")
    print(
        f"median with a journal:    {b:,.0f} tasks/s "
        f"[{min(with_journal):,.0f}..{max(with_journal):,.0f}]"
    )
    print(f"overhead: {(1 - b / a) * 100:.1f}%; journal: {per_task} bytes per task")


if __name__ == "__main__":
    main()
