"""Questions about the cluster, and running functions on its workers (Client methods)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from shoal.client.futures import futures_in
from shoal.comm.rpc import ConnectionPool
from shoal.errors import RemoteError
from shoal.protocol.messages import (
    OK,
    Broadcast,
    ErrorReply,
    HasWhat,
    Identity,
    Message,
    NThreads,
    Processing,
    RunFunction,
    RunOnScheduler,
    WhoHas,
)
from shoal.protocol.serialize import dumps_run_spec, loads
from shoal.protocol.versions import collect_versions, compare_versions


class VersionMismatchError(ValueError):
    """``get_versions(check=True)`` found packages whose versions differ."""


class ClusterQueries:
    """The part of :class:`~shoal.Client` that asks the scheduler and workers questions."""

    _pool: ConnectionPool | None
    scheduler_address: str | None
    scheduler_versions: dict[str, Any]

    _sync: Callable[..., Any]  # Client's: run a coroutine function (sync) or return it
    _background: set[asyncio.Task[Any]]

    async def _request(self, msg: Message) -> Any:
        assert self._pool is not None and self.scheduler_address is not None
        reply = await self._pool.request(self.scheduler_address, msg)
        return reply.value if isinstance(reply, OK) else reply

    async def _request_lists(self, msg: Message) -> dict[Any, list[Any]]:
        """A request whose answer maps to sequences; give lists, as distributed does."""
        return {k: list(v) for k, v in (await self._request(msg)).items()}

    def scheduler_info(self, n_workers: int = -1, **kwargs: Any) -> Any:
        """The scheduler's identity and its workers."""
        return self._sync(self._scheduler_info)

    async def _scheduler_info(self) -> Any:
        info = await self._request(Identity())
        self._scheduler_identity = info  # for dashboard_link in asynchronous mode
        return info

    @property
    def dashboard_link(self) -> str | None:
        """The URL of the cluster's dashboard (None when the scheduler serves none).

        The cluster's own link when this client made or was given one; else the port
        the scheduler reports (``scheduler_info()["services"]["dashboard"]``) on the
        host this client connected to. An asynchronous client uses what its last
        ``await client.scheduler_info()`` said.
        """
        link = getattr(getattr(self, "cluster", None), "dashboard_link", None)
        if link:
            return str(link)
        if getattr(self, "_asynchronous", False):
            info = getattr(self, "_scheduler_identity", None)
            if info is None:
                raise RuntimeError(
                    "an asynchronous client learns the dashboard's port from the scheduler: "
                    "`await client.scheduler_info()` once, then read client.dashboard_link"
                )
        else:
            info = self.scheduler_info()
        port = info.get("services", {}).get("dashboard")
        if port is None or self.scheduler_address is None:
            return None
        scheme, _, rest = self.scheduler_address.partition("://")
        host = "127.0.0.1" if scheme == "inproc" else rest.rpartition(":")[0].strip("[]")
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/status"

    def who_has(self, futures: Any = None, **kwargs: Any) -> Any:
        """Which workers hold each key (of ``futures``, or all)."""
        keys = None if futures is None else tuple(f.key for f in futures_in(futures))
        return self._sync(self._request_lists, WhoHas(keys=keys))

    def has_what(self, workers: Iterable[str] | None = None, **kwargs: Any) -> Any:
        """Which keys each worker holds."""
        return self._sync(self._request_lists, HasWhat(workers=_workers(workers)))

    def processing(self, workers: Iterable[str] | None = None) -> Any:
        """Which keys each worker is running or has queued."""
        return self._sync(self._request_lists, Processing(workers=_workers(workers)))

    def nthreads(self, workers: Iterable[str] | None = None, **kwargs: Any) -> Any:
        """The number of threads of each worker."""
        return self._sync(self._request, NThreads(workers=_workers(workers)))

    ncores = nthreads

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> Any:
        """Block until at least ``n_workers`` workers are connected."""
        return self._sync(self._wait_for_workers, n_workers, timeout)

    async def _wait_for_workers(self, n_workers: int, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            n = len(await self._request(NThreads(workers=None)))
            if n >= n_workers:
                return
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"only {n} of {n_workers} workers arrived within {timeout} s")
            await asyncio.sleep(0.05)

    def get_versions(self, check: bool = False, packages: Sequence[str] | None = None) -> Any:
        """Package versions of this client, the scheduler and every worker."""
        return self._sync(self._get_versions, check)

    async def _get_versions(self, check: bool) -> dict[str, Any]:
        info = await self._request(Identity())
        local = collect_versions()
        workers = {a: w.get("versions", {}) for a, w in info.get("workers", {}).items()}
        result = {"client": local, "scheduler": self.scheduler_versions, "workers": workers}
        if check:
            components = {"scheduler": self.scheduler_versions}
            components.update({f"worker {addr}": v for addr, v in workers.items()})
            problems = [
                f"client vs {name}: {p}"
                for name, versions in components.items()
                for p in compare_versions(local, versions)
            ]
            if problems:
                raise VersionMismatchError(
                    "shoal's processes run different versions of packages that must "
                    "match:\n  " + "\n  ".join(problems)
                )
        return result

    # ------------------------------------------------------------------ run

    def run_on_scheduler(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)`` in the scheduler process; return its result.

        A parameter named ``dask_scheduler`` receives the Scheduler object. Off unless
        the scheduler was started with ``--allow-run-on-scheduler``: it runs your code
        inside the scheduler.
        """
        return self._sync(self._run_on_scheduler, function, args, kwargs)

    async def _run_on_scheduler(
        self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        assert self._pool is not None and self.scheduler_address is not None
        msg = RunOnScheduler(function=dumps_run_spec((function, args, kwargs)))
        try:
            reply = await self._pool.request(self.scheduler_address, msg)
        except RemoteError as e:
            original: object = None
            if isinstance(e.reply, ErrorReply) and e.reply.exception is not None:
                with contextlib.suppress(Exception):
                    original = loads(e.reply.exception)
            if isinstance(original, BaseException):
                raise original from None
            raise
        assert isinstance(reply, OK)
        return loads(reply.value)

    def run(
        self,
        function: Callable[..., Any],
        *args: Any,
        workers: Iterable[str] | None = None,
        wait: bool = True,
        nanny: bool = False,
        on_error: str = "raise",
        **kwargs: Any,
    ) -> Any:
        """Run ``function(*args, **kwargs)`` on every worker (or ``workers``).

        A parameter named ``dask_worker`` receives the worker object. With
        ``nanny=True`` the function runs in each worker's nanny instead (``dask_worker``
        is then the nanny; a worker without one is an error). Returns ``{worker
        address: result}``. ``on_error``: ``"raise"`` the first error, ``"return"``
        exceptions as values, ``"ignore"`` failed workers.
        """
        if on_error not in ("raise", "return", "ignore"):
            raise ValueError(f"on_error must be 'raise', 'return' or 'ignore', not {on_error!r}")
        return self._sync(self._run, function, args, kwargs, workers, wait, on_error, nanny)

    async def _run(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workers: Iterable[str] | None,
        wait: bool,
        on_error: str,
        nanny: bool = False,
    ) -> Any:
        msg = Broadcast(
            msg=RunFunction(function=dumps_run_spec((function, args, kwargs))).to_wire(),
            workers=_workers(workers),
            nanny=nanny,
        )
        if not wait:
            task = asyncio.ensure_future(self._request(msg))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return None
        replies = await self._request(msg)
        if isinstance(replies, Message):
            raise RemoteError(getattr(replies, "message", repr(replies)))
        results = {}
        for addr, raw in replies.items():
            reply = Message.from_wire(dict(raw))
            if isinstance(reply, OK):
                results[addr] = loads(reply.value)
                continue
            assert isinstance(reply, ErrorReply)
            exc: BaseException = RemoteError(f"on worker {addr}: {reply.message}")
            if reply.exception is not None:
                with contextlib.suppress(Exception):
                    exc = loads(reply.exception)
            if on_error == "raise":
                raise exc
            if on_error == "return":
                results[addr] = exc
        return results


def _workers(workers: Iterable[str] | None) -> tuple[str, ...] | None:
    if workers is None:
        return None
    if isinstance(workers, str):
        return (workers,)
    return tuple(workers)
