"""``Variable``: one named value shared by clients and tasks (distributed's Variable)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal.coordination.client_base import Primitive, seconds
from shoal.coordination.messages import VariableDelete, VariableGet, VariableSet
from shoal.coordination.values import decode, encode

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["Variable"]


class Variable(Primitive):
    """A named value on the scheduler, that any client or task can set and get.

    ``Variable("x").set(value)``; elsewhere ``Variable("x").get()`` returns it. A Future
    as the value (or inside it) stays alive while the variable holds it, even after its
    client dropped it, and comes back as a Future of the reading client. The value is
    pickled by the setter and unpickled by each reader.
    """

    kind = "variable"

    def __init__(self, name: Any = None, client: Client | None = None) -> None:
        super().__init__(name, client)

    def set(self, value: Any, timeout: float | str | None = None, **kwargs: Any) -> Any:
        """Set the value (a Future, or anything picklable)."""
        data, keys = encode(self.client, value, "Variable")
        return self._call(self._set, data, keys, value)

    async def _set(self, data: Any, keys: tuple[Any, ...], value: Any) -> None:
        # ``value`` is kept referenced until the scheduler holds its futures' keys
        await self._request(VariableSet(self.name, data, keys, self.client.id))

    def get(self, timeout: float | str | None = None, **kwargs: Any) -> Any:
        """The value, waiting until one is set; ``TimeoutError`` after ``timeout`` s."""
        return self._call(self._get, seconds(timeout))

    async def _get(self, timeout: float | None) -> Any:
        reply = await self._blocking(
            lambda wait_id: VariableGet(self.name, timeout, self.client.id, wait_id)
        )
        return decode(self.client, reply["value"], tuple(reply["keys"]))

    def delete(self) -> Any:
        """Forget the value (and release the Futures it held)."""
        return self._call(self._request, VariableDelete(self.name))

    def __reduce__(self) -> Any:
        return Variable, (self.name,)
