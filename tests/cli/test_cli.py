"""``shoal scheduler`` and ``shoal worker`` as a user runs them, in separate processes."""

from __future__ import annotations

import functools
import operator
import re
import signal
import socket
import subprocess
import sys

import pytest

from shoal import Client
from shoal.cli.worker import parse_resources
from shoal.testing.processes import Proc


def _stop(proc: Proc, sig: int) -> int:
    proc.popen.send_signal(sig)
    try:
        return proc.popen.wait(timeout=15)
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()


def test_scheduler_and_two_workers_from_the_command_line() -> None:
    sched = Proc("scheduler", "--host", "127.0.0.1", "--port", "0")
    workers: list[Proc] = []
    try:
        address = sched.wait_for(r"Scheduler at:\s+(tcp://\S+)")
        for name, extra in (("alice", ["--resources", "GPU=2"]), ("bob", [])):
            w = Proc(
                "worker",
                address,
                "--nthreads",
                "2",
                "--name",
                name,
                "--memory-limit",
                "1GB",
                "--no-nanny",
                "--host",
                "127.0.0.1",
                *extra,
            )
            workers.append(w)
            w.wait_for(r"Worker at:\s+(tcp://\S+)")
        with Client(address) as client:
            client.wait_for_workers(2, timeout=20)
            info = client.scheduler_info()
            names = sorted(w["name"] for w in info["workers"].values())
            assert names == ["alice", "bob"]
            assert all(w["memory_limit"] == 10**9 for w in info["workers"].values())
            resources = {w["name"]: w["resources"] for w in info["workers"].values()}
            assert resources == {"alice": {"GPU": 2.0}, "bob": {}}
            # A task that needs a GPU runs on alice.
            gpu = client.submit(socket.gethostname, resources={"GPU": 1}, pure=False)
            assert gpu.result(timeout=20) == socket.gethostname()
            assert client.who_has(gpu)[gpu.key] == [
                a for a, w in info["workers"].items() if w["name"] == "alice"
            ]
            assert client.gather(client.map(functools.partial(operator.add, 1), range(20))) == list(
                range(1, 21)
            )
        assert _stop(workers[0], signal.SIGTERM) == 0
        assert _stop(workers[1], signal.SIGINT) == 0
        assert _stop(sched, signal.SIGINT) == 0
    finally:
        for p in [sched, *workers]:
            if p.popen.poll() is None:
                p.popen.kill()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        ("GPU=2", {"GPU": 2.0}),
        ("GPU=2 MEM=10e9", {"GPU": 2.0, "MEM": 10e9}),
        ("GPU=2,MEM=10e9", {"GPU": 2.0, "MEM": 10e9}),
        (" GPU=0.5 ,  foo-bar=1 ", {"GPU": 0.5, "foo-bar": 1.0}),
    ],
)
def test_parse_resources(text: str | None, expected: dict[str, float]) -> None:
    assert parse_resources(text) == expected


@pytest.mark.parametrize("bad", ["GPU", "GPU=", "=2", "GPU=two", "GPU=2=3", "GPU=-1", "GPU=nan"])
def test_parse_resources_names_the_bad_item(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_resources(f"MEM=1,{bad}")


def test_malformed_resources_are_a_usage_error() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal.cli.main",
            "worker",
            "tcp://127.0.0.1:1",
            "--resources",
            "GPU=2,TPU",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "Invalid value for '--resources': 'TPU'" in out.stderr


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_cli_basics(flag: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", flag], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "shoal" in out.stdout.lower()
