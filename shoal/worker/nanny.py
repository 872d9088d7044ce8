"""The nanny: a small server that runs a worker in a child process and keeps it alive.

Why a second process: a worker can end in ways it can't recover from itself (a task
calls ``os._exit``, crashes in C code, or fills memory until the kernel kills it). The
nanny is the parent that notices and starts a fresh worker with the same name, so the
cluster keeps its size (distributed's ``Nanny``).

What the nanny does with its worker process (the *child*):

- exit code 0: the worker closed on purpose (retired, told to terminate, gave up
  reconnecting to the scheduler). The nanny closes too.
- any other end (a signal, a non-zero code): log a warning and start a new child. After
  :data:`BURST` deaths within :data:`BURST_WINDOW` seconds it first waits
  :data:`BACKOFF` seconds (and says so). It never gives up.
- every ``worker.memory.monitor-interval`` seconds it reads the child's memory (RSS,
  its own children included). Above ``worker.memory.terminate`` times ``memory_limit`` it
  stops the child (SIGTERM, then SIGKILL after a grace period) and starts a new one.

How the nanny knows a child is up: it hands the child the write end of a pipe
(``shoal worker --ready-fd N``). The child writes its worker's address there once the
worker listens and has registered with the scheduler, then closes it. End of file
without an address means the child died while starting. This works at every log level
and leaves the worker's stdout/stderr alone (they are the nanny's).

Requests on the nanny's own address (:func:`~shoal.comm.rpc.serve_requests`):
``RestartWorker`` (answered ``OK({"worker_pid", "worker_address", "restarts"})`` once the
new child has announced itself), ``Terminate`` and ``Identity``.

The child never outlives the nanny: it runs with ``--exit-with-parent`` and reads its
standard input from a pipe the nanny holds. When the nanny dies, even by SIGKILL, the
pipe closes and the worker closes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import psutil

from shoal import config
from shoal.comm.addressing import check_contact_address, resolve_bind
from shoal.comm.base import Listener
from shoal.comm.connection import Connection, listen
from shoal.comm.registry import parse_address, unparse_host_port
from shoal.comm.rpc import serve_requests
from shoal.comm.tasks import BackgroundTasks
from shoal.protocol.messages import (
    OK,
    ErrorReply,
    Identity,
    Message,
    RestartWorker,
    RunFunction,
    Terminate,
)
from shoal.worker.memory import ResidentMemory, descendants, parse_memory_limit
from shoal.worker.run_function import run_function

__all__ = [
    "NANNY_ENV",
    "Nanny",
    "child_environment",
    "format_resources",
    "stop_process",
    "worker_command",
]

logger = logging.getLogger("shoal.nanny")

#: The environment variable through which a worker learns its nanny's address.
NANNY_ENV = "SHOAL_NANNY_ADDRESS"
#: This many deaths within BURST_WINDOW seconds ...
BURST = 5
BURST_WINDOW = 10.0
#: ... make the nanny wait this many seconds before starting the worker again.
BACKOFF = 3.0
#: How often (in monitor ticks) the list of the worker's own children is refreshed.
_CHILDREN_EVERY = 10


# ---------------------------------------------------------------------- child processes


def format_resources(resources: Mapping[str, float]) -> str:
    """``{"GPU": 2}`` as ``shoal worker --resources`` reads it: ``"GPU=2.0"``."""
    items = []
    for name, amount in resources.items():
        if not name or any(c == "=" or c == "," or c.isspace() for c in name):
            raise ValueError(f"resource name {name!r} can't be passed on a command line")
        items.append(f"{name}={float(amount)!r}")
    return ",".join(items)


def worker_command(
    scheduler_address: str,
    *,
    name: str,
    nthreads: int,
    memory_limit: int,
    host: str = "127.0.0.1",
    port: int = 0,
    resources: Mapping[str, float] | None = None,
    nanny: bool = False,
    ready_fd: int | None = None,
    contact_address: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of a ``shoal worker`` child that exits with its parent.

    ``nanny=True`` starts a nanny (which starts the worker); ``ready_fd`` is the pipe on
    which a worker announces its address once it is up (see the module docstring);
    ``contact_address`` the address the worker advertises instead of its listener's.
    """
    args = [
        sys.executable,
        "-m",
        "shoal.cli.main",
        "worker",
        scheduler_address,
        "--nanny" if nanny else "--no-nanny",
        "--nthreads",
        str(nthreads),
        "--memory-limit",
        str(memory_limit),
        "--name",
        name,
        "--host",
        host,
        "--exit-with-parent",
    ]
    if port:
        args += ["--worker-port", str(port)]
    if resources:
        args += ["--resources", format_resources(resources)]
    if ready_fd is not None:
        args += ["--ready-fd", str(ready_fd)]
    if contact_address:
        args += ["--contact-address", contact_address]
    return [*args, *extra_args]


def child_environment(
    nanny_address: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment for a shoal child process, plus ``extra``.

    Like multiprocessing's spawn, the child gets this process's import path, so that
    functions from modules next to the user's script load on the workers. The child
    is told its nanny's address (:data:`NANNY_ENV`), or that it has none.
    """
    env = {**os.environ, **(extra or {})}
    env.setdefault("PYTHONUNBUFFERED", "1")
    # glibc keeps freed memory unless told to give it back early: without this a
    # worker's RSS stays high after spilling, and it pauses or is restarted needlessly
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "65536")
    paths = [p or os.getcwd() for p in sys.path if p == "" or os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if nanny_address:
        env[NANNY_ENV] = nanny_address
    else:
        env.pop(NANNY_ENV, None)
    return env


async def stop_process(
    proc: subprocess.Popen[bytes], *, wait: float = 0.0, grace: float = 5.0
) -> int:
    """Stop ``proc`` and reap it; return its exit code.

    First close its standard input (a ``--exit-with-parent`` child then closes itself)
    and give it ``wait`` seconds; then SIGTERM and ``grace`` seconds; then SIGKILL, for
    it and every process it started that is still there.
    """
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if await _exited(proc, wait):
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    if await _exited(proc, grace):
        return proc.returncode
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    for p in descendants:
        with contextlib.suppress(psutil.Error):
            p.kill()
    while not await _exited(proc, 1.0):  # SIGKILL can't be refused: this ends
        pass
    return proc.returncode


async def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.poll() is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def describe_exit(code: int) -> str:
    """``-9`` as ``"was killed by SIGKILL"``, ``1`` as ``"exited with code 1"``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def format_bytes(n: float) -> str:
    """``1_500_000`` as ``"1.43 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


class _Child:
    """One worker process, and what the nanny has learned of it."""

    def __init__(self, popen: subprocess.Popen[bytes], ready_fd: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        #: the worker's address, once it has announced itself
        self.address: str | None = None
        #: the address, or None when the child closed the pipe without announcing
        self.announced: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        #: the nanny is ending this child on purpose: its exit is expected
        self.stopping = False
        self._fd: int | None = ready_fd
        self._buffer = b""
        self._rss: ResidentMemory | None = None
        self._children: dict[int, psutil.Process] = {}
        self._ticks = 0
        os.set_blocking(ready_fd, False)
        asyncio.get_running_loop().add_reader(ready_fd, self._on_readable)

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._buffer += data
        if b"\n" in self._buffer:
            self.address = self._buffer.split(b"\n", 1)[0].decode(errors="replace").strip()
            self._finish(self.address or None)
        elif not data:
            self._finish(None)

    def _finish(self, address: str | None) -> None:
        if not self.announced.done():
            self.announced.set_result(address)
        self.close_pipe()

    def close_pipe(self) -> None:
        """Stop listening for the announcement (the child has ended or announced)."""
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if not self.announced.done():
            self.announced.set_result(None)

    def memory(self) -> int:
        """Resident memory of the child and of the processes it started (0 once gone).

        The children are looked for every :data:`_CHILDREN_EVERY` calls only (see
        :func:`~shoal.worker.memory.descendants`).
        """
        try:
            if self._rss is None:
                self._rss = ResidentMemory(self.pid)
        except psutil.Error:
            return 0
        total = self._rss.rss()
        if self._ticks % _CHILDREN_EVERY == 0:
            known = self._children
            self._children = {}
            for pid in descendants(self.pid):
                with contextlib.suppress(psutil.Error):
                    self._children[pid] = known.get(pid) or psutil.Process(pid)
        self._ticks += 1
        for p in self._children.values():
            with contextlib.suppress(psutil.Error):
                total += int(p.memory_info().rss)
        return total


# ---------------------------------------------------------------------- the server


class Nanny:
    """Runs a ``shoal worker`` child process and supervises it (see the module docstring).

    ``await Nanny(scheduler_address, nthreads=2, memory_limit="4GB")`` (or ``async
    with``) starts the nanny's own server at ``tcp://host:port`` and the first worker
    process; ``close()`` stops both. The worker process is started with the name,
    threads, memory limit, resources and ``worker_port`` given here, plus
    ``worker_args`` (e.g. ``["--log-level", "WARNING"]``), every time.

    ``terminate`` (default ``worker.memory.terminate``) is the fraction of
    ``memory_limit`` above which the worker is restarted (``False``/``0``: never);
    ``monitor_interval`` (default ``worker.memory.monitor-interval``) how often the
    worker is checked; ``kill_grace`` how long a worker has to close after SIGTERM;
    ``secret`` the cluster's shared secret, which whoever connects to the nanny must know
    (the worker process inherits this process's environment, and so its secret);
    ``env`` variables set for every worker process on top of this process's.
    ``interface`` binds the nanny and its worker to that interface's IPv4 address
    instead of ``host``; ``contact_address`` is what the worker advertises, and
    ``nanny_contact_address`` what the nanny does (NAT, containers).
    """

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int | None = None,
        memory_limit: str | int | float | None = "auto",
        name: str | int | None = None,
        host: str | None = None,
        port: int = 0,
        worker_port: int = 0,
        resources: Mapping[str, float] | None = None,
        worker_args: Sequence[str] = (),
        protocol: str | None = None,
        terminate: float | bool | None = None,
        monitor_interval: float | None = None,
        kill_grace: float = 5.0,
        secret: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
        interface: str | None = None,
        contact_address: str | None = None,
        nanny_contact_address: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if "://" not in scheduler_address:
            scheduler_address = f"tcp://{scheduler_address}"
        self.scheduler_address = scheduler_address
        self.nthreads = nthreads or os.cpu_count() or 1
        self.memory_limit = parse_memory_limit(memory_limit, self.nthreads)
        self.name = str(name) if name is not None else f"worker-{uuid.uuid4().hex[:8]}"
        self.resources = dict(resources or {})
        format_resources(self.resources)  # refuse what a command line can't carry, now
        self.worker_args = list(worker_args)
        self._env = dict(env or {})
        self._worker_port = worker_port
        self._protocol = (protocol or parse_address(scheduler_address)[0]).removesuffix("://")
        if self._protocol == "inproc":
            raise ValueError(
                "a nanny runs its worker in another process, which inproc:// can't reach; "
                "use a tcp:// scheduler address, or an in-process Worker without a nanny"
            )
        bind = resolve_bind(host, port, interface=interface, protocol=self._protocol)
        self._host, self._port = bind.host, bind.port
        #: what the worker advertises (``contact_address``), and the nanny itself
        self._worker_contact = (
            check_contact_address(contact_address, self._protocol) if contact_address else None
        )
        self._contact_address = (
            check_contact_address(nanny_contact_address, self._protocol)
            if nanny_contact_address
            else None
        )
        if terminate is None:
            terminate = config.get("worker.memory.terminate")
        fraction = float(terminate) if terminate else 0.0
        self.terminate_fraction = fraction
        #: bytes of worker memory above which the worker is restarted (0: never)
        self.terminate_at = int(fraction * self.memory_limit) if fraction > 0 else 0
        self.monitor_interval = float(
            monitor_interval or config.get("worker.memory.monitor-interval") or 0.1
        )
        self.kill_grace = kill_grace
        self._secret = secret
        self._ssl_context = ssl_context
        #: how many times a worker process was started again (for any reason)
        self.restarts = 0
        self.status = "created"
        self._listener: Listener | None = None
        self._child: _Child | None = None
        self._deaths: list[float] = []
        self._lock = asyncio.Lock()
        self._background = BackgroundTasks()
        self._closed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        """Where the scheduler (or anyone) reaches this nanny."""
        if self._listener is None:
            raise RuntimeError("the nanny is not started")
        return self._contact_address or str(self._listener.contact_address)

    @property
    def worker_pid(self) -> int | None:
        """The process id of the current worker process."""
        return self._child.pid if self._child else None

    @property
    def worker_address(self) -> str | None:
        """The current worker's address, once it has announced itself."""
        return self._child.address if self._child else None

    async def start(self) -> Nanny:
        """Listen, start the first worker process and supervise it; return self.

        This does not wait for the worker to be up: see :meth:`wait_for_worker`.
        """
        if self.status == "running":
            return self
        self._listener = await listen(
            f"{self._protocol}://{unparse_host_port(self._host, self._port)}",
            self._handle_connection,
            role="nanny",
            secret=self._secret,
            ssl_context=self._ssl_context,
        )
        self.status = "running"
        try:
            self._child = self._spawn()
        except BaseException:
            self._listener.stop()
            self.status = "closed"
            self._closed.set()
            raise
        self._background.spawn(self._supervise())
        logger.info(
            "Nanny at: %s; worker %s started (pid %d)", self.address, self.name, self._child.pid
        )
        return self

    def __await__(self) -> Generator[Any, None, Nanny]:
        return self.start().__await__()

    async def __aenter__(self) -> Nanny:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, reason: str = "") -> None:
        """Stop the worker process (SIGTERM, then SIGKILL) and stop serving."""
        if self.status in ("closing", "closed"):
            await self._closed.wait()
            return
        self.status = "closing"
        logger.info("Nanny %s closing%s", self.name, f": {reason}" if reason else "")
        if self._listener is not None:
            self._listener.stop()
        await self._background.cancel_all()
        try:
            async with self._lock:  # a restart in progress ends first
                if self._child is not None:
                    await self._stop_child(self._child, self.kill_grace)
        finally:
            self.status = "closed"
            self._closed.set()

    async def finished(self) -> None:
        """Wait until the nanny is closed."""
        await self._closed.wait()

    async def wait_for_worker(self, timeout: float | None = None) -> str:
        """Wait until a worker process has announced itself; return the worker's address.

        A child that dies while starting is replaced by the supervisor; this waits for
        the replacement. Raise ``TimeoutError`` after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self.status != "running":
                raise RuntimeError(f"the nanny is {self.status}: no worker will start")
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no worker process announced itself within {timeout} s")
            child = self._child
            if child is not None:
                address = await asyncio.wait_for(asyncio.shield(child.announced), remaining)
                if address is not None and child is self._child:
                    return address
            await asyncio.sleep(self.monitor_interval)  # being replaced

    # ------------------------------------------------------------------ the child

    def _spawn(self) -> _Child:
        read_fd, write_fd = os.pipe()
        try:
            args = worker_command(
                self.scheduler_address,
                name=self.name,
                nthreads=self.nthreads,
                memory_limit=self.memory_limit,
                host=self._host,
                port=self._worker_port,
                resources=self.resources,
                ready_fd=write_fd,
                contact_address=self._worker_contact,
                extra_args=self.worker_args,
            )
            popen = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                env=child_environment(self.address, extra=self._env),
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds it now: its exit closes the pipe
        return _Child(popen, read_fd)

    async def _stop_child(self, child: _Child, grace: float) -> None:
        child.stopping = True
        code = await stop_process(child.popen, grace=grace)
        child.close_pipe()
        logger.info("Worker process %d (%s) %s", child.pid, self.name, describe_exit(code))

    async def _replace(self, child: _Child | None, reason: str, grace: float) -> _Child:
        """Stop ``child`` (if it is still the current one) and start a new worker process."""
        async with self._lock:
            if self.status != "running":
                raise RuntimeError(f"the nanny is {self.status}: it starts no more workers")
            current = self._child
            if current is not None and current is not child:
                return current  # someone replaced it meanwhile
            if current is not None:
                await self._stop_child(current, grace)
                self._child = None
            if self.status != "running":
                raise RuntimeError(f"the nanny is {self.status}: it starts no more workers")
            self._child = new = self._spawn()
            self.restarts += 1
            logger.info("Worker %s restarted (%s): new process %d", self.name, reason, new.pid)
            return new

    async def _supervise(self) -> None:
        """Every monitor interval: notice a dead worker process, or one over its memory."""
        while self.status == "running":
            await asyncio.sleep(self.monitor_interval)
            if self._lock.locked():
                continue  # a restart is in progress
            child = self._child
            try:
                if child is None:  # starting the last one failed
                    await self._replace(None, "starting it again", grace=self.kill_grace)
                    continue
                code = child.popen.poll()
                if code == 0:
                    child.close_pipe()
                    await self.close(reason=f"the worker process {child.pid} exited with code 0")
                    return
                if code is not None:
                    await self._on_death(child, code)
                elif self._over_memory(child):
                    await self._replace(child, "memory", grace=self.kill_grace)
            except Exception:
                if self.status != "running":
                    return
                logger.exception(
                    "Nanny %s could not start worker process; trying again in %.0f s",
                    self.name,
                    BACKOFF,
                )
                await asyncio.sleep(BACKOFF)

    async def _on_death(self, child: _Child, code: int) -> None:
        child.close_pipe()
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._deaths = [t for t in self._deaths if now - t < BURST_WINDOW] + [now]
        logger.warning(
            "Worker process %d (%s) %s; starting a new one",
            child.pid,
            self.name,
            describe_exit(code),
        )
        if len(self._deaths) >= BURST:
            logger.warning(
                "Worker %s died %d times within %.0f s; waiting %.0f s before starting it "
                "again (see the worker's output above for why it dies)",
                self.name,
                len(self._deaths),
                BURST_WINDOW,
                BACKOFF,
            )
            self._deaths.clear()
            await asyncio.sleep(BACKOFF)
        await self._replace(child, describe_exit(code), grace=self.kill_grace)

    def _over_memory(self, child: _Child) -> bool:
        if not self.terminate_at:
            return False
        used = child.memory()
        if used <= self.terminate_at:
            return False
        logger.warning(
            "Worker exceeded %d%% memory budget. Restarting: %s (pid %d%s) uses %s; its "
            "memory limit is %s (restart above %s)",
            round(self.terminate_fraction * 100),
            self.name,
            child.pid,
            f", {child.address}" if child.address else "",
            format_bytes(used),
            format_bytes(self.memory_limit),
            format_bytes(self.terminate_at),
        )
        return True

    # ------------------------------------------------------------------ requests

    async def _handle_connection(self, conn: Connection) -> None:
        await serve_requests(conn, self.dispatch)

    async def dispatch(self, msg: Message) -> Message:
        """Answer one request (``RestartWorker``, ``Terminate``, ``Identity``, and
        ``RunFunction`` for ``client.run(..., nanny=True)``)."""
        if isinstance(msg, RunFunction):
            return await run_function(msg, self, is_worker=False)
        if isinstance(msg, RestartWorker):
            return await self._restart_request(msg.timeout)
        if isinstance(msg, Terminate):
            self._background.spawn(self.close(reason="asked to terminate"))
            return OK()
        if isinstance(msg, Identity):
            return OK(self.identity())
        return ErrorReply(f"a nanny does not answer {msg.op!r} requests")

    def identity(self) -> dict[str, Any]:
        """Who this nanny is and how its worker is doing."""
        return {
            "type": "Nanny",
            "address": self.address,
            "name": self.name,
            "scheduler": self.scheduler_address,
            "status": self.status,
            "worker_pid": self.worker_pid,
            "worker_address": self.worker_address,
            "restarts": self.restarts,
            "nthreads": self.nthreads,
            "memory_limit": self.memory_limit,
        }

    async def _restart_request(self, timeout: float) -> Message:
        """Kill the worker process, start a new one, answer once it has announced itself."""
        if self.status != "running":
            return ErrorReply(f"nanny {self.name} is {self.status}; it restarts no worker")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            child = await self._replace(
                self._child, "asked to restart", grace=min(self.kill_grace, timeout / 2)
            )
        except RuntimeError as e:
            return ErrorReply(str(e))
        try:
            address = await asyncio.wait_for(
                asyncio.shield(child.announced), max(deadline - loop.time(), 0.0)
            )
        except asyncio.TimeoutError:
            return ErrorReply(
                f"the new worker process {child.pid} of {self.name} did not start within "
                f"{timeout} s; the nanny goes on supervising it (see its log)"
            )
        if address is None:
            code = child.popen.poll()
            return ErrorReply(
                f"the new worker process {child.pid} of {self.name} "
                f"{describe_exit(code) if code is not None else 'closed its pipe'} while "
                "starting; the nanny starts another one (see the worker's output for why)"
            )
        return OK({"worker_pid": child.pid, "worker_address": address, "restarts": self.restarts})

    def __repr__(self) -> str:
        where = self.address if self._listener is not None else "not started"
        return f"<Nanny {self.name!r} {where} worker pid={self.worker_pid} {self.status}>"
