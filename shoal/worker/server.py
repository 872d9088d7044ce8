"""The worker's asyncio shell: runs what the state machine says, feeds results back.

- a stream to the scheduler carries compute/free orders in and task reports out;
- a listener serves ``get-data`` (peers, clients), ``update-data`` (scatter) and ``run``;
- tasks run on a pool of ``nthreads`` threads; their completions are batched back onto
  the event loop and into the state machine in one ``handle`` call per loop iteration;
- values live in a :class:`~shoal.worker.store.SpillStore` (memory, then disk), and a
  :class:`~shoal.worker.memory.MemoryMonitor` spills and pauses as memory runs short.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, ClassVar

from shoal import config
from shoal.actor import NewActor
from shoal.comm import cross_memory, get_data, shared_memory
from shoal.comm.addressing import check_contact_address, resolve_bind
from shoal.comm.batched import BatchedSender
from shoal.comm.connection import Connection, connect, listen
from shoal.comm.registry import parse_address, unparse_host_port
from shoal.comm.rpc import ConnectionPool, serve_requests
from shoal.comm.same_host import process_identity
from shoal.comm.tasks import BackgroundTasks
from shoal.errors import CommError, ProtocolError, RemoteError, SerializeError
from shoal.protocol.frames import Limits
from shoal.protocol.messages import (
    OK,
    AcquireReplicas,
    ComputeTask,
    ErrorReply,
    FreeKeys,
    GetData,
    Heartbeat,
    Identity,
    Message,
    RegisterWorker,
    ReleaseData,
    RunFunction,
    StealRequest,
    Terminate,
    UpdateData,
    WorkerStatus,
)
from shoal.protocol.serialize import loads, nbytes_of
from shoal.protocol.versions import collect_versions
from shoal.security import Security
from shoal.worker import execute, memory, transfer
from shoal.worker.actors import WorkerActors
from shoal.worker.memory import MemoryFractions, MemoryMonitor, parse_memory_limit
from shoal.worker.plugins import WorkerPlugins
from shoal.worker.run_function import run_function
from shoal.worker.state import (
    AcquireReplicasEvent,
    ComputeTaskEvent,
    DataUpdated,
    DropData,
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    FreeKeysEvent,
    GatherDep,
    GatherDepFailed,
    GatherDepMissing,
    GatherDepNetworkFailure,
    GatherDepSuccess,
    PauseEvent,
    SendToScheduler,
    StealRequestEvent,
    UnpauseEvent,
    WorkerState,
)
from shoal.worker.store import SpillStore
from shoal.worker.system import SystemSampler
from shoal.worker.threads import TaskThreads

logger = logging.getLogger("shoal.worker")
_stimulus = itertools.count()


def _sid(prefix: str) -> str:
    return f"{prefix}-{next(_stimulus)}"


class Worker:
    """A worker server that joins the scheduler at ``scheduler_address``.

    ``await Worker(addr, nthreads=2)`` (or ``async with``) starts it; ``close()`` stops it.
    Results spill to a directory made under ``local_directory`` (the system's temporary
    directory by default) and removed on close; ``memory_limit`` and the
    ``worker.memory.*`` settings say when (see :mod:`shoal.worker.memory`).
    It listens on ``host:port`` (or on ``interface``'s IPv4 address) and advertises
    ``contact_address`` to the scheduler, peers and clients when given (behind NAT or
    in a container; see :mod:`shoal.comm.addressing`).
    """

    instances: ClassVar[weakref.WeakSet[Worker]] = weakref.WeakSet()

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int | None = None,
        name: str | int | None = None,
        memory_limit: str | int | float | None = "auto",
        host: str | None = None,
        port: int = 0,
        protocol: str | None = None,
        interface: str | None = None,
        contact_address: str | None = None,
        limits: Limits | None = None,
        validate: bool = False,
        heartbeat_interval: float | None = None,
        resources: dict[str, float] | None = None,
        nanny: str | None = None,
        security: Security | None = None,
        local_directory: str | None = None,
    ) -> None:
        from shoal.scheduler.server import limits_from_config

        self.scheduler_address = scheduler_address
        self.nthreads = nthreads or os.cpu_count() or 1
        self.name = str(name) if name is not None else f"worker-{uuid.uuid4().hex[:8]}"
        self.memory_limit = parse_memory_limit(memory_limit, self.nthreads)
        self.resources = dict(resources or {})
        #: address of the nanny supervising this process ("" without one)
        self.nanny = nanny or os.environ.get("SHOAL_NANNY_ADDRESS", "")
        self._protocol = (protocol or parse_address(scheduler_address)[0]).removesuffix("://")
        bind = resolve_bind(host, port, interface=interface, protocol=self._protocol)
        self._host, self._port = bind.host, bind.port
        #: the address advertised instead of the listener's (NAT, containers), if any
        self._contact_address = (
            check_contact_address(contact_address, self._protocol) if contact_address else None
        )
        self.limits = limits or limits_from_config()
        self._log_size = int(config.get("worker.log-size"))
        self.heartbeat_interval = heartbeat_interval or float(
            config.get("worker.heartbeat-interval")
        )
        self._validate = validate
        self.state = self._new_state("")
        #: Results serialized to at most this many bytes travel with their TaskFinished.
        self.inline_result_bytes = int(config.get("worker.inline-result-bytes"))
        self.memory_fractions = MemoryFractions.from_config()
        #: every value held here, in memory or spilled to disk
        self.data = SpillStore(
            target=self.memory_fractions.store_target(self.memory_limit),
            local_directory=local_directory,
        )
        #: task results whose buffers total this much go into memory files that peers
        #: on this host map (comm/shared_memory.py); None: never (an inproc:// worker's
        #: peers are in its own process)
        self.share_min_bytes = (
            max(1, memory.parse_bytes(config.get("comm.shared-memory-threshold")))
            if shared_memory.enabled() and self._protocol != "inproc"
            else None
        )
        #: values whose buffers total this much are lent to same-host askers, which copy
        #: them out of this process (comm/cross_memory.py); None: never
        self.lend_min_bytes = (
            max(1, memory.parse_bytes(config.get("comm.cross-memory-threshold")))
            if cross_memory.enabled() and self._protocol != "inproc"
            else None
        )
        self.lender = cross_memory.Lender()
        self.memory_monitor: MemoryMonitor | None = None
        #: who may connect (the shared secret); from the configuration by default
        self.security = security if security is not None else Security.from_config()
        self._client_ssl = self.security.client_context()
        self.pool = ConnectionPool(
            role="worker",
            limits=self.limits,
            secret=self.security.secret,
            ssl_context=self._client_ssl,
        )
        self.threads: TaskThreads[execute.Outcome] | None = None
        self.status = "created"
        self.versions = collect_versions()
        self._listener: Any = None
        self._stream: BatchedSender | None = None
        self._background = BackgroundTasks()
        self._closed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        #: request (and stream) handlers by op, installed by the parts below
        self.extra_handlers: dict[str, Callable[[Message], Awaitable[Message]]] = {}
        #: actors held here (shoal.worker.actors); plugins and uploaded files
        self.actors = WorkerActors(self)
        self.plugins = WorkerPlugins(self)
        #: CPU and network rates for heartbeats; bytes and values fetched from peers
        self._system = SystemSampler()
        self.transfer_incoming_bytes = 0
        self.transfer_incoming_count = 0
        Worker.instances.add(self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        """Where peers and clients reach this worker (its contact address)."""
        if self._listener is None:
            raise RuntimeError("the worker is not started")
        return self._contact_address or str(self._listener.contact_address)

    @property
    def listen_address(self) -> str:
        """The address this worker's socket is bound to."""
        if self._listener is None:
            raise RuntimeError("the worker is not started")
        return str(self._listener.listen_address)

    def _new_state(self, address: str) -> WorkerState:
        return WorkerState(
            address=address,
            nthreads=self.nthreads,
            resources=self.resources,
            validate=self._validate,
            log_size=self._log_size,
            prefetch=int(config.get("worker.prefetch-short-tasks")),
        )

    async def start(self) -> Worker:
        """Listen, register with the scheduler and start serving; return self."""
        if self.status == "running":
            return self
        self._loop = asyncio.get_running_loop()
        self.threads = TaskThreads(self.nthreads, execute.run_task, self._tasks_done, self._loop)
        addr = (
            "inproc://"
            if self._protocol == "inproc"
            else f"{self._protocol}://{unparse_host_port(self._host, self._port)}"
        )
        self._listener = await listen(
            addr,
            self._handle_connection,
            role="worker",
            limits=self.limits,
            secret=self.security.secret,
            ssl_context=self.security.server_context(),
        )
        self.state = self._new_state(self.address)
        config.tune_gc()
        try:
            await self._register()
        except BaseException:
            self._listener.stop()
            raise
        self.status = "running"
        self._spawn(self._heartbeat_loop())
        if self.memory_limit and self.memory_fractions.monitors_process:
            self.memory_monitor = MemoryMonitor(
                self.data,
                self.memory_limit,
                self._set_paused,
                fractions=self.memory_fractions,
                name=self.address,
            )
            self._spawn(self.memory_monitor.run(lambda: self.status == "running"))
        logger.info("Worker %s (%s) joined %s", self.address, self.name, self.scheduler_address)
        return self

    def __await__(self) -> Generator[Any, None, Worker]:
        return self.start().__await__()

    async def __aenter__(self) -> Worker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, reason: str = "") -> None:
        """Stop serving, leave the scheduler, and shut the thread pool down."""
        if self.status in ("closing", "closed"):
            await self._closed.wait()
            return
        self.status = "closing"
        if self.memory_monitor is not None:
            self.memory_monitor.stop()
        await self.plugins.close()  # teardown hooks, while the worker is still whole
        logger.info(
            "Worker %s closing%s",
            self.address if self._listener else self.name,
            f": {reason}" if reason else "",
        )
        if self._listener is not None:
            self._listener.stop()
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.close()
            with contextlib.suppress(Exception):
                await self._stream.conn.close()
        await self._background.cancel_all()
        self.actors.close()
        await get_data.releases_sent()
        await self.pool.close()
        if self._client is not None:
            # a synchronous client made by get_client() in a task: it runs on its own
            # loop thread, so close it from a thread rather than from this loop
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self._client.close)
            self._client = None
        if self.threads is not None:
            self.threads.shutdown()
        self.data.close()
        self.status = "closed"
        self._closed.set()

    async def finished(self) -> None:
        """Wait until the worker is closed."""
        await self._closed.wait()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._background.spawn(coro)

    # ------------------------------------------------------------------ state machine

    def handle(self, *events: Any) -> None:
        """Feed events to the state machine and carry out its instructions."""
        for inst in self.state.handle(*events):
            if isinstance(inst, SendToScheduler):
                if self._stream is not None and not self._stream.closed:
                    self._stream.send(inst.msg)
            elif isinstance(inst, Execute):
                self._execute(inst)
            elif isinstance(inst, GatherDep):
                self._spawn(self._gather_dep(inst))
            elif isinstance(inst, DropData):
                for key in inst.keys:
                    self.data.discard(key)
                if self.actors.held:
                    self.actors.discard(inst.keys)
            else:  # pragma: no cover - a new instruction without a handler is a bug
                logger.error("no handler for instruction %r", inst)

    def _execute(self, inst: Execute) -> None:
        try:
            values = {dep: self.data[dep] for dep in inst.dependencies}
        except KeyError as e:  # pragma: no cover - the state machine guarantees this
            logger.error("dependency %r of %r is not in memory", e.args[0], inst.key)
            raise
        except (OSError, SerializeError) as e:  # a spilled value could not be read back
            logger.error("could not read a dependency of %r back from disk: %s", inst.key, e)
            exc, tb, text, tb_text = execute.pack_exception(e)
            now = time.time()
            failure = execute.Outcome(
                inst.key,
                ok=False,
                exception=exc,
                traceback=tb,
                exception_text=text,
                traceback_text=tb_text,
                start=now,
                stop=now,
            )
            assert self._loop is not None
            self._loop.call_soon(self._tasks_done, [failure])
            return
        assert self.threads is not None
        self.threads.submit(self, inst.key, inst.run_spec, values)

    def _tasks_done(self, done: list[execute.Outcome]) -> None:
        if self.status != "running":
            return
        now = time.time()
        events: list[Any] = []
        for o in done:
            if o.ok:
                if type(o.value) is NewActor:
                    self.actors.adopt(o)  # the object stays here; the value is its proxy
                self.data.put(o.key, o.value, o.nbytes, o.file)
                events.append(
                    ExecuteSuccess(
                        key=o.key,
                        nbytes=o.nbytes,
                        type_name=o.type_name,
                        start=o.start,
                        stop=o.stop,
                        stimulus_id=_sid("execute"),
                        now=now,
                        value=o.wire,
                    )
                )
            else:
                events.append(
                    ExecuteFailure(
                        key=o.key,
                        exception=o.exception,
                        traceback=o.traceback,
                        exception_text=o.exception_text,
                        traceback_text=o.traceback_text,
                        start=o.start,
                        stop=o.stop,
                        stimulus_id=_sid("execute"),
                        now=now,
                    )
                )
        self.handle(*events)

    async def _gather_dep(self, inst: GatherDep) -> None:
        sid = _sid("gather")
        # A peer that hangs (stopped, or cut off without a reset) must not hold the
        # tasks waiting for its data forever: past this, ask another holder.
        timeout = float(config.get("worker.transfer-timeout")) + inst.total_nbytes / 50e6
        try:
            values, missing = await asyncio.wait_for(
                transfer.fetch_data(self.pool, inst.worker, inst.keys, who=self.address),
                timeout,
            )
        except (CommError, ProtocolError, asyncio.TimeoutError) as e:
            if isinstance(e, asyncio.TimeoutError):
                e = CommError(f"no answer within {timeout:.0f} s")
            logger.info("could not fetch %s from %s: %s", list(inst.keys), inst.worker, e)
            if self.status == "running":
                self.handle(
                    GatherDepNetworkFailure(
                        worker=inst.worker, keys=tuple(inst.keys), stimulus_id=sid, now=time.time()
                    )
                )
            return
        except (RemoteError, SerializeError) as e:
            # The peer answered but can't give the data (or we can't load it): asking
            # again would fail the same way, so the tasks that need it fail instead.
            logger.warning("fetching %s from %s failed: %s", list(inst.keys), inst.worker, e)
            if self.status == "running":
                exc, tb, text, tb_text = execute.pack_exception(SerializeError(str(e)))
                self.handle(
                    GatherDepFailed(
                        worker=inst.worker,
                        keys=tuple(inst.keys),
                        exception=exc,
                        traceback=tb,
                        exception_text=text,
                        traceback_text=tb_text,
                        stimulus_id=sid,
                        now=time.time(),
                    )
                )
            return
        if self.status != "running":
            return
        nbytes = {}
        for key, value in values.items():
            nbytes[key] = nbytes_of(value)
            self.data.put(key, value, nbytes[key])
        self.transfer_incoming_bytes += sum(nbytes.values())
        self.transfer_incoming_count += len(nbytes)
        if missing:
            self.handle(
                GatherDepMissing(
                    worker=inst.worker,
                    keys_received=nbytes,
                    missing=tuple(missing),
                    stimulus_id=sid,
                    now=time.time(),
                )
            )
        else:
            self.handle(
                GatherDepSuccess(
                    worker=inst.worker, data_nbytes=nbytes, stimulus_id=sid, now=time.time()
                )
            )

    # ------------------------------------------------------------------ scheduler stream

    async def _scheduler_loop(self, conn: Connection) -> None:
        try:
            while True:
                msgs = await conn.read()
                now = time.time()
                events: list[Any] = []
                for msg in msgs:
                    sid = _sid(msg.op)
                    if isinstance(msg, ComputeTask):
                        events.append(ComputeTaskEvent.from_message(msg, sid, now))
                    elif isinstance(msg, FreeKeys):
                        events.append(FreeKeysEvent(keys=tuple(msg.keys), stimulus_id=sid, now=now))
                    elif isinstance(msg, StealRequest):
                        events.append(StealRequestEvent(key=msg.key, stimulus_id=sid, now=now))
                    elif isinstance(msg, AcquireReplicas):
                        events.append(
                            AcquireReplicasEvent(
                                who_has={k: tuple(v) for k, v in msg.who_has.items()},
                                nbytes=dict(msg.nbytes),
                                stimulus_id=sid,
                                now=now,
                            )
                        )
                    elif isinstance(msg, ErrorReply):
                        logger.error("the scheduler reported an error: %s", msg.message)
                    elif msg.op in self.extra_handlers:  # before the tasks that came with it
                        reply = await self.extra_handlers[msg.op](msg)
                        if isinstance(reply, ErrorReply):
                            logger.error("%s from the scheduler failed: %s", msg.op, reply.message)
                    else:
                        logger.warning("unexpected %r from the scheduler", msg.op)
                if events:
                    self.handle(*events)
        except (CommError, ProtocolError) as e:
            if self.status == "running":
                self._spawn(self._reconnect(f"{type(e).__name__}: {e}"))

    async def _register(self, timeout: float | None = None) -> None:
        """Connect to the scheduler, register (with the keys held here), start the stream."""
        held = self.data.nbytes_by_key()
        conn = await connect(
            self.scheduler_address,
            role="worker",
            timeout=timeout or float(config.get("comm.timeouts.connect")),
            limits=self.limits,
            secret=self.security.secret,
            ssl_context=self._client_ssl,
        )
        await conn.write(
            RegisterWorker(
                address=self.address,
                nthreads=self.nthreads,
                memory_limit=self.memory_limit,
                name=self.name,
                versions=self.versions,
                keys=tuple(held),
                nbytes=held,
                resources=self.resources,
                nanny=self.nanny,
            )
        )
        reply = (await conn.read())[0]
        if isinstance(reply, ErrorReply):
            await conn.close()
            raise RemoteError(f"the scheduler refused this worker: {reply.message}")
        self._stream = BatchedSender(conn, interval=float(config.get("comm.batch-interval")))
        if self.state.paused:  # still short of memory: the new scheduler must know
            self._stream.send(WorkerStatus(status="paused"))
        self._spawn(self._scheduler_loop(conn))

    async def _reconnect(self, reason: str) -> None:
        """Try to register again for ``worker.reconnect-timeout`` seconds, then close.

        The scheduler forgot this worker when the connection broke, and rescheduled what
        it ran: the tasks known here are dropped, the data is kept and reported again.
        """
        timeout = float(config.get("worker.reconnect-timeout"))
        logger.warning(
            "Worker %s lost the scheduler (%s); reconnecting for up to %.0f s",
            self.address,
            reason,
            timeout,
        )
        if self._stream is not None:
            self._stream.conn.abort()
            self._stream = None
        kept = self.data.nbytes_by_key()
        self.state = self._new_state(self.address)
        self.handle(DataUpdated(data_nbytes=kept, stimulus_id=_sid("reconnect"), now=time.time()))
        if self.memory_monitor is not None and self.memory_monitor.paused:
            self.handle(PauseEvent(stimulus_id=_sid("reconnect"), now=time.time()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.05
        while self.status == "running":
            try:
                # Short attempts: a close() meanwhile is noticed within one of them.
                await self._register(timeout=min(max(deadline - loop.time(), 0.1), 2.0))
            except (CommError, ProtocolError, RemoteError, OSError) as e:
                if loop.time() + delay > deadline:
                    await self.close(
                        reason=f"could not reconnect to the scheduler within {timeout:.0f} s: {e}"
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
            else:
                logger.info("Worker %s reconnected to %s", self.address, self.scheduler_address)
                return

    async def _heartbeat_loop(self) -> None:
        while self.status == "running":
            await asyncio.sleep(self.heartbeat_interval)
            self.lender.expire(time.monotonic())  # leases of askers that never released
            if self._stream is not None and not self._stream.closed:
                self._stream.send(Heartbeat(metrics=self.metrics()))

    def _set_paused(self, paused: bool) -> None:
        """The memory monitor's verdict: feed it to the state machine."""
        event = PauseEvent if paused else UnpauseEvent
        self.handle(event(stimulus_id=_sid("memory"), now=time.time()))

    def metrics(self) -> dict[str, Any]:
        """Load and memory figures reported to the scheduler (heartbeats)."""
        snap = self.state.snapshot()
        monitor = self.memory_monitor
        return {
            "time": time.time(),
            "keys": len(self.data),
            **snap,
            "memory_limit": self.memory_limit,
            "process_memory": (monitor.memory if monitor else 0) or memory.process_memory(),
            "managed_bytes": self.data.fast_nbytes,
            "spilled_bytes": self.data.slow_nbytes,
            "spill": self.data.stats(),
            # since the last heartbeat: {"cpu": %, "read_bps", "write_bps"} (host network)
            **self._system.sample(),
            "transfer_incoming_bytes": self.transfer_incoming_bytes,
            # bytes same-host askers copied out of this process (comm/cross_memory.py)
            "transfer_lent_bytes": self.lender.lent_bytes_total,
            "transfer_incoming_count": self.transfer_incoming_count,
        }

    # ------------------------------------------------------------------ requests

    async def _handle_connection(self, conn: Connection) -> None:
        await serve_requests(conn, self.dispatch)

    async def dispatch(self, msg: Message) -> Message:
        """Answer one request from a peer, a client or the scheduler."""
        if isinstance(msg, GetData):
            same_host = msg.same_host is not None and msg.same_host == process_identity()
            files = self.data.file if same_host and msg.map_files else None
            lend = None
            if same_host and msg.cross_memory is not None and self.lend_min_bytes is not None:
                lend = transfer.Lend(
                    self.lender, self.lend_min_bytes, msg.cross_memory, time.monotonic()
                )
            return transfer.serve_data(self.data, msg.keys, self.address, files, lend)
        if isinstance(msg, ReleaseData):
            return OK(self.lender.release(msg.nonce, time.monotonic()))
        if isinstance(msg, UpdateData):
            return self._update_data(msg)
        if isinstance(msg, RunFunction):
            return await run_function(msg, self, is_worker=True)
        if isinstance(msg, Identity):
            return OK(
                {
                    "type": "Worker",
                    "address": self.address,
                    "name": self.name,
                    "nthreads": self.nthreads,
                    "memory_limit": self.memory_limit,
                    "scheduler": self.scheduler_address,
                }
            )
        if isinstance(msg, Terminate):
            self._spawn(self.close(reason="asked to terminate"))
            return OK()
        extra = self.extra_handlers.get(msg.op)
        if extra is not None:
            return await extra(msg)
        return ErrorReply(f"a worker does not answer {msg.op!r} requests")

    def _update_data(self, msg: UpdateData) -> Message:
        nbytes = {}
        try:
            values = {k: loads(v) for k, v in msg.data.items()}
        except SerializeError as e:
            return ErrorReply(f"worker {self.address} could not load scattered data: {e}")
        for key, value in values.items():
            nbytes[key] = nbytes_of(value)
            self.data.put(key, value, nbytes[key])
        self.handle(
            DataUpdated(data_nbytes=nbytes, stimulus_id=_sid("update-data"), now=time.time())
        )
        return OK(nbytes)
