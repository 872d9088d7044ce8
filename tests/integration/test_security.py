"""Authentication end to end: a cluster with a secret refuses everyone without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal import Client, Scheduler, Security, config
from shoal.errors import AuthenticationFailed
from shoal.security import read_token_file


async def test_a_client_without_the_secret_is_refused_with_a_clear_error() -> None:
    sec = Security.temporary()
    async with Scheduler(port=0, security=sec) as s:
        with pytest.raises(AuthenticationFailed, match="requires an authentication token"):
            await Client(s.address, asynchronous=True, timeout=5, set_as_default=False)
        with pytest.raises(AuthenticationFailed, match="different secrets"):
            await Client(
                s.address,
                asynchronous=True,
                timeout=5,
                security=Security(token="guess"),
                set_as_default=False,
            )
        async with Client(s.address, asynchronous=True, security=sec, set_as_default=False) as c:
            info = await c.scheduler_info()
            assert info["address"] == s.address
        assert s.status == "running"


async def test_the_secret_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_AUTH_TOKEN", "from-the-env")
    config.refresh()
    try:
        async with Scheduler(port=0) as s:
            assert s.security.token == "from-the-env"
            async with Client(s.address, asynchronous=True, set_as_default=False):
                pass
    finally:
        monkeypatch.undo()
        config.refresh()


def test_an_environment_token_loses_its_trailing_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. a Kubernetes Secret made with --from-file, given as SHOAL_AUTH_TOKEN
    monkeypatch.setenv("SHOAL_AUTH_TOKEN", "s3cret-token\n")
    config.refresh()
    try:
        assert Security.from_config().token == "s3cret-token"
    finally:
        monkeypatch.undo()
        config.refresh()


def test_token_files_must_be_private_and_not_empty(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    os.chmod(path, 0o600)
    assert read_token_file(path) == "s3cret"
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_token_file(path)
    path.write_text("")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match="empty"):
        read_token_file(path)
    with pytest.raises(ValueError, match="cannot read"):
        read_token_file(tmp_path / "missing")


def test_the_secret_is_never_printed() -> None:
    sec = Security(token="hunter2")
    assert "hunter2" not in repr(sec) and "hunter2" not in str(sec)


def whoami(dask_scheduler: object = None) -> str:
    return type(dask_scheduler).__name__


def fail() -> None:
    raise ZeroDivisionError("on the scheduler")


async def test_run_on_scheduler_is_off_unless_allowed() -> None:
    from shoal import run_on_scheduler
    from shoal.errors import RemoteError

    async with Scheduler(port=0, security=Security.insecure()) as s:
        async with Client(s.address, asynchronous=True, set_as_default=False) as c:
            with pytest.raises(RemoteError, match="--allow-run-on-scheduler"):
                await c.run_on_scheduler(whoami)
            run_on_scheduler.enable(s)
            assert await c.run_on_scheduler(whoami) == "Scheduler"
            with pytest.raises(ZeroDivisionError, match="on the scheduler"):
                await c.run_on_scheduler(fail)


class ExitsWhenUnpickled:
    """An argument whose unpickling ends the process that unpickles it."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (os._exit, (13,))


def identity(x: object) -> object:
    return x


def test_a_run_spec_that_kills_whoever_unpickles_it_never_touches_the_scheduler() -> None:
    from shoal import LocalCluster
    from shoal.errors import KilledWorker

    # The scheduler runs in this process: had it unpickled the task, pytest would exit.
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        poisoned = client.submit(identity, ExitsWhenUnpickled(), pure=False)
        with pytest.raises(KilledWorker):
            poisoned.result(timeout=120)
        assert cluster.scheduler is not None and cluster.scheduler.status == "running"
        client.wait_for_workers(1, timeout=60)  # the nanny brought the worker back
        assert client.submit(identity, 5).result(timeout=60) == 5
