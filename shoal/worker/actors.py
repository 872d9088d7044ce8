"""The actors a worker holds, and the requests that call them.

An actor task returns :class:`~shoal.actor.NewActor`; the worker keeps the object here
and stores an :class:`~shoal.actor.Actor` proxy as the task's value, so that every path
that reads values (``get-data`` for peers and clients, dependencies of local tasks,
spilling) sees the proxy, never the object.

Each actor has one thread of its own: its (synchronous) methods run there one at a
time, in the order their calls arrived, and never block the event loop; ``async def``
methods run on the worker's event loop. When the scheduler frees the key, the object
is dropped with it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shoal._context import task_context
from shoal._types import Key
from shoal.actor import Actor, NewActor, binding
from shoal.errors import ActorLost, SerializeError
from shoal.protocol.actor_ops import ActorCall, ActorGetAttribute
from shoal.protocol.messages import OK, ErrorReply, Message
from shoal.protocol.serialize import dumps, loads, nbytes_of
from shoal.worker import execute

if TYPE_CHECKING:
    from shoal.worker.server import Worker

logger = logging.getLogger("shoal.worker.actors")

__all__ = ["WorkerActors"]


class _Held:
    """One actor: the object and the thread its methods run on."""

    __slots__ = ("executor", "instance")

    def __init__(self, instance: Any, executor: ThreadPoolExecutor) -> None:
        self.instance = instance
        self.executor = executor


class WorkerActors:
    """The actors held by one worker (``worker.actors``), by key."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.held: dict[Key, _Held] = {}
        worker.extra_handlers[ActorCall.op] = self._call
        worker.extra_handlers[ActorGetAttribute.op] = self._getattr

    def __contains__(self, key: object) -> bool:
        return key in self.held

    def __len__(self) -> int:
        return len(self.held)

    def instance(self, key: Key) -> Any:
        """The object of the actor ``key`` (KeyError if not held here)."""
        return self.held[key].instance

    def adopt(self, outcome: execute.Outcome) -> None:
        """An actor task finished: keep its object, make the proxy its value."""
        new = outcome.value
        assert isinstance(new, NewActor)
        obj = new.instance
        self.discard([outcome.key])
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"shoal-actor-{type(obj).__name__}")
        self.held[outcome.key] = _Held(obj, executor)
        outcome.value = Actor(type(obj), self.worker.address, outcome.key, worker=self.worker)
        outcome.nbytes = nbytes_of(obj)
        cls = type(obj)
        outcome.type_name = f"{cls.__module__}.{cls.__qualname__}"

    def discard(self, keys: Any) -> None:
        """Drop the actors among ``keys`` (their keys were freed)."""
        for key in keys:
            held = self.held.pop(key, None)
            if held is not None:
                held.executor.shutdown(wait=False)

    def close(self) -> None:
        """Drop every actor (the worker is closing)."""
        self.discard(list(self.held))

    # ------------------------------------------------------------------ requests

    def _lost(self, key: Key) -> Message:
        exc = ActorLost(
            f"worker {self.worker.address} does not hold actor {key!r}: it was released "
            "(no future or proxy held it any more) or this worker restarted"
        )
        return ErrorReply(str(exc), exception=dumps(exc))

    @staticmethod
    def _failed(exc: BaseException) -> Message:
        e_opaque, _, text, tb_text = execute.pack_exception(exc)
        return ErrorReply(f"{text}\n{tb_text}", exception=e_opaque)

    def _reply(self, key: Key, value: Any) -> Message:
        try:
            return OK(dumps(value))
        except SerializeError as e:
            exc = SerializeError(f"the result of a call to actor {key!r} can't be sent: {e}")
            return ErrorReply(str(exc), exception=dumps(exc))

    def _missing(self, held: _Held, key: Key, name: str) -> Message:
        cls = type(held.instance).__name__
        exc = AttributeError(f"the {cls} actor {key!r} has no attribute {name!r}")
        return ErrorReply(str(exc), exception=dumps(exc))

    async def _call(self, msg: Message) -> Message:
        assert isinstance(msg, ActorCall)
        held = self.held.get(msg.key)
        if held is None:
            return self._lost(msg.key)
        token = binding.set(("worker", self.worker))
        try:
            args, kwargs = loads(msg.args)
        except SerializeError as e:
            return ErrorReply(f"worker {self.worker.address} could not load the arguments: {e}")
        finally:
            binding.reset(token)
        func = getattr(held.instance, msg.method, None)
        if func is None:
            return self._missing(held, msg.key, msg.method)
        if not callable(func):
            exc = TypeError(f"{msg.method!r} of actor {msg.key!r} is not a method")
            return ErrorReply(str(exc), exception=dumps(exc))
        try:
            if inspect.iscoroutinefunction(func):
                result = await func(*args, **kwargs)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    held.executor, self._run, msg.key, func, args, kwargs
                )
        except Exception as exc:
            if self.held.get(msg.key) is not held:  # released while the call waited
                return self._lost(msg.key)
            return self._failed(exc)
        return self._reply(msg.key, result)

    def _run(self, key: Key, func: Any, args: Any, kwargs: Any) -> Any:
        """Run a method on the actor's own thread (where get_worker() works)."""
        task_context.worker = self.worker
        task_context.key = task_context.actor_key = key
        return func(*args, **kwargs)

    async def _getattr(self, msg: Message) -> Message:
        assert isinstance(msg, ActorGetAttribute)
        held = self.held.get(msg.key)
        if held is None:
            return self._lost(msg.key)
        try:
            # on the actor's thread: in order with its method calls, never during one
            loop = asyncio.get_running_loop()
            value = await loop.run_in_executor(held.executor, getattr, held.instance, msg.attribute)
        except AttributeError:
            return self._missing(held, msg.key, msg.attribute)
        except Exception as exc:  # a property that raised
            return self._failed(exc)
        return self._reply(msg.key, value)
