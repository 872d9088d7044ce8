"""What the client side of every coordination primitive shares: finding the client,
calling the scheduler, and raising what its answers say.

A primitive made without ``client=`` uses ``shoal.get_client()`` when first used: the
default client, or inside a task the worker's client. Methods block with a
synchronous client and return awaitables with an asynchronous one (like every
``Client`` method). Primitives pickle by name, so one can be passed to tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from shoal.config import parse_seconds
from shoal.coordination.messages import CancelWait
from shoal.protocol.messages import Message

if TYPE_CHECKING:
    from shoal.client.client import Client

_ERRORS: dict[str, type[Exception]] = {
    "TimeoutError": TimeoutError,
    "KeyError": KeyError,
    "ValueError": ValueError,
    "RuntimeError": RuntimeError,
}


def check(value: Any) -> Any:
    """Raise the error a coordination reply carries, else return the reply's value."""
    if isinstance(value, dict) and "error" in value and value.get("error") in _ERRORS:
        raise _ERRORS[value["error"]](value.get("message", ""))
    return value


async def request(client: Client, msg: Message) -> Any:
    """Send ``msg`` to ``client``'s scheduler; return the answer's value or raise."""
    if client.status != "running":
        raise RuntimeError(f"the client is {client.status}; create a new Client")
    return check(await client._request(msg))


def seconds(timeout: float | str | None) -> float | None:
    """A timeout in seconds: a number, a string such as ``"500ms"``, or ``None``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool):
        raise TypeError(f"a timeout is a number of seconds or None, not {timeout!r}")
    return parse_seconds(timeout)


def resolve_client(client: Client | None) -> Client:
    """``client``, or the one ``shoal.get_client()`` finds (the worker's, in a task)."""
    if client is not None:
        return client
    from shoal.client.client import get_client

    return get_client()


class Primitive:
    """Base of the client-side primitives: a name, and a client found when needed."""

    #: the prefix of generated names
    kind = "primitive"

    def __init__(self, name: Any = None, client: Client | None = None) -> None:
        self.name: Any = name if name is not None else f"{self.kind}-{uuid.uuid4().hex}"
        self._client = client

    @property
    def client(self) -> Client:
        """The client this primitive talks through."""
        if self._client is None:
            self._client = resolve_client(None)
        return self._client

    def _call(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` run to completion (sync client) or as an awaitable (async)."""
        return self.client._sync(fn, *args, **kwargs)

    async def _request(self, msg: Message) -> Any:
        return await request(self.client, msg)

    async def _blocking(
        self, make: Callable[[str], Message], wait_id: str = "", cleanup: Message | None = None
    ) -> Any:
        """Send the blocking request ``make(wait_id)``. If the caller stops waiting (its
        coroutine is cancelled), tell the scheduler, so that the request takes nothing
        (then send ``cleanup``, e.g. the release of a lease granted meanwhile)."""
        wait_id = wait_id or uuid.uuid4().hex
        try:
            return await self._request(make(wait_id))
        except asyncio.CancelledError:
            client = self.client

            async def cancel() -> None:
                with contextlib.suppress(Exception):
                    await request(client, CancelWait(wait_id))
                    if cleanup is not None:
                        await request(client, cleanup)

            task = asyncio.ensure_future(cancel())
            client._background.add(task)
            task.add_done_callback(client._background.discard)
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name!r}>"
