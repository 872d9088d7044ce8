"""Worker subprocesses: start ``shoal worker`` children that die with their parent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping


def format_resources(resources: Mapping[str, float]) -> str:
    """``{"GPU": 2}`` as ``shoal worker --resources`` reads it: ``"GPU=2.0"``."""
    items = []
    for name, amount in resources.items():
        if not name or any(c == "=" or c == "," or c.isspace() for c in name):
            raise ValueError(f"resource name {name!r} can't be passed on a command line")
        items.append(f"{name}={float(amount)!r}")
    return ",".join(items)


class WorkerProcess:
    """A ``shoal worker`` running in a child process.

    The child watches its standard input and exits when it closes, so it never outlives
    this process, even when this process is killed.
    """

    def __init__(
        self,
        scheduler_address: str,
        *,
        name: str,
        nthreads: int,
        memory_limit: int,
        host: str = "127.0.0.1",
        resources: Mapping[str, float] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.name = name
        resource_args = ["--resources", format_resources(resources)] if resources else []
        self.args = [
            sys.executable,
            "-m",
            "shoal.cli.main",
            "worker",
            scheduler_address,
            "--no-nanny",
            "--nthreads",
            str(nthreads),
            "--memory-limit",
            str(memory_limit),
            "--name",
            name,
            "--host",
            host,
            "--exit-with-parent",
            *resource_args,
            *(extra_args or []),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: str | None = None

    def start(self) -> None:
        """Start the child process."""
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Like multiprocessing's spawn, give the child this process's import path, so
        # that functions from modules next to the user's script load on the workers.
        paths = [p or os.getcwd() for p in sys.path if p == "" or os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, env=env, start_new_session=False
        )

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self.proc.pid if self.proc else None

    def is_alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc is not None and self.proc.poll() is None

    async def close(self, timeout: float = 10.0) -> None:
        """Ask the child to exit (close its stdin); terminate, then kill it if it lingers."""
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for sig_step in ("wait", "terminate", "kill"):
            if sig_step == "terminate":
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            elif sig_step == "kill":
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (timeout if sig_step == "wait" else 5.0)
            while proc.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is not None:
                return
