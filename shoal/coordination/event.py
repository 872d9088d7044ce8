"""``Event``: a named flag that tasks and clients wait for (distributed's Event)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.coordination.client_base import Primitive, seconds
from shoal.coordination.messages import EventClear, EventSet, EventWait

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["Event"]


class Event(Primitive):
    """A cluster-wide flag, like ``threading.Event``, shared by name.

    ``Event("go").wait()`` in tasks blocks until some client or task calls
    ``Event("go").set()``; ``clear()`` resets it.
    """

    kind = "event"

    def __init__(self, name: Any = None, client: Client | None = None) -> None:
        super().__init__(name, client)

    def wait(self, timeout: float | str | None = None) -> Any:
        """Wait until the event is set (at most ``timeout`` s); return whether it is."""
        return self._call(self._wait, seconds(timeout))

    async def _wait(self, timeout: float | None) -> bool:
        client = self.client.id
        return bool(
            await self._blocking(lambda wait_id: EventWait(self.name, timeout, wait_id, client))
        )

    def set(self) -> Any:
        """Set the event: every waiter wakes, and later waits return at once."""
        return self._call(self._request, EventSet(self.name))

    def clear(self) -> Any:
        """Clear the event: waits block again until it is set."""
        return self._call(self._request, EventClear(self.name))

    def is_set(self) -> Any:
        """Whether the event is set."""
        return self._call(self._wait, 0)

    def __reduce__(self) -> Any:
        return Event, (self.name,)
