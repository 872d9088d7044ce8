"""The part of :class:`~shoal.Client` that hands out actor proxies (see :mod:`shoal.actor`).

An actor's value, gathered from its worker, is an :class:`~shoal.actor.Actor` proxy.
Proxies in the values this client loads are bound to it: their calls use its
event loop and connections, and each holds a reference to the actor's key, so the actor
lives while its future or any proxy of it is held here.
"""

from __future__ import annotations

from typing import Any

from shoal.actor import binding
from shoal.client.data import DataMixin
from shoal.protocol.opaque import Opaque


class ActorsMixin(DataMixin):
    """Values loaded here bind the actor proxies they hold to this client."""

    def _load_value(self, opaque: Opaque) -> Any:
        """A task's value, with any actor proxy in it bound to this client."""
        token = binding.set(("client", self))
        try:
            return super()._load_value(opaque)
        finally:
            binding.reset(token)
