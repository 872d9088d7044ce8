"""The part of :class:`~shoal.Client` that hands out actor proxies (see :mod:`shoal.actor`).

An actor's value, gathered from its worker, is an :class:`~shoal.actor.Actor` proxy.
Proxies unpickled while this client gathers are bound to it: their calls use its
event loop and connections, and each holds a reference to the actor's key, so the actor
lives while its future or any proxy of it is held here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shoal._types import Key
from shoal.actor import binding
from shoal.client.data import DataMixin


class ActorsMixin(DataMixin):
    """Gathering binds the actor proxies it unpickles to this client."""

    async def _gather_keys(self, keys: Sequence[Key]) -> dict[Key, Any]:
        token = binding.set(("client", self))
        try:
            return await super()._gather_keys(keys)
        finally:
            binding.reset(token)
