"""The thin synchronous facade: one event-loop thread shared by sync clients and clusters.

Everything in shoal is written once, as coroutines. A synchronous caller hands the
coroutine to :class:`LoopThread`, which runs it on a background event loop and blocks
for the result. The thread is reference counted: it starts with its first user and
stops with its last, so closing every client and cluster leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from shoal._loop import new_event_loop

T = TypeVar("T")

_lock = threading.Lock()
_current: LoopThread | None = None


class LoopThread:
    """A daemon thread running an asyncio event loop."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.users = 0
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="shoal-loop", daemon=True)
        self.thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                _cancel_all(self.loop)
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                # threads of run_in_executor (client.run on in-process workers)
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    def run(self, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run the coroutine ``fn()`` on the loop and return its result (blocking)."""
        if threading.current_thread() is self.thread:
            raise RuntimeError(
                "a synchronous shoal call was made from the event loop's own thread; "
                "use the asynchronous API (asynchronous=True and await) there"
            )

        async def wrapper() -> tuple[bool, Any]:
            try:
                return True, await fn()
            except asyncio.CancelledError as e:
                # a subclass (FutureCancelledError) is an answer, not our cancellation
                if type(e) is asyncio.CancelledError:
                    raise
                return False, e

        future = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        try:
            ok, value = future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():  # the coroutine itself raised a TimeoutError
                raise
            future.cancel()
            raise TimeoutError(f"operation did not finish within {timeout} s") from None
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop the loop and join the thread."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def acquire_loop() -> LoopThread:
    """Return the shared loop thread, starting it if needed, and count one more user."""
    global _current
    with _lock:
        if _current is None or not _current.thread.is_alive():
            _current = LoopThread()
        _current.users += 1
        return _current


def release_loop(lt: LoopThread) -> None:
    """Count one user less; the last user stops the loop thread."""
    global _current
    with _lock:
        lt.users -= 1
        if lt.users > 0:
            return
        if _current is lt:
            _current = None
    lt.stop()


def in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread runs ``loop`` right now."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def maybe_sync(
    asynchronous: bool,
    loop_thread: LoopThread | None,
    fn: Callable[..., Coroutine[Any, Any, T]],
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """Call ``fn(*args, **kwargs)``: a coroutine in async mode, else run it to completion."""
    if asynchronous or loop_thread is None:
        return fn(*args, **kwargs)
    return loop_thread.run(lambda: fn(*args, **kwargs), timeout=timeout)
