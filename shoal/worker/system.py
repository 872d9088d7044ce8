"""CPU and network figures for a worker's heartbeats (shown by the dashboard).

``psutil`` gives cumulative counters; :class:`SystemSampler` turns them into rates
between two heartbeats. Network counters are the host's (psutil has no per-process
ones), as in distributed's ``host_net_io``.
"""

from __future__ import annotations

import os
import time

import psutil


class SystemSampler:
    """Rates since the previous :meth:`sample`: CPU percent of this process, and the
    host's network bytes per second."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first call only sets the baseline
        self._last = time.monotonic()
        self._net = self._net_counters()

    @staticmethod
    def _net_counters() -> tuple[int, int]:
        try:
            io = psutil.net_io_counters()
        except (OSError, RuntimeError):  # no /proc/net/dev (some containers)
            return 0, 0
        if io is None:
            return 0, 0
        return int(io.bytes_recv), int(io.bytes_sent)

    def sample(self) -> dict[str, float]:
        """``{"cpu": percent, "read_bps": bytes/s, "write_bps": bytes/s}`` since the last call."""
        now = time.monotonic()
        elapsed = max(now - self._last, 1e-6)
        recv, sent = self._net_counters()
        last_recv, last_sent = self._net
        self._last, self._net = now, (recv, sent)
        return {
            "cpu": float(self._process.cpu_percent(None)),
            "read_bps": max(recv - last_recv, 0) / elapsed,
            "write_bps": max(sent - last_sent, 0) / elapsed,
        }
