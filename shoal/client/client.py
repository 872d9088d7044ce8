"""``Client``: connect to a scheduler, submit work, gather results.

One asynchronous implementation; in synchronous mode (the default) every public method
runs its coroutine on the shared loop thread (:mod:`shoal.client.sync`) and blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Collection, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import dask

from shoal import config
from shoal._context import current_worker
from shoal._types import Key
from shoal.actor import ActorConstructor
from shoal.client.actors import ActorsMixin
from shoal.client.collections import TASK_BASED_METHODS, CollectionsMixin
from shoal.client.control import ClusterControl
from shoal.client.data import DataMixin
from shoal.client.datasets import DatasetsMixin
from shoal.client.diagnostics import ClusterQueries
from shoal.client.futures import (
    ALL_COMPLETED,
    Future,
    FutureState,
    RemoteException,
    _wait,
    futures_in,
)
from shoal.client.keys import SCALARS, check_options, map_keys, submit_key
from shoal.client.observe import ObserveMixin
from shoal.client.plugins import PluginsMixin
from shoal.client.state import ClientRefs
from shoal.client.sync import LoopThread, acquire_loop, in_loop_thread, release_loop
from shoal.comm import get_data
from shoal.comm.batched import BatchedSender
from shoal.comm.connection import Connection, connect
from shoal.comm.rpc import ConnectionPool
from shoal.errors import CommClosedError, CommError, LocalProtocolError, ProtocolError, RemoteError
from shoal.protocol.messages import (
    CancelKeys,
    ClientDesiresKeys,
    ClientReleasesKeys,
    CloseClient,
    ErrorReply,
    KeyErred,
    KeyInMemory,
    KeyLost,
    KeysCancelled,
    Message,
    RegisterClient,
    TaskSpec,
    UpdateGraph,
)
from shoal.protocol.observe import TopicEvent
from shoal.protocol.runspec import KEEP, KeyRef, dumps_call, find_refs, replace_objects
from shoal.protocol.versions import collect_versions
from shoal.security import Security, known_security

logger = logging.getLogger("shoal.client")

_default_lock = threading.Lock()
#: Clients made with ``set_as_default=True``, oldest first; the newest running one is
#: the default client and dask's default scheduler.
_defaults: list[Client] = []
#: dask's settings from before the first default client, restored after the last.
_saved_dask_config: dict[str, Any] = {}
_no_default = object()


def _running_default() -> Client | None:
    for c in reversed(_defaults):
        if c.status == "running":
            return c
    return None


def _point_dask_at(client: Client | None) -> None:
    """Make dask use ``client`` (or, with None, the settings from before shoal's)."""
    if client is not None:
        # the client object, not its get: dask refuses an asynchronous one clearly
        dask.config.set({"scheduler": client, **TASK_BASED_METHODS})
    else:
        dask.config.set(dict(_saved_dask_config))


def default_client(c: Client | None = None) -> Client:
    """Return ``c`` or the default client of this process; raise if there is none."""
    if c is not None:
        return c
    default = _running_default()
    if default is not None:
        return default
    raise ValueError("No clients found. Start a client: shoal.Client() or Client(address)")


class _TaskOptions(NamedTuple):
    """What ``submit`` and ``map`` give every task they make, normalized once per call."""

    priority: int
    retries: int
    workers: tuple[str, ...] | None
    allow_other_workers: bool
    resources: dict[str, float] | None  # a copy, not the caller's dict
    actor: bool

    @classmethod
    def of(
        cls,
        priority: int,
        retries: int | None,
        workers: str | Iterable[str] | None,
        allow_other_workers: bool,
        resources: dict[str, float] | None,
        actor: bool,
    ) -> _TaskOptions:
        """Normalize the keyword arguments of ``submit``/``map``."""
        if isinstance(workers, str):
            workers = (workers,)
        check_options([priority], [retries], [workers], [resources])
        return cls(
            priority,
            retries or 0,
            tuple(workers) if workers is not None else None,
            allow_other_workers,
            dict(resources) if resources else None,
            actor,
        )


class Client(
    ActorsMixin,
    DataMixin,
    CollectionsMixin,
    ClusterQueries,
    ClusterControl,
    ObserveMixin,
    DatasetsMixin,
    PluginsMixin,
):
    """Connect to a shoal cluster (``distributed.Client``'s API).

    ``Client()`` starts a :class:`~shoal.LocalCluster` sized to this machine;
    ``Client("tcp://host:8786")`` connects to a running scheduler; ``Client(cluster)``
    uses the cluster's scheduler. With ``asynchronous=True`` every method returns an
    awaitable: ``client = await Client(addr, asynchronous=True)``.
    """

    def __init__(
        self,
        address: str | Any = None,
        loop: Any = None,
        timeout: float | object = _no_default,
        set_as_default: bool = True,
        asynchronous: bool = False,
        name: str | None = None,
        security: Any = None,
        direct_to_workers: bool | None = None,
        heartbeat_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        if security is not None and not isinstance(security, Security):
            raise TypeError(f"security must be a shoal.Security, not {type(security).__name__}")
        self._security: Security | None = security
        self.id = f"{name or 'Client'}-{uuid.uuid4()}"
        self.timeout = (
            float(config.get("comm.timeouts.connect")) if timeout is _no_default else float(timeout)  # type: ignore[arg-type]
        )
        self.status = "newly-created"
        self._asynchronous = asynchronous
        self._set_as_default = set_as_default
        self._cluster_kwargs = kwargs
        self.cluster: Any = None
        self._owns_cluster = False
        self.scheduler_address: str | None = None
        if address is not None and not isinstance(address, str):
            self.cluster = address
            address = address.scheduler_address
            if self._security is None:
                self._security = getattr(self.cluster, "security", None)
        self._address = address
        self._refs = ClientRefs()
        self._states: dict[Key, FutureState] = {}
        self._lock = threading.RLock()
        self._outbox: list[Message] = []
        self._flush_pending = False
        self._stream: BatchedSender | None = None
        self._conn: Connection | None = None
        self._pool: ConnectionPool | None = None
        self._stream_task: asyncio.Task[Any] | None = None
        self._reconnecting = False
        self._reconnect_task: asyncio.Task[Any] | None = None
        self._callback_executor: ThreadPoolExecutor | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._generation = itertools.count()
        self.scheduler_versions: dict[str, Any] = {}
        self._loop_thread: LoopThread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        if not asynchronous:
            self._loop_thread = acquire_loop()
            self.loop = self._loop_thread.loop
            if address is None:
                from shoal.deploy.local import LocalCluster

                self.cluster = LocalCluster(**kwargs)
                self._owns_cluster = True
                self._address = self.cluster.scheduler_address
            try:
                self._loop_thread.run(self._start, timeout=self.timeout + 5)
            except BaseException:
                self._release_resources_sync()
                raise

    # ------------------------------------------------------------------ plumbing

    @property
    def asynchronous(self) -> bool:
        """Whether methods return awaitables."""
        return self._asynchronous

    def _sync(
        self, fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        if self._asynchronous:
            coro = fn(*args, **kwargs)
            return asyncio.wait_for(coro, timeout) if timeout is not None else coro
        if self.loop is not None and in_loop_thread(self.loop):
            raise RuntimeError(
                "this synchronous Client method was called from the event loop; create the "
                "client with asynchronous=True and await its methods"
            )
        assert self._loop_thread is not None
        return self._loop_thread.run(lambda: fn(*args, **kwargs), timeout=timeout)

    def __await__(self) -> Generator[Any, None, Client]:
        async def start() -> Client:
            if self.status != "running":
                await self._start()
            return self

        return start().__await__()

    async def __aenter__(self) -> Client:
        return await self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client: scheduler={self.scheduler_address!r} status={self.status}>"

    async def _start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self._address is None:
            from shoal.deploy.local import LocalCluster

            self.cluster = await LocalCluster(asynchronous=True, **self._cluster_kwargs)
            self._owns_cluster = True
            self._address = self.cluster.scheduler_address
            if self._security is None:
                self._security = getattr(self.cluster, "security", None)
        assert isinstance(self._address, str)
        self.scheduler_address = self._address
        if self._security is None:
            self._security = known_security(self._address) or Security.from_config()
        self._pool = ConnectionPool(
            role="client",
            timeout=self.timeout,
            secret=self._security.secret,
            ssl_context=self._security.client_context(),
        )
        await self._open_stream(self.timeout)
        self.status = "running"
        self._flush_outbox()
        if self._set_as_default:
            with _default_lock:
                if _running_default() is None:
                    _saved_dask_config.clear()
                    for name in ("scheduler", *TASK_BASED_METHODS):
                        _saved_dask_config[name] = dask.config.get(name, None)
                _defaults.append(self)
                # dask.compute, x.compute() and x.persist() now run here
                _point_dask_at(self)

    async def _open_stream(self, timeout: float) -> None:
        """Connect to the scheduler, register as this client, start reading its stream.

        A cluster whose scheduler runs in this process (LocalCluster) is reached at its
        in-process address: messages are handed over as objects, never encoded.
        """
        assert self.scheduler_address is not None
        assert self._security is not None
        local = getattr(self.cluster, "scheduler_local_address", None)
        conn = await connect(
            local if isinstance(local, str) else self.scheduler_address,
            role="client",
            timeout=timeout,
            secret=self._security.secret,
            ssl_context=self._security.client_context(),
        )
        await conn.write(RegisterClient(client=self.id, versions=collect_versions()))
        reply = (await conn.read())[0]
        if isinstance(reply, ErrorReply):
            await conn.close()
            raise RemoteError(f"the scheduler refused this client: {reply.message}")
        self.scheduler_versions = dict(getattr(reply, "versions", {}))
        self._conn = conn
        self._stream = BatchedSender(
            conn, interval=float(config.get("comm.batch-interval")), on_error=self._stream_failed
        )
        self._stream_task = asyncio.ensure_future(self._read_stream(conn))

    def _connection_lost(self, reason: str) -> None:
        """The stream broke: reconnect for ``client.reconnect-timeout`` seconds, keeping
        every future; what is submitted meanwhile waits in the outbox."""
        if self.status != "running" or self._reconnecting:
            return
        timeout = float(config.get("client.reconnect-timeout"))
        if self._conn is not None:
            self._conn.abort()
        self._stream = None
        if timeout <= 0:
            self._give_up(f"lost the connection to the scheduler: {reason}")
            return
        logger.warning(
            "lost the connection to the scheduler at %s (%s); reconnecting for up to %.0f s",
            self.scheduler_address,
            reason,
            timeout,
        )
        self._reconnecting = True
        self._reconnect_task = asyncio.ensure_future(self._reconnect(reason, timeout))

    async def _reconnect(self, reason: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.05
        while self.status == "running":
            try:
                await self._open_stream(max(deadline - loop.time(), 0.1))
            except (CommError, ProtocolError, RemoteError, OSError) as e:
                if loop.time() + delay > deadline:
                    self._give_up(
                        f"lost the connection to the scheduler ({reason}) and could not "
                        f"reconnect within {timeout:.0f} s: {e}"
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
                continue
            self._reconnecting = False
            logger.info("reconnected to the scheduler at %s", self.scheduler_address)
            self._flush_outbox()  # what was submitted or released meanwhile, in order
            with self._lock:  # keys whose futures still expect an answer or hold a value
                keys = tuple(k for k, st in self._states.items() if st.status in _LIVE)
            if keys and self._stream is not None:
                # The scheduler re-reports each key's state (or cancels unknown ones).
                self._stream.send(ClientDesiresKeys(keys=keys))
            return

    def _give_up(self, text: str) -> None:
        logger.error("%s", text)
        self._reconnecting = False
        self._fail_pending(text)
        self.status = "closed"

    # ------------------------------------------------------------------ messages out

    def _send(self, *msgs: Message) -> None:
        """Queue messages for the scheduler stream; callable from any thread."""
        with self._lock:
            self._outbox.extend(msgs)
            if self._flush_pending:
                return
            self._flush_pending = True
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        if in_loop_thread(loop):
            loop.call_soon(self._flush_outbox)
        else:
            loop.call_soon_threadsafe(self._flush_outbox)

    def _flush_outbox(self) -> None:
        with self._lock:
            self._flush_pending = False
            if self._stream is None or self._stream.closed:
                return  # kept until the stream is back
            msgs, self._outbox = self._outbox, []
        if msgs:
            self._stream.send(*msgs)

    # ------------------------------------------------------------------ messages in

    async def _read_stream(self, conn: Connection) -> None:
        try:
            while True:
                for msg in await conn.read():
                    self._on_message(msg)
        except (CommError, ProtocolError) as e:
            if self._conn is conn:
                self._connection_lost(f"{type(e).__name__}: {e}")

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg, KeyInMemory):
            st = self._states.get(msg.key)
            if st is not None:
                st.finish(msg.type_name, tuple(msg.who_has), msg.value)
        elif isinstance(msg, KeyErred):
            st = self._states.get(msg.key)
            if st is not None:
                st.set_error(
                    RemoteException(
                        msg.exception,
                        msg.traceback,
                        msg.exception_text,
                        msg.traceback_text,
                        msg.blame,
                    )
                )
        elif isinstance(msg, KeyLost):
            st = self._states.get(msg.key)
            if st is not None:
                st.reset()
        elif isinstance(msg, KeysCancelled):
            for key in msg.keys:
                st = self._states.get(key)
                if st is not None and st.status != "error":  # an error says more
                    st.cancel(msg.reason)
        elif isinstance(msg, TopicEvent):
            self._topic_event(msg)
        elif isinstance(msg, ErrorReply):
            text = f"the scheduler refused a message from this client: {msg.message}"
            if "oversized" in msg.message:
                text += (
                    " If it was a graph: submit it in smaller parts, or scatter large "
                    "arguments first (client.scatter) instead of embedding them in tasks."
                )
            logger.error("%s", text)
            self._fail_pending(text)
        else:
            logger.warning("unexpected %r from the scheduler", msg.op)

    def _stream_failed(self, exc: BaseException) -> None:
        """Sending to the scheduler failed: what was being sent is lost, say so."""
        hint = ""
        if isinstance(exc, LocalProtocolError):
            hint = (
                " The message was over this connection's limits: submit the graph in "
                "smaller parts, scatter large arguments (client.scatter) instead of "
                "embedding them, or raise comm.max-frames / comm.max-message-bytes."
            )
        if not hint:
            self._connection_lost(f"could not send to the scheduler: {exc}")
            return
        text = f"could not send to the scheduler: {exc}.{hint}"
        logger.error("%s", text)
        self._fail_pending(text)
        self.status = "closed"
        if self._conn is not None:
            self._conn.abort()

    def _fail_pending(self, text: str) -> None:
        err = RemoteException(None, None, f"CommClosedError: {text}", "")
        err.preset(CommClosedError(text))
        for st in list(self._states.values()):
            if not st.done():
                st.set_error(err)

    # ------------------------------------------------------------------ references

    def _acquire(self, key: Key, inform: bool) -> FutureState:
        with self._lock:  # the message is queued under the lock: in order with releases
            first = self._refs.acquire(key)
            st = self._states.get(key)
            if st is None:
                st = self._states[key] = FutureState()
            if first and inform:
                self._send(ClientDesiresKeys(keys=(key,)))
        return st

    def _release(self, key: Key) -> None:
        with self._lock:
            last = self._refs.release(key)
            if last:
                self._states.pop(key, None)
                if self.status == "running":
                    self._send(ClientReleasesKeys(keys=(key,)))

    def _add_done_callback(
        self, future: Future, fn: Callable[[Future], Any], in_loop: bool = False
    ) -> None:
        def run() -> None:
            try:
                fn(future)
            except Exception:
                logger.exception("error in a done-callback of %r", future)

        def schedule() -> None:
            if in_loop or self._asynchronous:
                run()
            else:
                if self._callback_executor is None:
                    self._callback_executor = ThreadPoolExecutor(
                        1, thread_name_prefix="shoal-callback"
                    )
                self._callback_executor.submit(run)

        def register() -> None:
            if future._state.done():
                schedule()
            else:
                future._state.add_callback(schedule)

        assert self.loop is not None
        if in_loop_thread(self.loop):
            register()
        else:
            self.loop.call_soon_threadsafe(register)

    # ------------------------------------------------------------------ submit / map

    def _build_task(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: Key,
        options: _TaskOptions,
    ) -> tuple[Any, ...]:
        """The task of ``func(*args, **kwargs)`` under ``key``, in its wire form."""

        def to_ref(x: Any) -> Any:
            if isinstance(x, Future):
                if x.client is not self:
                    raise ValueError(f"{x!r} belongs to another client")
                return KeyRef(x.key)
            return KEEP

        deps: Collection[Key] = ()
        if kwargs or not all(type(x) in SCALARS for x in args):  # else no future inside
            args = replace_objects(args, to_ref)
            kwargs = replace_objects(kwargs, to_ref)
            deps = find_refs((args, kwargs))
        return TaskSpec.wire(
            key,
            tuple(deps),
            dumps_call(ActorConstructor(func) if options.actor else func, args, kwargs),
            (-options.priority, next(self._generation)),
            options.retries,
            options.workers,
            options.allow_other_workers,
            options.resources,
            options.actor,
        )

    def _check_running(self) -> None:
        if self.status != "running":
            raise RuntimeError(f"the client is {self.status}; create a new Client")

    def submit(
        self,
        func: Callable[..., Any],
        *args: Any,
        key: Key | None = None,
        workers: str | Iterable[str] | None = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
        fifo_timeout: str = "100 ms",
        allow_other_workers: bool = False,
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        **kwargs: Any,
    ) -> Future:
        """Run ``func(*args, **kwargs)`` on the cluster; return its Future.

        Futures among the arguments are replaced by their values on the worker. With
        ``pure=True`` (the default) the same call gives the same key, and runs once.
        With ``actor=True`` the result is an actor (see :mod:`shoal.actor`), a new one
        per call.
        """
        if not callable(func):
            raise TypeError("the first argument to submit must be callable")
        actor = actor or actors
        self._check_running()
        key = submit_key(func, args, kwargs, key, pure and not actor)
        with self._lock:
            existing = key in self._refs
            fut = Future(key, self, inform=False)
        if existing:
            return fut
        options = _TaskOptions.of(priority, retries, workers, allow_other_workers, resources, actor)
        spec = self._build_task(func, args, kwargs, key, options)
        self._send(UpdateGraph(tasks=(spec,), keys=(key,)))
        return fut

    def map(
        self,
        func: Callable[..., Any],
        *iterables: Collection[Any],
        key: str | Sequence[Key] | None = None,
        workers: str | Iterable[str] | None = None,
        retries: int | None = None,
        resources: dict[str, float] | None = None,
        priority: int = 0,
        allow_other_workers: bool = False,
        fifo_timeout: str = "100 ms",
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[Future]:
        """Apply ``func`` to every element of the iterables; return a list of Futures."""
        if not callable(func):
            raise TypeError("the first argument to map must be callable")
        actor = actor or actors
        pure = pure and not actor  # one actor per item, every call
        if not iterables:
            raise ValueError("map needs at least one iterable")
        self._check_running()
        columns = [list(it) for it in iterables]
        rows = list(zip(*columns))
        keys = map_keys(func, rows, kwargs, key, pure)
        futures: list[Future] = []
        specs: list[Any] = []
        seen: set[Key] = set()
        # Sent as they are built, so that the cluster starts on the first items while
        # the rest are pickled: 1,000 first, then twice as many each time up to 10,000
        # (``batch_size``, when given, every time).
        step = batch_size or 1_000
        sent: list[Key] = []
        options = _TaskOptions.of(priority, retries, workers, allow_other_workers, resources, actor)
        try:
            for k, row in zip(keys, rows):
                with self._lock:
                    existing = k in self._refs
                    futures.append(Future(k, self, inform=False))
                if existing or k in seen:
                    continue
                seen.add(k)
                specs.append(self._build_task(func, row, kwargs, k, options))
                if len(specs) >= step:
                    self._send_graph(specs)
                    sent.extend(t[0] for t in specs)
                    specs = []
                    step = batch_size or min(2 * step, 10_000)
        except BaseException:
            # an item that can't be sent (unpicklable, another client's future): the
            # items already sent must not run for a map that raised
            if sent:
                self._send(CancelKeys(keys=tuple(sent)))
            raise
        if specs:
            self._send_graph(specs)
        return futures

    def _send_graph(self, specs: list[Any]) -> None:
        self._send(UpdateGraph(tasks=tuple(specs), keys=tuple(t[0] for t in specs)))

    # ------------------------------------------------------------------ cancel, forget

    def cancel(
        self,
        futures: Any,
        asynchronous: bool | None = None,
        force: bool = False,
        reason: str | None = None,
        msg: str | None = None,
    ) -> Any:
        """Cancel futures: their tasks stop if nobody else wants them."""
        return self._sync(self._cancel, futures_in(futures), force, reason or msg or "")

    async def _cancel(self, futures: list[Future], force: bool, reason: str) -> None:
        keys = tuple(dict.fromkeys(f.key for f in futures))
        for f in futures:
            f._state.cancel(reason or "cancelled by the client")
        self._send(CancelKeys(keys=keys, force=force))

    def _fire_and_forget(self, keys: list[Key]) -> None:
        from shoal.protocol.messages import FireAndForget

        self._send(FireAndForget(keys=tuple(keys)))

    # ------------------------------------------------------------------ close

    def close(self, timeout: float | object = _no_default) -> Any:
        """Release everything this client holds and disconnect."""
        if self._asynchronous:
            return self._close()
        if self.status == "closed" and self._loop_thread is None:
            return None
        try:
            if self._loop_thread is not None and self.status != "closed":
                self._loop_thread.run(self._close, timeout=30)
        finally:
            self._release_resources_sync()
        return None

    def shutdown(self) -> Any:
        """Close the cluster this client connects to, then the client."""
        return self._sync(self._shutdown)

    async def _shutdown(self) -> None:
        from shoal.protocol.messages import Terminate

        with contextlib.suppress(CommError, RemoteError):
            await self._request(Terminate())
        await self._close()

    async def _close(self) -> None:
        if self.status == "closed":
            return
        self.status = "closing"
        with _default_lock:
            if self in _defaults:
                _defaults.remove(self)
                if dask.config.get("scheduler", None) is self:
                    _point_dask_at(_running_default())
        self._flush_outbox()
        if self._stream is not None and not self._stream.closed:
            with contextlib.suppress(Exception):
                self._stream.send(CloseClient())
                await self._stream.close()
        for task in (self._stream_task, self._reconnect_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        if self._pool is not None:
            await get_data.releases_sent()
            await self._pool.close()
        for st in self._states.values():
            if not st.done():
                st.cancel("the client closed")
        if self._owns_cluster and self.cluster is not None and self._asynchronous:
            await self.cluster.close()
        if self._callback_executor is not None:
            self._callback_executor.shutdown(wait=False)
        self.status = "closed"

    def _release_resources_sync(self) -> None:
        if self._owns_cluster and self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        if self._loop_thread is not None:
            lt, self._loop_thread = self._loop_thread, None
            release_loop(lt)
        self.status = "closed"

    def __del__(self) -> None:
        if getattr(self, "status", None) == "running" and not self._asynchronous:
            with contextlib.suppress(Exception):
                self.close()


#: Future statuses that the scheduler is asked about again after a reconnect.
_LIVE = ("pending", "finished")


def get_client(address: str | None = None, timeout: float | None = None) -> Client:
    """Return a client: inside a task, one connected to the worker's scheduler."""
    worker = current_worker()
    if worker is not None:
        if worker._client is not None and worker._client.status == "running":
            return worker._client  # type: ignore[no-any-return]
        default = _running_default()
        if default is not None and default.scheduler_address == worker.scheduler_address:
            return default
        worker._client = Client(worker.scheduler_address, set_as_default=False)
        return worker._client  # type: ignore[no-any-return]
    if address is not None:
        default = _running_default()
        if default is not None and default.scheduler_address == address:
            return default
        return Client(address)
    return default_client()


__all__ = ["ALL_COMPLETED", "Client", "_wait", "default_client", "get_client"]
