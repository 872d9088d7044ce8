"""A LocalCluster makes its own secret: other processes on the machine can't use it."""

from __future__ import annotations

import subprocess
import sys

from shoal import Client, LocalCluster

FOREIGN = """
import sys
from shoal import Client
from shoal.errors import AuthenticationFailed
try:
    Client(sys.argv[1], timeout=10, set_as_default=False)
except AuthenticationFailed as e:
    print("refused:", e)
else:
    print("accepted")
"""


def inc(x: int) -> int:
    return x + 1


def test_a_local_cluster_refuses_other_processes_but_not_its_own() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        assert cluster.security.token
        # the same process, by address: the cluster's secret is known here
        with Client(cluster.scheduler_address, set_as_default=False) as c:
            assert c.submit(inc, 1).result() == 2
        out = subprocess.run(
            [sys.executable, "-c", FOREIGN, cluster.scheduler_address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.startswith("refused:"), out.stdout + out.stderr
        assert "requires an authentication token" in out.stdout


def test_security_false_lets_anyone_on_the_machine_connect() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, security=False) as cluster:
        assert cluster.security.token is None
        out = subprocess.run(
            [sys.executable, "-c", FOREIGN, cluster.scheduler_address],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.stdout.strip() == "accepted", out.stdout + out.stderr
