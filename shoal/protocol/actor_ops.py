"""Requests a proxy sends straight to the worker holding an actor (never via the scheduler).

Replies: ``OK(Opaque)`` with the pickled result or attribute value, or ``ErrorReply``
whose ``exception`` is the pickled exception to raise in the caller (the method's own
exception, ``AttributeError`` for a name the actor lacks, or ``ActorLost`` when the
worker no longer holds the actor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shoal._types import Key
from shoal.protocol.messages import Message
from shoal.protocol.opaque import Opaque

__all__ = ["ActorCall", "ActorGetAttribute"]


@dataclass(slots=True, unsafe_hash=True)
class ActorCall(Message):
    """Call ``method`` of the actor ``key`` with the pickled ``(args, kwargs)``."""

    op: ClassVar[str] = "actor-call"
    key: Key
    method: str
    args: Opaque


@dataclass(slots=True, unsafe_hash=True)
class ActorGetAttribute(Message):
    """Read the attribute ``attribute`` of the actor ``key``."""

    op: ClassVar[str] = "actor-getattr"
    key: Key
    attribute: str
