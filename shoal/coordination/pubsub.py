"""``Pub`` and ``Sub``: publish messages on a topic to every subscriber (distributed's).

Messages go through the scheduler, which keeps a buffer per subscriber. A subscriber
receives what is published after it was made (``await Sub(...)`` in asynchronous code
waits until it is registered). Messages are pickled by the publisher and unpickled by
each subscriber; they can't carry Futures (use a Queue or a Variable for those).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from typing import TYPE_CHECKING, Any

from shoal.client.sync import in_loop_thread
from shoal.coordination.client_base import Primitive, seconds
from shoal.coordination.messages import PubPut, SubGet, SubRegister, SubUnregister
from shoal.coordination.values import decode, encode

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["Pub", "Sub"]


class Pub(Primitive):
    """Publish messages on topic ``name``: ``Pub("progress").put({"done": 3})``.

    With a synchronous client ``put`` returns once the scheduler has the message; with
    an asynchronous one it sends in the background, in order, and returns an awaitable
    that may be awaited to wait for that.
    """

    kind = "pub"

    def __init__(self, name: Any, worker: Any = None, client: Client | None = None) -> None:
        super().__init__(name, client)
        self._last: asyncio.Future[Any] | None = None

    def put(self, msg: Any) -> Any:
        """Publish ``msg`` to every current subscriber of the topic."""
        data, _ = encode(self.client, msg, "Pub/Sub message", futures=False)
        if not self.client.asynchronous:
            return self._call(self._put, data, None)
        task = asyncio.ensure_future(self._put(data, self._last))
        self._last = task
        return task

    async def _put(self, data: Any, previous: asyncio.Future[Any] | None) -> int:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        return int(await self._request(PubPut(self.name, data)))

    def __reduce__(self) -> Any:
        return Pub, (self.name,)


class Sub(Primitive):
    """Receive what is published on topic ``name`` from now on.

    ``sub.get(timeout)`` returns the next message (``TimeoutError`` after ``timeout``
    s); ``for msg in sub`` (``async for``) iterates forever. ``close()`` ends the
    subscription (so does the client's departure).
    """

    kind = "sub"

    def __init__(self, name: Any, worker: Any = None, client: Client | None = None) -> None:
        super().__init__(name, client)
        self._id = f"sub-{uuid.uuid4().hex}"
        self._closed = False
        self._registered: asyncio.Future[Any] | None = None
        c = self.client
        if not c.asynchronous:
            c._sync(self._register)
        elif c.loop is not None and in_loop_thread(c.loop):
            self._registered = asyncio.ensure_future(self._register())

    async def _register(self) -> None:
        await self._request(SubRegister(self.name, self._id, self.client.id))

    async def _ready(self) -> None:
        if self._registered is None:
            self._registered = asyncio.ensure_future(self._register())
        await self._registered

    def __await__(self) -> Generator[Any, None, Sub]:
        async def ready() -> Sub:
            await self._ready()
            return self

        return ready().__await__()

    def get(self, timeout: float | str | None = None) -> Any:
        """The next message, waiting up to ``timeout`` s (then ``TimeoutError``)."""
        if self._closed:
            raise RuntimeError("this Sub is closed: make a new Sub to receive again")
        return self._call(self._get, seconds(timeout))

    async def _get(self, timeout: float | None) -> Any:
        if self.client.asynchronous:
            await self._ready()
        data = await self._blocking(lambda wait_id: SubGet(self._id, timeout, wait_id))
        return decode(self.client, data)

    def close(self) -> Any:
        """End the subscription: nothing more is kept for this Sub."""
        self._closed = True
        return self._call(self._request, SubUnregister(self._id))

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.get()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Any]:
        while True:
            yield await self._get(None)

    def __del__(self) -> None:
        client = self._client
        if self._closed or client is None or client.status != "running":
            return
        loop = client.loop
        if loop is None or loop.is_closed():
            return
        msg = SubUnregister(self._id)

        async def unregister() -> None:
            with contextlib.suppress(Exception):
                await client._request(msg)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(unregister()))

    def __reduce__(self) -> Any:
        return Sub, (self.name,)
