"""Worker subprocesses: start ``shoal worker`` children that die with their parent."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

from shoal.worker.nanny import child_environment, format_resources, stop_process, worker_command

__all__ = ["WorkerProcess", "format_resources"]


class WorkerProcess:
    """A ``shoal worker`` running in a child process, under a nanny or not.

    With ``nanny=True`` the child is a nanny (``shoal worker --nanny``) which runs the
    worker in a grandchild and starts it again when it dies; the worker keeps ``name``
    but gets a new address each time. The child watches its standard input and exits
    when it closes, so it never outlives this process, even when this process is
    killed; a nanny then stops its worker the same way.
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
        nanny: bool = False,
        extra_args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.nanny = nanny
        self.args = worker_command(
            scheduler_address,
            name=name,
            nthreads=nthreads,
            memory_limit=memory_limit,
            host=host,
            resources=resources,
            nanny=nanny,
            extra_args=extra_args or [],
        )
        #: environment variables set for the child (and, under a nanny, its worker)
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        #: the worker's address when it first joined the scheduler
        self.address: str | None = None
        #: the nanny's address (``nanny=True``), once the worker has joined
        self.nanny_address: str | None = None

    def start(self) -> None:
        """Start the child process."""
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, env=child_environment(extra=self.env)
        )

    @property
    def pid(self) -> int | None:
        """The child's process id (the nanny's, with ``nanny=True``)."""
        return self.proc.pid if self.proc else None

    def is_alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc is not None and self.proc.poll() is None

    async def close(self, timeout: float = 10.0) -> None:
        """Ask the child to exit (close its stdin); terminate, then kill it if it lingers.

        Killing a nanny kills its worker too (and anything else the child started).
        """
        if self.proc is not None:
            await stop_process(self.proc, wait=timeout, grace=5.0)
