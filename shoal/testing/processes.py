"""Run ``shoal`` commands as subprocesses and watch their output (for tests)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time


class Proc:
    """A ``shoal`` subprocess whose output lines are collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "shoal.cli.main", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """Wait for an output line matching ``pattern``; return its first group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m.group(1)
        raise AssertionError(f"{pattern!r} not printed; output was:\n{''.join(self.seen)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig``, wait for the exit and return its code (killed after ``timeout``)."""
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Kill the process if it is still there; reap it and close its output."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=30)
        self._pump_thread.join(timeout=30)  # end of file: every holder of the pipe exited
        assert self.popen.stdout is not None
        self.popen.stdout.close()
