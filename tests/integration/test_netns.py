"""Many machines, stood in for by Linux network namespaces.

Four namespaces on one bridge, each with its own ``eth0`` and address, as four hosts on
a LAN: the scheduler in one (``--interface eth0``), a worker in each of two others, the
client in the fourth. Worker ``w1`` sits "behind NAT": it binds to 127.0.0.1 in its
namespace, where nobody else can reach it, and advertises a forwarder's address
(``--listen-address`` / ``--contact-address``). Worker ``w2`` runs under a nanny with the
default binding (every interface, advertising the address others can reach).

The client runs futures and a dask dataframe shuffle across both workers; then, in the
middle of a computation, ``w2``'s link is cut (``ip link set ... down``). With a short
``scheduler.worker-ttl`` the scheduler gives ``w2`` up within seconds and the
computation finishes on ``w1``.

Needs root and ``ip`` (iproute2); skipped with the reason otherwise. Every namespace,
veth and bridge has a name unique to the run and is removed at the end, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

pytest.importorskip("dask.dataframe")

CLIENT_SCRIPT = Path(__file__).with_name("netns_client.py")
ROLES = ("sched", "w1", "w2", "client")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Network:
    """The namespaces (by role), their addresses, and the host-side veth of each."""

    tag: str
    bridge: str
    namespaces: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    host_links: dict[str, str] = field(default_factory=dict)

    def cut(self, role: str) -> None:
        """Take ``role``'s link down: its packets go nowhere, nothing is reset."""
        _ip("link", "set", self.host_links[role], "down")


def _remove(net: Network) -> list[str]:
    """Delete what :func:`_build` made; return what could not be deleted."""
    errors = []
    for ns in net.namespaces.values():  # deleting a namespace deletes its veth pair
        r = _ip("netns", "del", ns, check=False)
        if r.returncode and "No such file" not in r.stderr:
            errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
    for link in (*net.host_links.values(), net.bridge):
        if _ip("link", "show", link, check=False).returncode == 0:
            r = _ip("link", "del", link, check=False)
            if r.returncode:
                errors.append(f"ip link del {link}: {r.stderr.strip()}")
    return errors


def _build(net: Network) -> None:
    subnet = f"10.{random.randint(64, 127)}.{random.randint(0, 255)}"
    _ip("link", "add", net.bridge, "type", "bridge")
    _ip("link", "set", net.bridge, "up")
    for i, role in enumerate(ROLES, 1):
        ns = net.namespaces[role] = f"shoal-{net.tag}-{role}"
        host_end, ns_end = f"sh{net.tag}h{i}", f"sh{net.tag}n{i}"
        _ip("netns", "add", ns)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        net.host_links[role] = host_end
        _ip("link", "set", ns_end, "netns", ns)
        _ip("link", "set", host_end, "master", net.bridge)
        _ip("link", "set", host_end, "up")
        # inside, the link is eth0, as in a container
        _ip("-n", ns, "link", "set", ns_end, "name", "eth0")
        net.addresses[role] = f"{subnet}.{i}"
        _ip("-n", ns, "addr", "add", f"{subnet}.{i}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")


@pytest.fixture
def network() -> Iterator[Network]:
    """Four namespaces on a private bridge; removed afterwards whatever happens."""
    if sys.platform != "linux":
        pytest.skip("network namespaces are a Linux feature")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (run the tests as root)")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command is missing: apt-get install -y iproute2")
    tag = uuid.uuid4().hex[:6]
    net = Network(tag=tag, bridge=f"shbr{tag}")
    try:
        _build(net)
    except subprocess.CalledProcessError as e:
        errors = _remove(net)
        pytest.skip(
            f"can't create network namespaces here: `{' '.join(e.cmd)}` failed: "
            f"{(e.stderr or '').strip()}" + (f"; cleanup: {errors}" if errors else "")
        )
    try:
        yield net
    finally:
        errors = _remove(net)
        assert not errors, f"network namespaces left behind: {errors}"


class NsProc:
    """A process in a namespace, its output collected line by line."""

    def __init__(self, ns: str, args: list[str], env: dict[str, str], stdin: bool = False):
        self.name = f"{ns}: {' '.join(args[:4])}"
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", ns, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"{pattern!r} not printed by {self.name}")

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, for this process and every process it started."""
        try:
            procs = [psutil.Process(self.popen.pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            procs = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.popen.wait(timeout=10)
        self._thread.join(timeout=10)


def test_a_cluster_across_namespaces_survives_a_cut_link(network: Network) -> None:
    py = [sys.executable]
    shoal = [*py, "-m", "shoal.cli.main"]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SHOAL_AUTH_TOKEN": uuid.uuid4().hex,
        # a silent worker is given up after 4 s, a stuck fetch from it after 3 s
        "SHOAL_SCHEDULER__WORKER_TTL": "4",
        "SHOAL_WORKER__TRANSFER_TIMEOUT": "3",
    }
    ns, ip = network.namespaces, network.addresses
    procs: list[NsProc] = []

    def start(role: str, args: list[str], stdin: bool = False) -> NsProc:
        p = NsProc(ns[role], args, env, stdin=stdin)
        procs.append(p)
        return p

    try:
        sched = start("sched", [*shoal, "scheduler", "--interface", "eth0", "--port", "8786"])
        address = sched.wait_for(r"Scheduler at: (\S+)", 60).group(1)
        assert address == f"tcp://{ip['sched']}:8786"
        # w1 listens where only its own namespace can reach it; a forwarder in that
        # namespace is the "NAT" that makes it reachable at its contact address
        w1_contact = f"tcp://{ip['w1']}:9000"
        fwd = start(
            "w1", [*py, "-m", "shoal.testing.forward", f"{ip['w1']}:9000", "127.0.0.1:9001"]
        )
        fwd.wait_for("forwarding", 30)
        start(
            "w1",
            [*shoal, "worker", address, "--no-nanny", "--name", "w1", "--nthreads", "2",
             "--listen-address", "tcp://127.0.0.1:9001", "--contact-address", w1_contact],
        )  # fmt: skip
        start("w2", [*shoal, "worker", address, "--name", "w2", "--nthreads", "2"])
        client = start("client", [*py, str(CLIENT_SCRIPT), address], stdin=True)

        results: dict[str, dict[str, Any]] = {}

        def result(phase: str, timeout: float = 60) -> dict[str, Any]:
            m = client.wait_for(r"^RESULT (.*)$", timeout)
            data: dict[str, Any] = json.loads(m.group(1))
            assert data["phase"] == phase, data
            results[phase] = data
            return data

        connected = result("connected")
        workers = connected["workers"]
        assert connected["health"] == "ok"  # the scheduler's dashboard, across hosts
        w2_address = f"tcp://{ip['w2']}"
        assert w1_contact in workers  # w1 is known by its contact address only
        assert any(str(w).startswith(w2_address + ":") for w in workers)
        assert result("futures")["ran_on"] == ["w1", "w2"]
        shuffled = result("shuffle")
        assert shuffled["made_on"] == ["w1", "w2"]
        assert shuffled["moved_between_workers"]  # rows crossed the network

        client.wait_for("CUT-NOW", 60)
        network.cut("w2")
        assert client.popen.stdin is not None
        client.popen.stdin.write("cut\n")
        client.popen.stdin.flush()
        cut = result("cut")
        assert cut["before"] == ["w1", "w2"]  # w2 had done part of it before the cut
        assert cut["unfinished"]  # and the rest was still to do
        assert cut["remaining"] == [w1_contact]
        after = result("after")
        assert after["made_on"] == after["shuffled_on"] == ["w1"]
        assert client.popen.wait(timeout=30) == 0
        print(json.dumps(results, indent=1))  # shown with pytest -rP
    except BaseException:
        for p in procs:
            p.stop()
        logs = "\n".join(f"----- {p.name}\n{p.output()}" for p in procs)
        print(logs)
        raise
    finally:
        for p in procs:
            p.stop()
