"""What the worker state machine asks its server to do.

The server executes instructions in order and reports the outcome of the long ones
(``Execute``, ``GatherDep``) back as events. Instructions are slotted
dataclasses compared by value (never modified once built), so tests assert exact lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal._types import Address, Key
from shoal.protocol.messages import Message
from shoal.protocol.opaque import Opaque


class Instruction:
    """Base of every instruction."""

    __slots__ = ()


@dataclass(slots=True, unsafe_hash=True)
class Execute(Instruction):
    """Run ``key`` on a thread, with the values of ``dependencies`` from the store.

    The server answers with ``ExecuteSuccess`` (after putting the value in its store)
    or ``ExecuteFailure``.
    """

    key: Key
    run_spec: Opaque | None
    dependencies: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class GatherDep(Instruction):
    """Ask ``worker`` for ``keys`` (``GetData``); about ``total_nbytes`` will arrive.

    The server answers with exactly one of ``GatherDepSuccess``, ``GatherDepMissing``
    or ``GatherDepNetworkFailure`` for ``worker``, naming every key of ``keys``; values
    received are put in the store before the event is handled.
    """

    worker: Address
    keys: tuple[Key, ...]
    total_nbytes: int


@dataclass(slots=True, unsafe_hash=True)
class DropData(Instruction):
    """Delete the values of ``keys`` from the store (missing keys are ignored)."""

    keys: tuple[Key, ...]


@dataclass(slots=True, unsafe_hash=True)
class SendToScheduler(Instruction):
    """Send ``msg`` on the batched stream to the scheduler."""

    msg: Message
