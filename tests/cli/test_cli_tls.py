"""tls:// end to end: every role over TLS, and peers without the right certificates refused."""

from __future__ import annotations

import operator
import signal
from dataclasses import replace

import pytest
from test_cli import Proc

from shoal import Client, LocalCluster, Scheduler, Security
from shoal.errors import CommError
from shoal.testing.cluster import cluster


def inc(x: int) -> int:
    return x + 1


@pytest.mark.parametrize("processes", [False, True])
def test_a_local_cluster_over_tls(processes: bool) -> None:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=processes, protocol="tls") as lc,
        Client(lc) as c,
    ):
        assert lc.scheduler_address.startswith("tls://")
        assert lc.security.tls_cert and lc.security.token
        assert all(a.startswith("tls://") for a in c.scheduler_info()["workers"])
        # worker-to-worker transfers happen over TLS too
        xs = c.map(inc, range(20))
        assert c.submit(sum, xs).result() == sum(range(1, 21))


async def test_tls_refuses_peers_without_the_ca_or_a_client_certificate() -> None:
    sec = Security.temporary()
    async with cluster(
        n_workers=1,
        protocol="tls",
        scheduler_kwargs={"security": sec},
        worker_kwargs={"security": sec},
    ) as (s, _):
        async with Client(s.address, asynchronous=True, security=sec, set_as_default=False) as c:
            assert await c.submit(inc, 1) == 2
        other = Security.temporary()  # certificates from another CA
        with pytest.raises(CommError, match="TLS handshake"):
            await Client(
                s.address, asynchronous=True, timeout=5, security=other, set_as_default=False
            )
        no_cert = replace(sec, tls_cert=None, tls_key=None)  # right CA, no client certificate
        with pytest.raises(CommError):
            await Client(
                s.address, asynchronous=True, timeout=5, security=no_cert, set_as_default=False
            )
        with pytest.raises(CommError, match="needs TLS certificates"):
            await Client(
                s.address,
                asynchronous=True,
                timeout=5,
                security=Security(token=sec.token),
                set_as_default=False,
            )


async def test_a_tls_scheduler_without_certificates_says_what_to_give_it() -> None:
    with pytest.raises(CommError, match="--tls-cert"):
        await Scheduler(protocol="tls", security=Security.insecure())


def test_the_cli_over_tls() -> None:
    sec = Security.temporary()
    assert sec.tls_ca_file and sec.tls_cert and sec.tls_key and sec.token
    tls = ["--tls-ca-file", sec.tls_ca_file, "--tls-cert", sec.tls_cert, "--tls-key", sec.tls_key]
    import os

    os.environ["SHOAL_AUTH_TOKEN"] = sec.token
    try:
        sched = Proc("scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0", *tls)
        address = sched.wait_for(r"Scheduler at: (\S+)")
        worker = Proc("worker", address, "--nthreads", "1", *tls)
        try:
            with Client(address, security=sec, set_as_default=False) as c:
                c.wait_for_workers(1, timeout=60)
                assert c.submit(operator.add, 41, 1).result(timeout=30) == 42
        finally:
            worker.popen.send_signal(signal.SIGTERM)
            worker.popen.wait(timeout=30)
    finally:
        del os.environ["SHOAL_AUTH_TOKEN"]
        sched.popen.send_signal(signal.SIGTERM)
        sched.popen.wait(timeout=30)
