"""``LocalCluster``: a scheduler and workers on this machine, in threads or processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from collections.abc import Generator, Iterable
from typing import Any

from shoal import run_on_scheduler
from shoal.client.sync import LoopThread, acquire_loop, release_loop
from shoal.config import parse_seconds
from shoal.deploy.adaptive import Adaptive
from shoal.deploy.process import WorkerProcess
from shoal.scheduler import handlers
from shoal.scheduler.server import Scheduler
from shoal.security import Security, remember_security
from shoal.worker.memory import parse_memory_limit, system_memory
from shoal.worker.nanny import Nanny
from shoal.worker.server import Worker

logger = logging.getLogger("shoal.deploy")


def default_workers_threads(
    cores: int, n_workers: int | None, threads_per_worker: int | None, processes: bool
) -> tuple[int, int]:
    """Split ``cores`` into (workers, threads per worker) as distributed's LocalCluster does."""
    if n_workers is None and threads_per_worker is None:
        if not processes:
            return 1, cores
        if cores <= 4:
            return cores, 1
        n = max(int(math.sqrt(cores)), 2)
        while cores % n:
            n -= 1
        return n, cores // n
    if n_workers is None:
        assert threads_per_worker is not None
        return max(1, cores // threads_per_worker), threads_per_worker
    if threads_per_worker is None:
        return n_workers, max(1, cores // max(n_workers, 1))
    return n_workers, threads_per_worker


class LocalCluster:
    """A scheduler in this process and ``n_workers`` workers.

    ``processes=True`` (default) runs each worker in its own process over TCP, under a
    nanny (``nanny=True``, the default, as distributed does) that starts it again, with
    the same name, when it dies or exceeds its memory limit: the nannies are
    :class:`~shoal.worker.nanny.Nanny` servers in this process, on the cluster's event
    loop (one interpreter start per worker, not two); ``nanny=False`` runs the worker
    processes unsupervised. ``processes=False`` runs the workers as threads of
    this process over ``inproc://`` (``nanny`` is then ignored).
    ``resources`` (e.g. ``{"GPU": 1}``) are declared by every worker, for tasks
    submitted with ``resources=``.
    ``dashboard_address`` is where the scheduler serves its dashboard (``":8787"``; a
    random port when that one is taken; ``None``: no dashboard), see ``dashboard_link``.
    ``journal`` is a file where the scheduler journals its events, so that a scheduler
    started again on it (``shoal scheduler --journal``) recovers the tasks.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        memory_limit: str | int | float | None = "auto",
        scheduler_port: int = 0,
        dashboard_address: str | int | None = ":8787",
        host: str | None = None,
        protocol: str | None = None,
        asynchronous: bool = False,
        silence_logs: int | bool = logging.WARNING,
        name: str | None = None,
        resources: dict[str, float] | None = None,
        nanny: bool = True,
        security: Security | bool | None = None,
        allow_run_on_scheduler: bool = False,
        journal: str | os.PathLike[str] | None = None,
        **worker_kwargs: Any,
    ) -> None:
        cores = os.cpu_count() or 1
        self.n_workers, self.threads_per_worker = default_workers_threads(
            cores, n_workers, threads_per_worker, processes
        )
        self.processes = processes
        self.nanny = nanny and processes
        if isinstance(memory_limit, str) and memory_limit.strip().lower() == "auto":
            self.memory_limit = system_memory() // max(self.n_workers, 1)
        else:
            self.memory_limit = parse_memory_limit(memory_limit, self.threads_per_worker)
        self.scheduler_port = scheduler_port
        self.dashboard_address = dashboard_address
        self.host = host or "127.0.0.1"
        self.protocol = (protocol or ("tcp" if processes else "inproc")).removesuffix("://")
        self.name = name or "LocalCluster"
        self.resources = dict(resources or {})
        #: the cluster's credentials: a fresh secret unless told otherwise (``security=
        #: False`` for none), so that other users of this machine can't use it
        if security is None or security is True:
            self.security = Security.temporary(tls=self.protocol == "tls")
        elif security is False:
            self.security = Security.insecure()
        else:
            self.security = security
        self.allow_run_on_scheduler = allow_run_on_scheduler
        #: the scheduler's journal file (see README: Surviving a scheduler crash)
        self.journal = journal
        self.worker_kwargs = worker_kwargs
        self._log_level = logging.getLevelName(int(silence_logs)) if silence_logs else "INFO"
        if silence_logs:
            logging.getLogger("shoal").setLevel(int(silence_logs))
        self._asynchronous = asynchronous
        self.scheduler: Scheduler | None = None
        self.workers: dict[str, Worker | WorkerProcess | Nanny] = {}
        self._names = itertools.count()
        self.status = "created"
        self._loop_thread: LoopThread | None = None
        self._lock: asyncio.Lock | None = None
        self._adaptive: Adaptive | None = None
        if not asynchronous:
            self._loop_thread = acquire_loop()
            try:
                self._loop_thread.run(self._start)
            except BaseException:
                self._loop_thread.run(self._close)
                release_loop(self._loop_thread)
                self._loop_thread = None
                raise

    # ------------------------------------------------------------------ lifecycle

    def __await__(self) -> Generator[Any, None, LocalCluster]:
        async def start() -> LocalCluster:
            await self._start()
            return self

        return start().__await__()

    async def __aenter__(self) -> LocalCluster:
        return await self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> None:
        if self.status == "running":
            return
        self._lock = asyncio.Lock()
        self.scheduler = await Scheduler(
            host=self.host,
            port=self.scheduler_port,
            protocol=self.protocol,
            security=self.security,
            dashboard_address=self.dashboard_address,
            journal=self.journal,
        )
        if self.allow_run_on_scheduler:
            run_on_scheduler.enable(self.scheduler)
        remember_security(self.scheduler.address, self.security)
        self.status = "running"
        await self._scale(self.n_workers)

    @property
    def dashboard_link(self) -> str | None:
        """The URL of the dashboard (None when the cluster has none)."""
        return None if self.scheduler is None else self.scheduler.dashboard_link

    @property
    def scheduler_address(self) -> str:
        """The scheduler's address, for ``Client(cluster.scheduler_address)``."""
        assert self.scheduler is not None, "the cluster is not started"
        return self.scheduler.address

    @property
    def scheduler_local_address(self) -> str:
        """Where a client in this process reaches the scheduler (see
        :attr:`Scheduler.local_address`)."""
        assert self.scheduler is not None, "the cluster is not started"
        return self.scheduler.local_address

    def close(self, timeout: float | None = None) -> Any:
        """Stop every worker and the scheduler; leave no process or thread behind."""
        if self._asynchronous:
            return self._close()
        if self._loop_thread is None:
            return None
        try:
            self._loop_thread.run(self._close, timeout=timeout or 60)
        finally:
            lt, self._loop_thread = self._loop_thread, None
            release_loop(lt)
        return None

    async def _close(self) -> None:
        if self.status == "closed":
            return
        self.status = "closing"
        if self._adaptive is not None:
            await self._adaptive.stop()
        await asyncio.gather(*(self._stop_worker(n) for n in list(self.workers)))
        if self.scheduler is not None:
            with contextlib.suppress(RuntimeError):  # never started
                remember_security(self.scheduler.address, None)
            await self.scheduler.close()
        self.status = "closed"

    def __del__(self) -> None:
        if self.status == "running" and self._loop_thread is not None:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        addr = self.scheduler.address if self.scheduler and self.status == "running" else None
        return (
            f"LocalCluster({addr!r}, workers={len(self.workers)}, "
            f"threads={len(self.workers) * self.threads_per_worker}, "
            f"memory={self.memory_limit * len(self.workers)})"
        )

    def _repr_html_(self) -> str:
        from shoal.diagnostics.html import cluster_html

        return cluster_html(self)

    # ------------------------------------------------------------------ scaling

    def scale(self, n: int) -> Any:
        """Add or remove workers until there are ``n``."""
        if self._asynchronous:
            return self._scale(n)
        assert self._loop_thread is not None
        return self._loop_thread.run(lambda: self._scale(n))

    async def _scale(self, n: int) -> None:
        assert self._lock is not None and self.scheduler is not None
        async with self._lock:
            excess = len(self.workers) - n
            if excess > 0:
                # Gracefully first: the scheduler picks the workers cheapest to retire
                # and moves their data away; whatever it refuses is stopped anyway.
                retired = await handlers.retire_workers(self.scheduler, None, n=excess)
                await self._stop_named(info["name"] for info in retired.values())
                while len(self.workers) > n:
                    await self._stop_worker(list(self.workers)[-1])
            new = [str(next(self._names)) for _ in range(n - len(self.workers))]
            await asyncio.gather(*(self._start_worker(name) for name in new))

    async def _retire(self, addresses: list[str]) -> None:
        """Retire the workers at ``addresses`` gracefully, then stop them."""
        assert self._lock is not None and self.scheduler is not None
        async with self._lock:
            retired = await handlers.retire_workers(self.scheduler, addresses)
            await self._stop_named(info["name"] for info in retired.values())

    async def _stop_named(self, names: Iterable[object]) -> None:
        await asyncio.gather(*(self._stop_worker(str(name)) for name in names))

    def adapt(
        self,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: str | float = "1s",
        wait_count: int = 3,
        target_duration: str | float = "5s",
        **kwargs: Any,
    ) -> Adaptive:
        """Scale between ``minimum`` and ``maximum`` workers with the load.

        Workers are added as soon as tasks queue up, and idle ones are retired
        gracefully after ``wait_count`` checks in a row found too many. Calling ``adapt``
        again replaces the previous policy; ``scale(n)`` does not stop it.
        """
        adaptive = Adaptive(
            self,
            minimum=minimum,
            maximum=maximum,
            interval=parse_seconds(interval),
            wait_count=wait_count,
            target_duration=parse_seconds(target_duration),
        )

        async def install() -> Adaptive:
            if self._adaptive is not None:
                await self._adaptive.stop()
            self._adaptive = adaptive
            adaptive.start()
            return adaptive

        if self._asynchronous:
            asyncio.get_running_loop().create_task(install())
            return adaptive
        assert self._loop_thread is not None
        return self._loop_thread.run(install)  # type: ignore[no-any-return]

    async def _start_worker(self, name: str) -> None:
        """Start worker ``name``; one that fails to start is closed and forgotten (so
        ``scale`` doesn't count it), and the error raised."""
        try:
            await self._launch_worker(name)
        except BaseException:
            worker = self.workers.pop(name, None)
            if worker is not None:
                with contextlib.suppress(Exception):
                    await worker.close()
            raise

    async def _launch_worker(self, name: str) -> None:
        assert self.scheduler is not None
        if self.processes and self.nanny:
            nanny = Nanny(
                self.scheduler.address,
                nthreads=self.threads_per_worker,
                memory_limit=self.memory_limit,
                name=name,
                host=self.host,
                resources=self.resources,
                worker_args=["--log-level", self._log_level],
                secret=self.security.secret,
                ssl_context=self.security.server_context(),
                env=self.security.environment(),
            )
            self.workers[name] = nanny
            await nanny.start()
            try:
                await nanny.wait_for_worker(timeout=60)
            except (TimeoutError, asyncio.TimeoutError, RuntimeError) as e:
                raise RuntimeError(f"worker {name} did not start: {e}; see its output above") from e
        elif self.processes:
            proc = WorkerProcess(
                self.scheduler.address,
                name=name,
                nthreads=self.threads_per_worker,
                memory_limit=self.memory_limit,
                host=self.host,
                resources=self.resources,
                extra_args=["--log-level", self._log_level],
                env=self.security.environment() or None,
            )
            self.workers[name] = proc
            proc.start()
            proc.address = await self._wait_for_worker(name, proc)
            info = self.scheduler.worker_info.get(proc.address, {})
            proc.nanny_address = info.get("nanny") or None
        else:
            worker = Worker(
                self.scheduler.address,
                nthreads=self.threads_per_worker,
                name=name,
                memory_limit=self.memory_limit,
                host=self.host,
                resources=self.resources,
                security=self.security,
                **self.worker_kwargs,
            )
            self.workers[name] = worker
            await worker.start()

    async def _wait_for_worker(self, name: str, proc: WorkerProcess, timeout: float = 60) -> str:
        assert self.scheduler is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for addr, info in self.scheduler.worker_info.items():
                if info["name"] == name:
                    return addr
            if not proc.is_alive():
                raise RuntimeError(
                    f"worker process {name} exited with code "
                    f"{proc.proc.returncode if proc.proc else None} "
                    "before joining; see its output above"
                )
            await asyncio.sleep(0.02)
        await proc.close()
        raise TimeoutError(f"worker {name} did not join the scheduler within {timeout} s")

    async def _stop_worker(self, name: str) -> None:
        worker = self.workers.pop(name, None)
        if worker is not None:
            await worker.close()
