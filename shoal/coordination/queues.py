"""``Queue``: a named FIFO of values shared by clients and tasks (distributed's Queue)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.coordination.client_base import Primitive, seconds
from shoal.coordination.messages import QueueCreate, QueueGet, QueuePut, QueueSize
from shoal.coordination.values import decode, encode

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["Queue"]


class Queue(Primitive):
    """A named first-in first-out queue on the scheduler.

    Any client or task can ``put`` and ``get``; ``maxsize`` bounds it (0: unbounded;
    the queue's first user sets it). Futures put into it stay alive until taken out,
    and come out as Futures of the client that gets them. Values are pickled by the
    putter and unpickled by the getter.
    """

    kind = "queue"

    def __init__(self, name: Any = None, client: Client | None = None, maxsize: int = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize must be an int >= 0 (0: unbounded), not {maxsize!r}")
        super().__init__(name, client)
        self.maxsize = maxsize
        if client is not None and not client.asynchronous:
            client._sync(self._request, QueueCreate(self.name, maxsize))

    def put(self, value: Any, timeout: float | str | None = None, **kwargs: Any) -> Any:
        """Append ``value``; with the queue full, wait up to ``timeout`` s for room
        (then ``TimeoutError``)."""
        data, keys = encode(self.client, value, "Queue")
        return self._call(self._put, data, keys, seconds(timeout), value)

    async def _put(
        self, data: Any, keys: tuple[Any, ...], timeout: float | None, value: Any
    ) -> None:
        # ``value`` is kept referenced until the scheduler holds its futures' keys
        await self._blocking(
            lambda wait_id: QueuePut(
                self.name, data, keys, timeout, self.maxsize, self.client.id, wait_id
            )
        )

    def get(
        self, timeout: float | str | None = None, batch: bool | int = False, **kwargs: Any
    ) -> Any:
        """Take the next value, waiting up to ``timeout`` s (then ``TimeoutError``).

        ``batch=True`` takes every value there (a list, maybe empty) without waiting;
        ``batch=n`` waits for ``n`` values and returns them as a list.
        """
        if not isinstance(batch, bool) and (not isinstance(batch, int) or batch < 0):
            raise ValueError(f"batch must be True, False or an int >= 0, not {batch!r}")
        return self._call(self._get, seconds(timeout), batch)

    async def _get(self, timeout: float | None, batch: bool | int) -> Any:
        reply = await self._blocking(
            lambda wait_id: QueueGet(
                self.name, timeout, batch, self.maxsize, self.client.id, wait_id
            )
        )
        items = [decode(self.client, data, tuple(keys)) for data, keys in reply["items"]]
        if batch is False:
            return items[0]
        return items

    def qsize(self) -> Any:
        """How many values the queue holds now."""
        return self._call(self._request, QueueSize(self.name))

    def __reduce__(self) -> Any:
        return Queue, (self.name, None, self.maxsize)
