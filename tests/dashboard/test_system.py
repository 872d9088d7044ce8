"""The CPU and network figures a worker puts in its heartbeats (shoal.worker.system)."""

from __future__ import annotations

import socket
import threading
import time

from shoal.worker.system import SystemSampler


def _send_over_loopback(nbytes: int) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def drain() -> None:
            conn, _ = server.accept()
            with conn:
                while conn.recv(1 << 16):
                    pass

        reader = threading.Thread(target=drain)
        reader.start()
        with socket.create_connection(server.getsockname()) as conn:
            conn.sendall(b"x" * nbytes)
        reader.join(timeout=30)


def test_the_sampler_sees_cpu_and_network_use_since_its_last_sample() -> None:
    sampler = SystemSampler()
    started = time.process_time()
    while time.process_time() - started < 0.3:  # keep one core busy
        pass
    _send_over_loopback(4_000_000)  # the host's counters include loopback
    figures = sampler.sample()
    assert set(figures) == {"cpu", "read_bps", "write_bps"}
    assert figures["cpu"] > 0
    assert figures["read_bps"] > 0 and figures["write_bps"] > 0
