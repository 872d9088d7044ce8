"""``--interface``, ``--listen-address`` and ``--contact-address`` on the command line."""

from __future__ import annotations

import operator
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shoal import Client
from shoal.cli.scheduler import scheduler as scheduler_command
from shoal.cli.worker import worker as worker_command
from shoal.comm.tcp import reachable_ip
from shoal.testing.processes import Proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "127.0.0.1", "--interface", "lo"], "either a host"),
        (["--interface", "nope0"], "no network interface 'nope0'"),
        (["--listen-address", "tcp://0.0.0.0:1", "--host", "h"], "don't give host too"),
        (["--listen-address", "tcp://0.0.0.0:1", "--port", "2"], "don't give --port too"),
        (["--listen-address", "tls://0.0.0.0:1", "--protocol", "tcp"], "is tls:// but"),
        (["--listen-address", "tcp://0.0.0.0"], "no port in address"),
        (["--contact-address", "tcp://h:0"], "not a wildcard or port 0"),
        (["--contact-address", "tls://h:1"], "is tls:// but this server listens on tcp://"),
        (["--protocol", "udp"], "unknown protocol 'udp': give --protocol tcp or tls"),
        (["--port", "99999"], "99999 is not in the range 0<=x<=65535"),
    ],
)
def test_scheduler_refuses_conflicting_address_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(scheduler_command, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "127.0.0.1", "--interface", "lo"], "either a host"),
        (["--listen-address", "tcp://0.0.0.0:1", "--worker-port", "2"], "--worker-port too"),
        (["--listen-address", "tcp://0.0.0.0:1", "--interface", "lo"], "don't give interface"),
        (["--contact-address", "tcp://0.0.0.0:9000"], "not a wildcard or port 0"),
        (["--nanny-contact-address", "tcp://h:1", "--no-nanny"], "for a worker with a nanny"),
        (["--nanny-contact-address", "h:0"], "not a wildcard or port 0"),
        (["--protocol", "inproc"], "unknown protocol 'inproc'"),
        (["--worker-port", "70000"], "70000 is not in the range"),
        (["--nanny-port", "-1"], "-1 is not in the range"),
        (["--nthreads", "-2"], "-2 is not in the range x>=0"),
        (["--memory-limit", "lots"], "could not parse 'lots' as a size"),
    ],
)
def test_worker_refuses_conflicting_address_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(worker_command, ["tcp://127.0.0.1:1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_worker_refuses_a_scheduler_address_of_another_scheme() -> None:
    result = CliRunner().invoke(worker_command, ["udp://127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert "give the address the scheduler printed" in result.output


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on every interface that something else listens on."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "args",
    [
        ["scheduler", "--host", "192.0.2.1", "--port", "0", "--dashboard-address", ":0"],
        ["worker", "tcp://127.0.0.1:1", "--no-nanny", "--host", "192.0.2.1"],
        ["worker", "tcp://127.0.0.1:1", "--host", "192.0.2.1"],
    ],
)
def test_an_address_not_of_this_host_is_a_one_line_error(args: list[str]) -> None:
    """192.0.2.1 (TEST-NET) is no address of this host: the command says so and exits."""
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert "Error: could not listen on tcp://192.0.2.1:" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("role", ["scheduler", "worker"])
def test_a_port_in_use_is_a_one_line_error(role: str, busy_port: int) -> None:
    args = (
        ["scheduler", "--port", str(busy_port), "--dashboard-address", ":0"]
        if role == "scheduler"
        else ["worker", "tcp://127.0.0.1:1", "--nanny-port", str(busy_port)]
    )
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert f"Error: could not listen on tcp://0.0.0.0:{busy_port}" in out.stderr
    assert "Address already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_scheduler_listens_on_an_interface() -> None:
    sched = Proc("scheduler", "--interface", "lo", "--port", "0")
    try:
        address = sched.wait_for(r"Scheduler at: (\S+)")
        assert address.startswith("tcp://127.0.0.1:")
    finally:
        sched.stop()


def test_a_worker_binds_every_interface_and_advertises_a_reachable_address() -> None:
    sched = Proc("scheduler", "--host", "127.0.0.1", "--port", "0")
    worker = None
    try:
        address = sched.wait_for(r"Scheduler at: (\S+)")
        worker = Proc("worker", address, "--no-nanny", "--nthreads", "1")
        advertised = worker.wait_for(r"Worker at: (\S+)")
        assert advertised.startswith(f"tcp://{reachable_ip()}:")
        with Client(address, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=30)
            assert c.submit(operator.add, 1, 2).result(timeout=30) == 3
    finally:
        if worker is not None:
            worker.stop()
        sched.stop()


def test_a_worker_behind_a_forwarder_is_reached_at_its_contact_address() -> None:
    """The worker binds one port, a forwarder (standing in for NAT) another; the
    scheduler, the client and the other worker only ever use the forwarder's."""
    inner, outer = free_port(), free_port()
    forwarder = subprocess.Popen(
        [sys.executable, "-m", "shoal.testing.forward", f"127.0.0.1:{outer}", f"127.0.0.1:{inner}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    sched = Proc("scheduler", "--host", "127.0.0.1", "--port", "0")
    procs = [sched]
    try:
        assert forwarder.stdout is not None
        assert "forwarding" in forwarder.stdout.readline()
        address = sched.wait_for(r"Scheduler at: (\S+)")
        contact = f"tcp://127.0.0.1:{outer}"
        behind = Proc(
            "worker", address, "--nthreads", "1", "--name", "behind",
            "--listen-address", f"tcp://127.0.0.1:{inner}", "--contact-address", contact,
        )  # fmt: skip
        procs.append(behind)
        plain = Proc("worker", address, "--no-nanny", "--nthreads", "1", "--host", "127.0.0.1")
        procs.append(plain)
        assert behind.wait_for(r"Worker at: (\S+)") == contact
        assert behind.wait_for(r"Listening on: (\S+)") == f"tcp://127.0.0.1:{inner}"
        other = plain.wait_for(r"Worker at: (\S+)")
        with Client(address, set_as_default=False) as c:
            c.wait_for_workers(2, timeout=30)
            assert set(c.scheduler_info()["workers"]) == {contact, other}
            x = c.submit(operator.mul, 6, 7, workers=[contact])
            y = c.submit(operator.add, x, 0, workers=[other])  # other fetches from behind
            assert y.result(timeout=30) == 42
            assert x.result(timeout=30) == 42  # gathered through the forwarder
    finally:
        for p in reversed(procs):
            p.stop()
        forwarder.terminate()
        forwarder.wait(timeout=10)
        assert forwarder.stdout is not None
        forwarder.stdout.close()


def test_a_file_that_is_not_a_journal_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a journal\n")
    args = ["--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"]
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "scheduler", *args, "--journal", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert "not a shoal journal" in out.stderr
    assert "Traceback" not in out.stderr
    assert path.read_text() == "not a journal\n"
