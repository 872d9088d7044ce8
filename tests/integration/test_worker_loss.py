"""A worker process killed mid-computation: its work is redone elsewhere, from lineage."""

from __future__ import annotations

import os
import signal
import time

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
