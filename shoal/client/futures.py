"""Futures: the handle a client keeps for each task, and waiting on many of them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from dask._task_spec import TaskRef
from dask.base import is_dask_collection

from shoal._types import Key
from shoal.client.sync import in_loop_thread
from shoal.errors import (
    ActorLost,
    FutureCancelledError,
    KilledWorker,
    NoValidWorker,
    SerializeError,
    TaskError,
)
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import loads

if TYPE_CHECKING:
    from types import TracebackType

    from shoal.client.client import Client

logger = logging.getLogger("shoal.client")

FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"


class RemoteException:
    """An exception as it arrived from a worker: pickled and as text."""

    __slots__ = ("_loaded", "blame", "exception", "exception_text", "traceback", "traceback_text")

    def __init__(
        self,
        exception: Opaque | None,
        traceback: Opaque | None,
        exception_text: str,
        traceback_text: str,
        blame: Key = None,  # type: ignore[assignment]
    ) -> None:
        self.exception = exception
        self.traceback = traceback
        self.exception_text = exception_text
        self.traceback_text = traceback_text
        self.blame = blame
        self._loaded: BaseException | None = None

    def preset(self, exc: BaseException) -> None:
        """Use ``exc`` as the exception (an error raised here, not on a worker)."""
        self._loaded = exc

    def load(self) -> BaseException:
        """The exception object, rebuilt here (``TaskError`` if its type can't be)."""
        if self._loaded is not None:
            return self._loaded
        exc: BaseException
        text = self.exception_text
        if self.exception is None and text.startswith("KilledWorker:"):
            exc = KilledWorker.__new__(KilledWorker)
            Exception.__init__(exc, text.removeprefix("KilledWorker:").strip())
            exc.task = self.blame
            exc.last_workers = []
        elif self.exception is None and text.startswith("NoValidWorker:"):
            exc = NoValidWorker(text.removeprefix("NoValidWorker:").strip())
        elif self.exception is None and text.startswith("ActorLost:"):
            exc = ActorLost(text.removeprefix("ActorLost:").strip())
        elif self.exception is not None:
            try:
                exc = loads(self.exception)
            except SerializeError as e:
                name, _, msg = text.partition(": ")
                exc = TaskError(
                    name, f"{msg} (could not rebuild the exception here: {e})", self.traceback_text
                )
            if not isinstance(exc, BaseException):
                exc = TaskError(type(exc).__name__, repr(exc), self.traceback_text)
        else:
            name, _, msg = text.partition(": ")
            exc = TaskError(name, msg, self.traceback_text)
        tb = self.load_traceback()
        if tb is not None:
            exc = exc.with_traceback(tb)
        self._loaded = exc
        return exc

    def load_traceback(self) -> TracebackType | None:
        """The remote traceback as a traceback object (``None`` if unavailable)."""
        if self.traceback is None:
            return None
        try:
            return loads(self.traceback).as_traceback()  # type: ignore[no-any-return]
        except Exception:  # a traceback we can't rebuild is not worth failing over
            return None


class FutureState:
    """The state of one key, shared by every ``Future`` for it in one client.

    Only the client's event loop changes it; other threads read it.
    """

    __slots__ = (
        "_event",
        "callbacks",
        "error",
        "reason",
        "status",
        "type_name",
        "value",
        "who_has",
    )

    def __init__(self) -> None:
        self.status = "pending"
        self.type_name: str | None = None
        self.who_has: tuple[str, ...] = ()
        #: The value serialized, when the scheduler sent it along (small values only).
        self.value: bytes | None = None
        self.error: RemoteException | None = None
        self.reason = ""
        self._event: asyncio.Event | None = None
        #: called (on the loop) when the key is done; a list only once one is added
        self.callbacks: list[Callable[[], None]] | None = None

    def done(self) -> bool:
        """Whether the key has finished, erred or been cancelled."""
        return self.status in ("finished", "error", "cancelled")

    def _set(self, status: str) -> None:
        self.status = status
        if self._event is not None:
            self._event.set()
        callbacks, self.callbacks = self.callbacks, None
        for cb in callbacks or ():
            cb()

    def add_callback(self, cb: Callable[[], None]) -> None:
        """Call ``cb()`` when the key is done (at most once)."""
        if self.callbacks is None:
            self.callbacks = [cb]
        else:
            self.callbacks.append(cb)

    def remove_callback(self, cb: Callable[[], None]) -> None:
        """Forget ``cb`` if it has not been called yet."""
        if self.callbacks is not None:
            with contextlib.suppress(ValueError):
                self.callbacks.remove(cb)

    def finish(
        self,
        type_name: str | None = None,
        who_has: tuple[str, ...] = (),
        value: bytes | None = None,
    ) -> None:
        """The value is in memory on the cluster, on the workers ``who_has`` (and here,
        serialized, when it is small)."""
        self.type_name = type_name
        self.who_has = who_has
        self.value = value
        self._set("finished")

    def set_error(self, error: RemoteException) -> None:
        """The task (or one it depends on) raised."""
        self.error = error
        self._set("error")

    def cancel(self, reason: str = "") -> None:
        """The key was cancelled."""
        self.reason = reason
        self.value = None
        self._set("cancelled")

    def reset(self) -> None:
        """The value was lost and is being recomputed."""
        self.status = "pending"
        self.error = None
        self.who_has = ()
        self.value = None
        if self._event is not None:
            self._event.clear()

    async def wait(self) -> None:
        """Wait until done (call on the client's loop)."""
        if self.done():
            return
        if self._event is None:
            self._event = asyncio.Event()
        while not self.done():
            await self._event.wait()
            if not self.done():
                self._event.clear()


class Future(TaskRef):  # type: ignore[misc]
    """A remote computation's result, held on the cluster until released.

    Behaves like ``distributed.Future``: ``result()``, ``exception()``, ``done()``,
    ``cancel()``, ``add_done_callback()``; ``await future`` in async code. As a dask
    ``TaskRef``, a future inside a dask graph is a dependency on its key.
    """

    __slots__ = ("__weakref__", "_released", "_state", "client")

    def __init__(self, key: Key, client: Client | None = None, inform: bool = True) -> None:
        if client is None:
            from shoal.client.client import default_client

            client = default_client()
        super().__init__(key)  # type: ignore[arg-type]
        self.client = client
        self._released = False
        self._state = client._acquire(key, inform=inform)

    @classmethod
    def _each(cls, keys: list[Key], client: Client) -> list[Future]:
        """Futures for ``keys``, made together (``Future(key, client, inform=False)`` for
        each, under one lock): the keys of a graph piece the client is sending."""
        futures = []
        acquire = client._acquire
        with client._lock:  # taken once: each _acquire's own is then a re-entry
            for key in keys:
                future = cls.__new__(cls)
                TaskRef.__init__(future, key)  # type: ignore[arg-type]
                future.client = client
                future._released = False
                future._state = acquire(key, False)
                futures.append(future)
        return futures

    # -------------------------------------------------------------- status

    @property
    def status(self) -> str:
        """``pending``, ``finished``, ``error`` or ``cancelled``."""
        return self._state.status

    @property
    def type(self) -> str | None:
        """The type name of the result, once finished."""
        return self._state.type_name

    def done(self) -> bool:
        """Whether the computation finished, failed, or was cancelled."""
        return self._state.done()

    def cancelled(self) -> bool:
        """Whether the future was cancelled."""
        return self._state.status == "cancelled"

    # -------------------------------------------------------------- results

    def result(self, timeout: float | None = None) -> Any:
        """The value; re-raises the task's exception with its remote traceback."""
        loop = self.client.loop
        if not self.client.asynchronous and loop is not None and not in_loop_thread(loop):
            # Wait here for the completion notice, not through a coroutine on the loop
            # (one thread hand-off instead of three); a small value came with it.
            started = time.monotonic()
            self._block_until_done(timeout)
            st = self._state
            value = st.value
            if st.status == "finished" and value is not None:
                return self.client._load_value(Opaque([value]))
            if st.status == "finished" and timeout is not None:
                # one budget for the wait and the fetch
                left = max(timeout - (time.monotonic() - started), 0.0)
                try:
                    return self.client._sync(self._result, timeout=left)
                except TimeoutError:
                    raise TimeoutError(
                        f"the result of {self.key!r} was not fetched within {timeout} s"
                    ) from None
            if st.done():  # an error or a cancellation: raised at once, no fetch
                return self.client._sync(self._result)
        return self.client._sync(self._result, timeout=timeout)

    def _block_until_done(self, timeout: float | None) -> None:
        """Block this thread (not the client's loop) until the key is done."""
        st = self._state
        if st.done():
            return
        done = threading.Event()

        def register() -> None:  # on the loop: the only thread that changes ``st``
            if st.done():
                done.set()
            else:
                st.add_callback(done.set)

        loop = self.client.loop
        if loop is None or loop.is_closed():
            return  # _sync says what is wrong
        try:
            loop.call_soon_threadsafe(register)
        except RuntimeError:  # closed meanwhile
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        # in slices: a loop that stops meanwhile (the client closing) never calls back
        while not done.wait(0.5 if deadline is None else min(0.5, deadline - time.monotonic())):
            if not loop.is_running():
                return  # _sync says what is wrong
            if deadline is not None and time.monotonic() >= deadline:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(st.remove_callback, done.set)
                raise TimeoutError(f"the result of {self.key!r} was not ready after {timeout} s")

    async def _result(self, raise_errors: bool = True) -> Any:
        await self._state.wait()
        if self._state.status == "error":
            assert self._state.error is not None
            exc = self._state.error.load()
            if raise_errors:
                raise exc
            return exc
        if self._state.status == "cancelled":
            raise FutureCancelledError(self.key, self._state.reason)
        values = await self.client._gather_keys([self.key])
        return values[self.key]

    def exception(self, timeout: float | None = None) -> Any:
        """The exception the task raised, or ``None`` if it succeeded."""
        return self.client._sync(self._exception, timeout=timeout)

    async def _exception(self) -> BaseException | None:
        await self._state.wait()
        if self._state.status == "error":
            assert self._state.error is not None
            return self._state.error.load()
        if self._state.status == "cancelled":
            raise FutureCancelledError(self.key, self._state.reason)
        return None

    def traceback(self, timeout: float | None = None) -> Any:
        """The remote traceback of a failed task (``None`` if it succeeded)."""
        return self.client._sync(self._traceback, timeout=timeout)

    async def _traceback(self) -> TracebackType | None:
        await self._state.wait()
        if self._state.status == "error" and self._state.error is not None:
            return self._state.error.load_traceback()
        return None

    def __await__(self) -> Any:
        return self._result().__await__()

    # -------------------------------------------------------------- control

    def cancel(self, reason: str | None = None, force: bool = False) -> Any:
        """Cancel this future's task (and release the key for this client)."""
        return self.client.cancel([self], reason=reason, force=force)

    def release(self) -> None:
        """Drop this reference now instead of waiting for garbage collection."""
        if not self._released:
            self._released = True
            self.client._release(self.key)

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown: nothing left to tell
            pass

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` once the future is done (from a client thread)."""
        self.client._add_done_callback(self, fn)

    def __repr__(self) -> str:
        extra = f", type: {self.type}" if self.type else ""
        return f"<Future: {self.status}{extra}, key: {self.key!r}>"

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<b>Future: {self.key!r}</b> status: {self.status}"

    def __dask_tokenize__(self) -> Any:
        return (type(self).__name__, self.key)

    def __reduce__(self) -> Any:
        raise TypeError(
            "a shoal Future can't be pickled; pass it as a direct argument to submit/map "
            "(it is replaced by its value on the worker), or gather it first"
        )


class DoneAndNotDoneFutures(NamedTuple):
    """What :func:`wait` returns."""

    done: set[Future]
    not_done: set[Future]


def futures_in(obj: Any) -> list[Future]:
    """Every Future in ``obj``, in order: a future, collections persisted on the cluster,
    and lists/tuples/sets/dicts of those."""
    found: list[Future] = []
    seen: set[int] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            if id(x) not in seen:
                seen.add(id(x))
                found.append(x)
        elif is_dask_collection(x):
            stack.extend(reversed(list(x.__dask_graph__().values())))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(reversed(list(x)))
    return found


def _client_of(futures: Iterable[Future]) -> Client:
    for f in futures:
        return f.client
    from shoal.client.client import default_client

    return default_client()


def wait(fs: Any, timeout: float | None = None, return_when: str = ALL_COMPLETED) -> Any:
    """Wait until futures are done; return ``(done, not_done)`` sets.

    Raises ``TimeoutError`` if ``timeout`` seconds pass before the condition is met.
    """
    futures = futures_in(fs)
    client = _client_of(futures)
    return client._sync(_wait, futures, timeout, return_when)


async def _wait(
    futures: list[Future], timeout: float | None, return_when: str
) -> DoneAndNotDoneFutures:
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(
            f"return_when must be one of ALL_COMPLETED, FIRST_COMPLETED, "
            f"FIRST_EXCEPTION, not {return_when!r}"
        )

    def condition_met() -> bool:
        if return_when == ALL_COMPLETED:
            return all(f.done() for f in futures)
        if return_when == FIRST_COMPLETED:
            return any(f.done() for f in futures) or not futures
        return any(f.status == "error" for f in futures) or all(f.done() for f in futures)

    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    if return_when == ALL_COMPLETED:
        await _wait_all(futures, timeout, deadline)
        return DoneAndNotDoneFutures(set(futures), set())

    # Each state wakes us through a counted callback, so that waiting on n futures costs
    # O(n) however the completions trickle in; the full condition is checked again only
    # when the counts say it may hold (a lost key may have become pending meanwhile).
    wake = asyncio.Event()
    registered: list[tuple[FutureState, Callable[[], None]]] = []

    def watch() -> None:
        states = {id(f._state): f._state for f in futures if not f.done()}
        left = len(states)

        def on_done(state: FutureState) -> None:
            nonlocal left
            left -= 1
            if return_when != ALL_COMPLETED or state.status == "error" or not left:
                wake.set()

        for state in states.values():
            cb = functools.partial(on_done, state)
            state.add_callback(cb)
            registered.append((state, cb))

    try:
        while not condition_met():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"{sum(not f.done() for f in futures)} of {len(futures)} futures "
                    f"were not done after {timeout} s"
                )
            wake.clear()
            _unwatch(registered)
            watch()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)
    finally:
        _unwatch(registered)
    done = {f for f in futures if f.done()}
    return DoneAndNotDoneFutures(done, {f for f in futures if f not in done})


async def _wait_all(futures: list[Future], timeout: float | None, deadline: float | None) -> None:
    """Wait until every future is done: wait for the first one that isn't, then go on
    from there. Most futures are done by the time the scan reaches them, so this waits a
    few times per batch of completions instead of hooking a callback onto each of n
    futures (and unhooking it), which cost a second of the loop's time per 100,000."""
    loop = asyncio.get_running_loop()
    while True:
        for f in futures:
            state = f._state
            if state.done():
                continue
            if deadline is None:
                await state.wait()
                continue
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(state.wait(), remaining)
            except (TimeoutError, asyncio.TimeoutError):  # distinct before Python 3.11
                if state.done():
                    continue  # done just as the time ran out
                raise TimeoutError(
                    f"{sum(not f.done() for f in futures)} of {len(futures)} futures "
                    f"were not done after {timeout} s"
                ) from None
        # a key lost after the scan passed it is pending again: scan once more
        if all(f._state.done() for f in futures):
            return


def _unwatch(registered: list[tuple[FutureState, Callable[[], None]]]) -> None:
    for state, cb in registered:
        state.remove_callback(cb)
    registered.clear()


def fire_and_forget(obj: Any) -> None:
    """Run these futures' tasks to completion even after every reference to them goes."""
    futures = futures_in(obj)
    if futures:
        futures[0].client._fire_and_forget([f.key for f in futures])


class as_completed:
    """Iterate over futures in the order they finish.

    ``with_results=True`` yields ``(future, result)`` pairs; ``add()`` adds futures while
    iterating. Works with ``for`` and ``async for``.
    """

    def __init__(
        self,
        futures: Iterable[Future] | None = None,
        with_results: bool = False,
        raise_errors: bool = True,
    ) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        self._lock = threading.Lock()
        self._pending: set[Future] = set()
        self._queue: queue.Queue[Future] = queue.Queue()
        self._async_queue: asyncio.Queue[Future] | None = None
        self._client: Client | None = None
        for f in futures or ():
            self.add(f)

    def add(self, future: Future) -> None:
        """Add a future to the set being watched."""
        with self._lock:
            self._pending.add(future)
        self._client = future.client
        future.client._add_done_callback(future, self._on_done, in_loop=True)

    def update(self, futures: Iterable[Future]) -> None:
        """Add several futures."""
        for f in futures:
            self.add(f)

    def _on_done(self, future: Future) -> None:
        if self._async_queue is not None:
            self._async_queue.put_nowait(future)
        else:
            self._queue.put(future)

    def count(self) -> int:
        """How many futures are not yet yielded."""
        with self._lock:
            return len(self._pending)

    def is_empty(self) -> bool:
        """Whether nothing is left to yield."""
        return self.count() == 0

    def has_ready(self) -> bool:
        """Whether a finished future is waiting to be yielded."""
        return not self._queue.empty()

    def clear(self) -> None:
        """Stop watching every remaining future."""
        with self._lock:
            self._pending.clear()

    def _yielded(self, future: Future) -> Any:
        with self._lock:
            if future not in self._pending:
                return None
            self._pending.discard(future)
        return future

    def __iter__(self) -> Iterator[Any]:
        while not self.is_empty():
            f = self._yielded(self._queue.get())
            if f is None:
                continue
            if self.with_results:
                yield f, self._result_sync(f)
            else:
                yield f

    def _result_sync(self, f: Future) -> Any:
        if f.status == "error" and not self.raise_errors:
            return f.exception()
        return f.result()

    def batches(self) -> Iterator[list[Any]]:
        """Yield lists of everything finished since the last batch."""
        while not self.is_empty():
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            futures = [f for f in map(self._yielded, batch) if f is not None]
            if not futures:
                continue
            if self.with_results:
                yield [(f, self._result_sync(f)) for f in futures]
            else:
                yield futures

    def __aiter__(self) -> as_completed:
        if self._async_queue is None:
            self._async_queue = asyncio.Queue()
            while not self._queue.empty():
                self._async_queue.put_nowait(self._queue.get())
        return self

    async def __anext__(self) -> Any:
        assert self._async_queue is not None
        while True:
            if self.is_empty():
                raise StopAsyncIteration
            f = self._yielded(await self._async_queue.get())
            if f is None:
                continue
            if self.with_results:
                return f, await f._result(raise_errors=self.raise_errors)
            return f
