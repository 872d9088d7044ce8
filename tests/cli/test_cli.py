"""``shoal scheduler`` and ``shoal worker`` as a user runs them, in separate processes."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time

import pytest

from shoal import Client


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shoal.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if sel.select(timeout=0.1):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m.group(1)
    raise AssertionError(f"{pattern!r} not printed; output was:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()


def inc(x: int) -> int:
    return x + 1


def test_scheduler_and_two_workers_from_the_command_line() -> None:
    sched = _start("scheduler", "--host", "127.0.0.1", "--port", "0")
    workers: list[subprocess.Popen[str]] = []
    try:
        address = _wait_for_line(sched, r"Scheduler at:\s+(tcp://\S+)")
        for name in ("alice", "bob"):
            w = _start(
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
            )
            workers.append(w)
            _wait_for_line(w, r"Worker at:\s+(tcp://\S+)")
        with Client(address) as client:
            client.wait_for_workers(2, timeout=20)
            info = client.scheduler_info()
            names = sorted(w["name"] for w in info["workers"].values())
            assert names == ["alice", "bob"]
            assert all(w["memory_limit"] == 10**9 for w in info["workers"].values())
            assert client.gather(client.map(inc, range(20))) == list(range(1, 21))
        assert _stop(workers[0], signal.SIGTERM) == 0
        assert _stop(workers[1], signal.SIGINT) == 0
        assert _stop(sched, signal.SIGINT) == 0
    finally:
        for p in [sched, *workers]:
            if p.poll() is None:
                p.kill()


def test_nanny_flag_says_it_is_not_available() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "worker", "tcp://127.0.0.1:1", "--nanny"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "--no-nanny" in out.stderr


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_cli_basics(flag: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", flag], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "shoal" in out.stdout.lower()
