"""The scheduler's asyncio shell: connections in, events to the state machine, sends out.

Every connection starts with one message that says what it is:
- ``register-worker``: the connection becomes that worker's batched stream;
- ``register-client``: the connection becomes that client's batched stream;
- anything else: a request; the connection then serves request/reply pairs.

Stream messages become state-machine events (see :mod:`shoal.scheduler.handlers`); the
outgoing messages the machine returns are routed to per-peer batched senders. The
server never unpickles anything: run specs, results and exceptions stay ``Opaque``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any

from shoal import config
from shoal._libc import trim_memory
from shoal.comm.addressing import check_contact_address, resolve_bind
from shoal.comm.batched import BatchedSender
from shoal.comm.connection import Connection, listen
from shoal.comm.registry import unparse_host_port
from shoal.comm.rpc import ConnectionPool, serve_requests
from shoal.comm.tasks import BackgroundTasks
from shoal.coordination import scheduler_ext
from shoal.errors import CommClosedError, CommError, ProtocolError
from shoal.protocol.frames import Limits
from shoal.protocol.messages import (
    ClientRegistered,
    Message,
    RegisterClient,
    RegisterWorker,
    Terminate,
    UpdateGraph,
)
from shoal.protocol.versions import collect_versions
from shoal.scheduler import handlers, observe, worker_setup
from shoal.scheduler.journal import Journal
from shoal.scheduler.plugins import PluginHooks, SchedulerPlugin
from shoal.scheduler.state import (
    ClientConnected,
    ClientDisconnected,
    CloseWorker,
    RequestDone,
    SchedulerState,
    Tick,
    ToClient,
    ToWorker,
    WorkerAdded,
    WorkerRemoved,
)
from shoal.scheduler.state.model import ACTIVE_STATES
from shoal.scheduler.state.snapshot import snapshot_events
from shoal.scheduler.state.transitions import FIRE_AND_FORGET
from shoal.scheduler.task_stream import TaskStream
from shoal.security import Security

logger = logging.getLogger("shoal.scheduler")

#: The tasks of new graphs (pieces, ``submit``s, ``map`` batches) taken in from a
#: client before the event loop turns: one piece of a large graph (4,096 tasks), or a
#: thousand single submits (one turn each: a third fewer tasks a second in a loop of
#: ``submit`` calls).
TASKS_PER_TURN = 1_000

#: Seconds between heap trims while tasks stay active (see ``_trim_when_drained``).
TRIM_INTERVAL = 60.0

_stimulus_counter = itertools.count()


def stimulus_id(prefix: str) -> str:
    """A unique id naming the cause of a chain of transitions."""
    return f"{prefix}-{next(_stimulus_counter)}"


def _optional_float(value: Any) -> float | None:
    return None if value is None or value == "" else float(value)


def limits_from_config() -> Limits:
    """The transport limits set in the configuration."""
    return Limits(
        max_frames=int(config.get("comm.max-frames")),
        max_header_bytes=int(config.get("comm.max-header-bytes")),
        max_message_bytes=int(config.get("comm.max-message-bytes")),
    )


class Scheduler:
    """The central scheduler server.

    ``Scheduler(host="127.0.0.1", port=0)`` listens on ``tcp://host:port`` once started
    (``await scheduler`` or ``async with``); ``protocol="inproc"`` serves in-process
    peers only. ``interface="eth0"`` listens on that interface's IPv4 address instead
    of ``host``. ``address`` is where it can be reached: ``contact_address`` when given
    (behind NAT or in a container), else the bound address (see
    :mod:`shoal.comm.addressing`).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int = 0,
        *,
        protocol: str = "tcp",
        interface: str | None = None,
        contact_address: str | None = None,
        limits: Limits | None = None,
        validate: bool | None = None,
        allowed_failures: int | None = None,
        worker_saturation: float | None = None,
        security: Security | None = None,
        plugins: Iterable[SchedulerPlugin] = (),
        journal: str | os.PathLike[str] | None = None,
        dashboard_address: str | int | None = ":8787",
        dashboard: bool = True,
    ) -> None:
        self.id = f"Scheduler-{uuid.uuid4()}"
        self._protocol = protocol.removesuffix("://")
        bind = resolve_bind(host, port, interface=interface, protocol=self._protocol)
        self._host, self._port = bind.host, bind.port
        #: the address advertised instead of the listener's (NAT, containers), if any
        self._contact_address = (
            check_contact_address(contact_address, self._protocol) if contact_address else None
        )
        self.limits = limits or limits_from_config()
        self.state = SchedulerState(
            allowed_failures=(
                allowed_failures
                if allowed_failures is not None
                else int(config.get("scheduler.allowed-failures"))
            ),
            validate=bool(config.get("scheduler.validate")) if validate is None else validate,
            log_size=int(config.get("scheduler.log-size")),
            worker_saturation=float(
                config.get("scheduler.worker-saturation")
                if worker_saturation is None
                else worker_saturation
            ),
            unknown_duration=float(config.get("scheduler.unknown-task-duration")),
            bandwidth=float(config.get("scheduler.bandwidth")),
            no_workers_timeout=_optional_float(config.get("scheduler.no-workers-timeout")),
            work_stealing=bool(config.get("scheduler.work-stealing")),
        )
        self.tick_interval = float(config.get("scheduler.tick-interval"))
        #: who may connect (the shared secret); from the configuration by default
        self.security = security if security is not None else Security.from_config()
        self.pool = ConnectionPool(
            role="scheduler",
            limits=self.limits,
            secret=self.security.secret,
            ssl_context=self.security.client_context(),
        )
        self.worker_streams: dict[str, BatchedSender] = {}
        self.client_streams: dict[str, BatchedSender] = {}
        self.worker_info: dict[str, dict[str, Any]] = {}
        self.versions = collect_versions()
        self.status = "created"
        self.start_time = time.time()
        self._listener: Any = None
        self._local_listener: Any = None
        self._closed = asyncio.Event()
        self._background = BackgroundTasks()
        self._worker_joined = asyncio.Condition()
        self._requests: dict[str, asyncio.Future[Any]] = {}
        #: request handlers installed from outside, by op (see shoal.run_on_scheduler)
        self.extra_handlers: dict[str, Callable[[Scheduler, Message], Awaitable[Message]]] = {}
        #: clients whose connection broke, with the timer that releases their keys
        self._client_grace: dict[str, asyncio.TimerHandle] = {}
        self.client_timeout = float(config.get("scheduler.client-timeout"))
        self.worker_ttl = _optional_float(config.get("scheduler.worker-ttl"))
        #: installed plugins (see :mod:`shoal.scheduler.plugins`), started with the server
        self.hooks = PluginHooks(self)
        #: Variable, Queue, Lock, Semaphore, Event, Pub/Sub and datasets
        self.coordination = scheduler_ext.install(self)
        #: files uploaded by clients and worker plugins, given to every worker
        self.worker_setup = worker_setup.install(self)
        for plugin in plugins:
            self.hooks.add(plugin)
        #: ``(time, msg)`` logged under each topic (see :meth:`log_event`)
        self.events: dict[str, deque[tuple[float, Any]]] = {}
        self.events_length = int(config.get("scheduler.events-length"))
        self.task_stream = TaskStream(int(config.get("scheduler.task-stream-length")))
        self._trim_after = int(config.get("scheduler.trim-memory-after"))
        self._trimmed_at = 0  # task_stream.count at the last trim
        self._trimmed_when = time.monotonic()
        #: where the dashboard and HTTP API listen (None: no HTTP server); with
        #: ``dashboard=False`` only /health, /metrics and /api/v1 are served
        self.dashboard_address = dashboard_address
        self.dashboard = dashboard
        if dashboard_address is not None:
            from shoal.dashboard.server import parse_dashboard_address

            parse_dashboard_address(dashboard_address)  # a bad one fails here, not at start
        self.http_server: Any = None
        #: the ports of the services beside the scheduler (``{"dashboard": 8787}``)
        self.services: dict[str, int] = {}
        #: task stream and event requests, and the event log (joins, leaves, failures)
        observe.install(self)
        #: the event journal that lets a restarted scheduler recover (see .journal)
        journal = journal if journal is not None else config.get("scheduler.journal.path")
        fsync = bool(config.get("scheduler.journal.fsync"))
        self.journal = Journal(journal, fsync=fsync) if journal else None
        self.journal_compact_bytes = int(config.get("scheduler.journal.compact-bytes"))

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        """The address clients and workers connect to."""
        if self._listener is None:
            raise RuntimeError("the scheduler is not started")
        return self._contact_address or str(self._listener.contact_address)

    @property
    def local_address(self) -> str:
        """The address for a client in this process: ``inproc://``, where messages are
        handed over as objects (no msgpack, no socket)."""
        if self._local_listener is not None:
            return str(self._local_listener.contact_address)
        return self.address

    @property
    def listen_address(self) -> str:
        """The address the scheduler is bound to."""
        return str(self._listener.listen_address)

    async def start(self) -> Scheduler:
        """Start listening; return self."""
        if self.status == "running":
            return self
        if self._protocol == "inproc":
            addr = "inproc://"
        else:
            addr = f"{self._protocol}://{unparse_host_port(self._host, self._port)}"
        config.tune_gc()
        if self.journal is not None:
            self._recover(self.journal.recover())
            self.journal.open()
        self._listener = await listen(
            addr,
            self._handle_connection,
            role="scheduler",
            limits=self.limits,
            secret=self.security.secret,
            ssl_context=self.security.server_context(),
        )
        if self._protocol != "inproc":
            # A client in this process (LocalCluster's) talks to us without encoding.
            self._local_listener = await listen(
                "inproc://",
                self._handle_connection,
                role="scheduler",
                limits=self.limits,
                secret=self.security.secret,
            )
        if self.dashboard_address is not None:
            await self._start_dashboard()
        self.status = "running"
        for plugin in list(self.hooks.plugins.values()):
            await plugin.start(self)
        self._spawn(self._tick_loop())
        logger.info("Scheduler at %s", self.address)
        return self

    async def _start_dashboard(self) -> None:
        from shoal.dashboard import DashboardServer  # imports tornado only now

        assert self.dashboard_address is not None
        server = DashboardServer(self, self.dashboard_address, pages=self.dashboard)
        try:
            await server.start()
        except BaseException:
            self._listener.stop()
            raise
        self.http_server = server
        self.services["dashboard"] = server.port

    @property
    def dashboard_link(self) -> str | None:
        """The URL of the dashboard's status page (None without a dashboard)."""
        return None if self.http_server is None else str(self.http_server.link())

    def __await__(self) -> Generator[Any, None, Scheduler]:
        return self.start().__await__()

    async def __aenter__(self) -> Scheduler:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening, close every stream, and mark the scheduler closed."""
        if self.status in ("closing", "closed"):
            await self._closed.wait()
            return
        self.status = "closing"
        if self._listener is not None:
            self._listener.stop()
        if self._local_listener is not None:
            self._local_listener.stop()
        if self.http_server is not None:
            with contextlib.suppress(Exception):
                await self.http_server.close()
        for plugin in list(self.hooks.plugins.values()):
            try:
                await plugin.close()
            except Exception:
                logger.exception("plugin %r failed to close", plugin)
        for sender in [*self.worker_streams.values(), *self.client_streams.values()]:
            with contextlib.suppress(Exception):
                await sender.close()
            with contextlib.suppress(Exception):
                await sender.conn.close()
        for timer in self._client_grace.values():
            timer.cancel()
        self._client_grace.clear()
        await self._background.cancel_all()
        for fut in self._requests.values():
            if not fut.done():
                fut.set_exception(CommError("the scheduler closed"))
        self._requests.clear()
        await self.pool.close()
        if self.journal is not None:
            self.journal.close()
        self.status = "closed"
        self._closed.set()

    async def finished(self) -> None:
        """Wait until the scheduler is closed."""
        await self._closed.wait()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._background.spawn(coro)

    # ------------------------------------------------------------------ routing

    def handle(self, *events: Any) -> None:
        """Feed events to the state machine, route what it sends, then tell the plugins."""
        if self.journal is not None:
            try:
                self.journal.append(events)  # before the state acts on them: write-ahead
            except OSError as e:
                self._journal_failed(e)
        for out in self.state.handle(*events):
            if isinstance(out, ToWorker):
                sender = self.worker_streams.get(out.worker)
                if sender is not None and not sender.closed:
                    sender.send(out.msg)
            elif isinstance(out, ToClient):
                sender = self.client_streams.get(out.client)
                if sender is not None and not sender.closed:
                    sender.send(out.msg)
            elif isinstance(out, RequestDone):
                fut = self._requests.pop(out.request, None)
                if fut is not None and not fut.done():
                    fut.set_result(out.value)
            elif isinstance(out, CloseWorker):
                logger.info("Worker %s retired", out.worker)
                if out.close:
                    self._spawn(self._close_worker(out.worker))
            else:  # pragma: no cover - a new Outgoing type without a route is a bug
                logger.error("no route for %r", out)
        self.hooks.events(events)
        if self.journal is not None and self.journal.should_compact(self.journal_compact_bytes):
            self.journal.compact(snapshot_events(self.state, time.time()))
        if self._trim_after > 0 and self.task_stream.count - self._trimmed_at >= self._trim_after:
            self._trim_when_drained()

    def _trim_when_drained(self) -> None:
        """Many tasks ran since the last trim: once none is left to run, or at the
        latest :data:`TRIM_INTERVAL` seconds after the last trim (a task that runs for
        hours must not keep the heap from ever being trimmed), trim the heap.

        A large graph leaves the process's heap full of freed blocks (its messages, the
        client's ordering and pickling, tables that grew) that glibc keeps for reuse: a
        third of the RSS a 100,000-task graph adds while its results are held.
        """
        counts = self.state.counts
        now = time.monotonic()
        if any(counts[name] for name in ACTIVE_STATES) and now - self._trimmed_when < TRIM_INTERVAL:
            return
        self._trimmed_at = self.task_stream.count
        self._trimmed_when = now
        trim_memory()

    # ------------------------------------------------------------------ recovery

    def _recover(self, events: list[Any]) -> None:
        """Replay a journal's events; then wait for the workers and clients it knew.

        What the replayed state sends is dropped: the workers and clients it names
        reconnect on their own. Workers that don't within
        ``scheduler.journal.recovery-timeout`` are removed (their tasks run elsewhere);
        clients that don't within ``scheduler.client-timeout`` are released.
        """
        if not events:
            return
        started = time.monotonic()
        for i in range(0, len(events), 1000):
            self.state.handle(*events[i : i + 1000])
        workers = list(self.state.workers)
        clients = [c for c in self.state.clients if c != FIRE_AND_FORGET]
        logger.warning(
            "Recovered from journal %s: %d events replayed in %.2f s; %d tasks, waiting for "
            "%d workers and %d clients to reconnect",
            self.journal.path if self.journal else "",
            len(events),
            time.monotonic() - started,
            len(self.state.tasks),
            len(workers),
            len(clients),
        )
        loop = asyncio.get_running_loop()
        timeout = float(config.get("scheduler.journal.recovery-timeout"))
        loop.call_later(timeout, self._recovery_deadline, workers)
        for client in clients:
            self._client_grace[client] = loop.call_later(
                self.client_timeout, self._client_gone, client
            )

    def _journal_failed(self, error: OSError) -> None:
        """The journal can't be written (a full disk?): go on without it, and set the
        file aside so that a restart does not recover a state with events missing."""
        journal, self.journal = self.journal, None
        assert journal is not None
        journal.close()
        aside = journal.path.with_name(journal.path.name + ".failed")
        try:
            os.replace(journal.path, aside)
        except OSError as e:
            logger.error("could not set the journal %s aside: %s", journal.path, e)
        logger.error(
            "writing the journal %s failed (%s): the scheduler goes on WITHOUT a journal, "
            "so a restart will not recover its tasks; the journal so far is kept as %s. "
            "Free space (or fix the error) and restart the scheduler to journal again.",
            journal.path,
            error,
            aside,
        )

    def _recovery_deadline(self, workers: list[str]) -> None:
        """Remove the recovered workers that did not come back: their work moves."""
        if self.status != "running":
            return
        gone = [w for w in workers if w not in self.worker_streams and w in self.state.workers]
        for address in gone:
            logger.warning("Worker %s did not reconnect after the restart: removing it", address)
        self.handle(
            *(
                WorkerRemoved(
                    address=address,
                    reason="did not reconnect after the scheduler restarted",
                    safe=True,
                    stimulus_id=stimulus_id("recovery"),
                    now=time.time(),
                )
                for address in gone
            )
        )

    # ------------------------------------------------------------------ plugins, events

    async def add_plugin(self, plugin: SchedulerPlugin, name: str | None = None) -> str:
        """Install ``plugin`` (starting it if the scheduler runs); return its name."""
        old = self.hooks.plugins.get(name or plugin.name or type(plugin).__name__)
        name = self.hooks.add(plugin, name)
        if old is not None and old is not plugin:
            await old.close()
        if self.status == "running":
            await plugin.start(self)
        return name

    async def remove_plugin(self, name: str) -> None:
        """Uninstall and close the plugin called ``name``."""
        plugin = self.hooks.remove(name)
        await plugin.close()

    def log_event(self, topic: str | Iterable[str], msg: Any) -> None:
        """Record ``msg`` (plain, msgpack-able data) under ``topic`` (or several)."""
        now = time.time()
        for t in [topic] if isinstance(topic, str) else topic:
            log = self.events.get(t)
            if log is None:
                log = self.events[t] = deque(maxlen=self.events_length)
            log.append((now, msg))
            self.hooks.log_event(t, msg)

    async def request(self, make: Any) -> Any:
        """Handle the event ``make(request_id)`` and wait for its ``RequestDone`` value."""
        rid = f"request-{uuid.uuid4().hex}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[rid] = fut
        try:
            self.handle(make(rid))
            return await fut
        finally:
            self._requests.pop(rid, None)

    async def _close_worker(self, address: str) -> None:
        try:
            await self.pool.request(address, Terminate())
        except Exception as e:  # it may be gone already: that is what we wanted
            logger.debug("closing retired worker %s: %s", address, e)

    async def _tick_loop(self) -> None:
        while self.status == "running":
            await asyncio.sleep(self.tick_interval)
            now = time.time()
            self._check_worker_ttl(now)
            self.handle(Tick(stimulus_id=stimulus_id("tick"), now=now))

    def _check_worker_ttl(self, now: float) -> None:
        """Drop the workers nothing was heard from for ``scheduler.worker-ttl`` seconds
        (hung, or on the far side of a broken network): their work is redone elsewhere."""
        if not self.worker_ttl:
            return
        for address, info in list(self.worker_info.items()):
            silent = now - info["last_seen"]
            if silent > self.worker_ttl:
                logger.warning(
                    "Worker %s sent nothing for %.0f s (scheduler.worker-ttl is %.0f s): "
                    "removing it",
                    address,
                    silent,
                    self.worker_ttl,
                )
                sender = self.worker_streams.get(address)
                if sender is not None:
                    sender.conn.abort()  # its stream handler removes it

    # ------------------------------------------------------------------ connections

    async def _handle_connection(self, conn: Connection) -> None:
        try:
            msgs = await conn.read()
        except (CommError, ProtocolError) as e:
            # A peer that closes before saying anything (a probe, or a client that
            # switched to this scheduler's same-host socket) is not news.
            level = logging.DEBUG if isinstance(e, CommClosedError) else logging.INFO
            logger.log(
                level,
                "connection from %s failed before its first message: %s",
                conn.peer_address,
                e,
            )
            return
        first = msgs[0]
        if isinstance(first, RegisterWorker):
            await self._worker_stream(conn, first)
        elif isinstance(first, RegisterClient):
            await self._client_stream(conn, first, msgs[1:])
        else:
            for msg in msgs:
                await conn.write(await self.dispatch(msg))
            await serve_requests(conn, self.dispatch)

    async def dispatch(self, msg: Message) -> Message:
        """Answer one request."""
        return await handlers.answer(self, msg)

    async def _worker_stream(self, conn: Connection, reg: RegisterWorker) -> None:
        address = reg.address
        old = self.worker_streams.pop(address, None)
        if old is not None:
            # The same worker registers again: its old connection is dead even if this
            # side has not noticed yet. Drop it; the state forgets the old record.
            logger.info("Worker %s registered again; dropping its old connection", address)
            old.conn.abort()
        await conn.write(ClientRegistered(address=self.address, versions=self.versions))
        sender = BatchedSender(conn, interval=float(config.get("comm.batch-interval")))
        self.worker_streams[address] = sender
        self.worker_info[address] = {
            "name": reg.name,
            "versions": reg.versions,
            "last_seen": time.time(),
            "metrics": {},
            "nanny": reg.nanny,
            "joined": time.monotonic(),
        }
        self.handle(
            WorkerAdded(
                address=address,
                nthreads=reg.nthreads,
                memory_limit=reg.memory_limit,
                name=reg.name,
                resources=dict(reg.resources),
                keys=tuple(reg.keys),
                nbytes=dict(reg.nbytes),
                stimulus_id=stimulus_id("worker-added"),
                now=time.time(),
            )
        )
        async with self._worker_joined:
            self._worker_joined.notify_all()
        logger.info("Worker %s (%s) joined with %d threads", address, reg.name, reg.nthreads)
        reason = "worker closed its connection"
        try:
            while True:
                self._from_worker(address, await conn.read())
        except (CommError, ProtocolError) as e:
            reason = f"{type(e).__name__}: {e}"
        finally:
            current = self.worker_streams.get(address) is sender
            if current:
                del self.worker_streams[address]
                self.worker_info.pop(address, None)
            with contextlib.suppress(Exception):
                await sender.close()
            conn.abort()
            self.pool.remove(address)
            if self.status == "running" and current:
                logger.info("Worker %s left: %s", address, reason)
                self.handle(
                    WorkerRemoved(
                        address=address,
                        reason=reason,
                        stimulus_id=stimulus_id("worker-removed"),
                        now=time.time(),
                    )
                )

    def _from_worker(self, address: str, msgs: list[Message]) -> None:
        # Not inlined in the read loop: its locals would keep the last batch alive
        # while the loop waits for the next one.
        now = time.time()
        info = self.worker_info.get(address)
        if info is not None:
            info["last_seen"] = now
        events = handlers.worker_events(self, address, msgs, now)
        if events:
            self.handle(*events)

    async def _client_stream(
        self, conn: Connection, reg: RegisterClient, rest: Iterable[Message]
    ) -> None:
        client = reg.client
        await conn.write(ClientRegistered(address=self.address, versions=self.versions))
        sender = BatchedSender(conn, interval=float(config.get("comm.batch-interval")))
        old = self.client_streams.pop(client, None)
        if old is not None:  # the client came back before this side saw it go
            old.conn.abort()
        grace = self._client_grace.pop(client, None)
        if grace is not None:
            grace.cancel()
            logger.info("client %s reconnected", client)
        self.client_streams[client] = sender
        self.handle(
            ClientConnected(client=client, stimulus_id=stimulus_id("client"), now=time.time())
        )
        goodbye = False
        try:
            msgs = list(rest)
            while not goodbye:
                # About TASKS_PER_TURN new tasks at a time (a batch may hold several
                # pieces of a graph: the client makes them faster than we take them
                # in), and the event loop turns after each, since a read returns at
                # once while messages are queued: the workers' senders and streams run
                # between pieces, or the workers idle until the last piece of a large
                # graph is in.
                while msgs and not goodbye:
                    goodbye = not self._from_client(client, _one_turn(msgs))
                    await asyncio.sleep(0)
                if not goodbye:
                    msgs = await conn.read()
        except ProtocolError as e:
            logger.warning("client %s sent an invalid message and was disconnected: %s", client, e)
        except CommError:
            pass
        finally:
            current = self.client_streams.get(client) is sender
            if current:
                del self.client_streams[client]
            with contextlib.suppress(Exception):
                await sender.close()
            conn.abort()
            if self.status == "running" and current:
                if goodbye or self.client_timeout <= 0:
                    self._client_gone(client)
                else:
                    # It may be a blip: keep its keys for a while, in case it comes back.
                    self._client_grace[client] = asyncio.get_running_loop().call_later(
                        self.client_timeout, self._client_gone, client
                    )

    def _from_client(self, client: str, msgs: list[Message]) -> bool:
        """Handle a batch from ``client``; False when it said goodbye."""
        if msgs:
            events = handlers.client_events(self, client, msgs, time.time())
            if events is None:
                return False
            if events:
                self.handle(*events)
        return True

    def _client_gone(self, client: str) -> None:
        """``client`` left (or did not come back in time): release what it held."""
        self._client_grace.pop(client, None)
        if self.status == "running" and client not in self.client_streams:
            self.handle(
                ClientDisconnected(
                    client=client, stimulus_id=stimulus_id("client-gone"), now=time.time()
                )
            )

    async def wait_for_workers_gone(self, addresses: list[str], timeout: float = 30.0) -> None:
        """Wait until none of ``addresses`` has a connection (at most ``timeout`` s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(a in self.worker_streams for a in addresses) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def wait_for_workers(self, n: int) -> None:
        """Wait until at least ``n`` workers are connected."""
        async with self._worker_joined:
            await self._worker_joined.wait_for(lambda: len(self.worker_streams) >= n)


def _one_turn(msgs: list[Message]) -> list[Message]:
    """Take from ``msgs`` (in place) what to handle in one turn of the event loop: up to
    the ``UpdateGraph`` that brings the tasks taken to :data:`TASKS_PER_TURN`, or all."""
    tasks = 0
    for i, msg in enumerate(msgs):
        if type(msg) is UpdateGraph:
            tasks += len(msg.tasks)
            if tasks >= TASKS_PER_TURN:
                part = msgs[: i + 1]
                del msgs[: i + 1]
                return part
    part = msgs[:]
    msgs.clear()
    return part
