"""Actors: a stateful object that lives on one worker, and the proxy that calls it.

``client.submit(Counter, actor=True)`` runs ``Counter()`` on a worker like any task, but
the worker keeps the object itself (in :mod:`shoal.worker.actors`) and stores an
:class:`Actor` proxy as the task's value. Whoever asks for the value (the client's
``future.result()``, a peer fetching a dependency) gets the proxy; the object never
leaves its worker.

Calls go straight from the proxy to that worker (``actor-call``/``actor-getattr``
requests, see :mod:`shoal.protocol.actor_ops`), not through the scheduler:

- ``proxy.method(*args)`` returns an :class:`ActorFuture` at once; ``.result()`` waits
  for the value (``await`` it with an asynchronous client);
- ``proxy.attribute`` returns the attribute's value (an awaitable with an asynchronous
  client);
- if the worker died, or no longer holds the actor, the call raises :class:`ActorLost`;
  the actor is not made again (as in distributed): its future errs with ``ActorLost``.

Where a proxy sends its calls from, in this order: the client that gathered it (its
loop and connection pool; the proxy holds a reference to the actor's key there, so the
actor lives as long as the proxy or the future does), the worker running the current
task or actor method, the worker it was created or unpickled on, else the default
client of this process. This module sits outside ``shoal.client`` and ``shoal.worker``
because proxies travel between both; it imports either only lazily.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import weakref
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from shoal._context import current_worker, task_context
from shoal._types import Key
from shoal.errors import ActorLost, CommError, RemoteError, SerializeError
from shoal.protocol.actor_ops import ActorCall, ActorGetAttribute
from shoal.protocol.messages import OK, ErrorReply, Message
from shoal.protocol.serialize import dumps, loads

__all__ = ["Actor", "ActorConstructor", "ActorFuture", "BaseActorFuture", "NewActor"]

T = TypeVar("T")

#: Seconds a call keeps trying to connect to the actor's worker (a refused connection
#: is retried until then) before it raises ActorLost: a dead worker is noticed quickly.
CONNECT_TIMEOUT = 5.0

#: The client or worker that proxies unpickled in this context belong to: set while a
#: client gathers values, and while a worker loads an actor call's arguments.
binding: contextvars.ContextVar[tuple[str, Any] | None] = contextvars.ContextVar(
    "shoal_actor_binding", default=None
)


# --------------------------------------------------------------------------- creation


class NewActor:
    """What an actor task returns to its worker: the object to keep as an actor."""

    __slots__ = ("instance",)

    def __init__(self, instance: Any) -> None:
        self.instance = instance


class ActorConstructor:
    """The function of an actor task: build the object, mark it as an actor."""

    __slots__ = ("cls",)

    def __init__(self, cls: Callable[..., Any]) -> None:
        self.cls = cls

    def __call__(self, *args: Any, **kwargs: Any) -> NewActor:
        """Build the actor's object (on the worker)."""
        return NewActor(self.cls(*args, **kwargs))

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorConstructor, (self.cls,))


# --------------------------------------------------------------------------- futures


class BaseActorFuture(Awaitable[T], Generic[T]):
    """The result of an actor method call: ``result()``, ``done()``, or ``await`` it
    (abstract: :class:`ActorFuture` is the one implementation)."""

    @abstractmethod
    def result(self, timeout: float | None = None) -> T:
        """Wait (at most ``timeout`` seconds) for the call; return or raise its outcome."""

    @abstractmethod
    def done(self) -> bool:
        """Whether the call finished (returned or raised)."""

    @abstractmethod
    def __await__(self) -> Generator[Any, None, T]: ...


class ActorFuture(BaseActorFuture[T]):
    """A call in flight on an event loop (the client's, or a worker's)."""

    __slots__ = ("_future", "_loop")

    def __init__(
        self,
        future: concurrent.futures.Future[T] | asyncio.Future[T],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._future = future
        self._loop = loop

    @classmethod
    def start(cls, coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> ActorFuture[T]:
        """Run ``coro`` on ``loop`` (from any thread) and return its future."""
        if _on_loop(loop):
            task = loop.create_task(coro)
            task.add_done_callback(_retrieve)  # a call nobody waits for logs nothing
            return cls(task, loop)
        return cls(asyncio.run_coroutine_threadsafe(coro, loop), loop)

    def result(self, timeout: float | None = None) -> T:
        """Wait (at most ``timeout`` seconds) for the call; return or raise its outcome."""
        fut = self._future
        if isinstance(fut, asyncio.Future):
            if not fut.done():
                raise RuntimeError(
                    "this actor call has not finished; in asynchronous code, "
                    "`await` the ActorFuture instead of calling result()"
                )
            return fut.result()
        if not fut.done() and _on_loop(self._loop):
            raise RuntimeError(
                "ActorFuture.result() would block the event loop that runs the call; "
                "`await` the ActorFuture instead"
            )
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            if fut.done():
                raise
            raise TimeoutError(f"the actor call did not finish within {timeout} s") from None

    def done(self) -> bool:
        """Whether the call finished (returned or raised)."""
        return self._future.done()

    def __await__(self) -> Generator[Any, None, T]:
        fut = self._future
        if isinstance(fut, concurrent.futures.Future):
            return asyncio.wrap_future(fut).__await__()
        return fut.__await__()

    def __repr__(self) -> str:
        return f"<ActorFuture {'done' if self.done() else 'pending'}>"


def _call_here(loop: asyncio.AbstractEventLoop, call: Callable[[], Any]) -> ActorFuture[Any]:
    """Make ``call()`` now, on this thread; an awaitable result runs on ``loop``."""
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()
    try:
        value = call()
    except Exception as exc:
        done.set_exception(exc)
        return ActorFuture(done, loop)
    if asyncio.iscoroutine(value):
        return ActorFuture(asyncio.run_coroutine_threadsafe(value, loop), loop)
    done.set_result(value)
    return ActorFuture(done, loop)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# --------------------------------------------------------------------------- proxy


class Actor:
    """A proxy for an actor: call its methods and read its attributes remotely.

    Attributes of the proxy itself (``key``, and every name starting with ``_``) are
    local; the other names are those the actor's class defines. A callable one is a
    method (calling it returns an :class:`ActorFuture`); any other (a property, or an
    attribute declared in the class body) is read on the worker, where the instance's
    own value wins. Other names raise ``AttributeError`` at once, as in distributed.
    """

    def __init__(self, cls: type, address: str, key: Key, worker: Any = None) -> None:
        self._cls = cls
        self._address = address
        self.key = key
        self._worker_ref: Callable[[], Any] | None = weakref.ref(worker) if worker else None
        self._client: Any = None
        self._future: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._cls, self._address, self.key))

    def __repr__(self) -> str:
        return f"<Actor: {self._cls.__name__}, key={self.key!r}, worker={self._address}>"

    def __dir__(self) -> list[str]:
        return sorted({*object.__dir__(self), *(n for n in dir(self._cls) if n[:1] != "_")})

    # ------------------------------------------------------------ where calls go

    def _bind_client(self, client: Any) -> None:
        """Send calls through ``client``, and keep the actor alive while this proxy is."""
        from shoal.client.futures import Future

        self._client = client
        self._future = Future(self.key, client)

    def _context(self) -> tuple[asyncio.AbstractEventLoop, Any, bool]:
        """(loop, connection pool, asynchronous) to call the actor with."""
        client = self._client
        if client is None:
            worker = current_worker() or (self._worker_ref() if self._worker_ref else None)
            if worker is not None and worker.status == "running" and worker._loop is not None:
                return worker._loop, worker.pool, _on_loop(worker._loop)
            from shoal.client.client import default_client

            try:
                client = default_client()
            except ValueError:
                raise ValueError(
                    f"{self!r} is not attached to a client or worker: use it inside a task, "
                    "or start a shoal Client in this process first"
                ) from None
            self._bind_client(client)
        if client.status != "running":
            raise RuntimeError(f"the client of {self!r} is {client.status}")
        st = self._future._state
        if st.status == "error" and st.error is not None:
            raise st.error.load()  # ActorLost: the scheduler saw its worker go
        return client.loop, client._pool, bool(client.asynchronous)

    def _own_instance(self) -> tuple[Any, asyncio.AbstractEventLoop] | None:
        """(the object, its worker's loop) when called from this actor's own thread.

        Its methods run one at a time on that thread: a method calling its own actor
        through a proxy would wait for itself, so the call is made directly instead.
        """
        if getattr(task_context, "actor_key", None) != self.key:
            return None
        worker = current_worker()
        if worker is None or worker.address != self._address or self.key not in worker.actors:
            return None
        return worker.actors.instance(self.key), worker._loop

    def _start(self, msg: Message) -> tuple[ActorFuture[Any], bool]:
        loop, pool, asynchronous = self._context()
        return ActorFuture.start(self._request(pool, msg), loop), asynchronous

    async def _request(self, pool: Any, msg: Message) -> Any:
        """Send ``msg`` to the actor's worker; return the loaded result or raise."""
        name = f"{self._cls.__name__} actor {self.key!r} on worker {self._address}"
        try:
            reply = await pool.request(self._address, msg, timeout=CONNECT_TIMEOUT)
        except CommError as e:
            raise ActorLost(
                f"the {name} can't be reached ({e}): its worker died or left, and the "
                "actor's state with it. Submit the actor again to make a new one."
            ) from None
        except RemoteError as e:
            reply = e.reply
            if isinstance(reply, ErrorReply) and reply.exception is not None:
                try:
                    exc = loads(reply.exception)
                except SerializeError:
                    exc = None
                if isinstance(exc, BaseException):
                    raise exc from None
            raise
        if not isinstance(reply, OK):
            raise RemoteError(f"unexpected {reply.op!r} reply from the {name}")
        client = self._client
        token = binding.set(("client", client) if client is not None else None)
        try:
            return loads(reply.value)
        finally:
            binding.reset(token)

    # ------------------------------------------------------------ remote names

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._cls, name, None)
        if callable(attr):

            def method(*args: Any, **kwargs: Any) -> ActorFuture[Any]:
                own = self._own_instance()
                if own is not None:
                    return _call_here(own[1], lambda: getattr(own[0], name)(*args, **kwargs))
                payload = dumps((args, kwargs))
                fut, _ = self._start(ActorCall(key=self.key, method=name, args=payload))
                return fut

            method.__name__ = name
            method.__doc__ = getattr(attr, "__doc__", None)
            return method
        if not hasattr(self._cls, name):
            # as in distributed: only the names the class defines reach the actor, so
            # generic probing (``nbytes``, ``shape``…) never costs a call to the worker
            raise AttributeError(
                f"the {self._cls.__name__} actor has no attribute {name!r}: a proxy reaches "
                "the methods, properties and class attributes its class defines (declare "
                f"`{name} = ...` in the class body to read an instance attribute)"
            )
        own = self._own_instance()
        if own is not None:
            return getattr(own[0], name)
        fut, asynchronous = self._start(ActorGetAttribute(key=self.key, attribute=name))
        return fut if asynchronous else fut.result()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name != "key":
            raise AttributeError(
                f"can't set {name!r} on an actor proxy: call a method of the actor that "
                "sets it instead"
            )
        object.__setattr__(self, name, value)


def _rebuild(cls: type, address: str, key: Key) -> Actor:
    actor = Actor(cls, address, key)
    bound = binding.get()
    if bound is not None:
        kind, owner = bound
        if kind == "client":
            actor._bind_client(owner)
        else:
            actor._worker_ref = weakref.ref(owner)
    return actor
