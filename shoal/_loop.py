"""Which event loop shoal runs on: uvloop's where it is installed, else asyncio's.

``event-loop`` (config, ``SHOAL_EVENT_LOOP``): ``auto`` (the default: uvloop if it can
be imported), ``uvloop`` (an error if it is missing) or ``asyncio``. uvloop brings a
submit→result round trip from about 0.85 ms to 0.7 ms on the benchmark machine.
Only the loops shoal makes are affected (the client's loop thread, the ``shoal``
command's processes); a user's process keeps its event-loop policy (on Python 3.10 the
``shoal`` command sets uvloop's policy in its own processes, which have no other use).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from shoal import config

T = TypeVar("T")

_CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The function that makes shoal's event loops, as ``event-loop`` says."""
    choice = str(config.get("event-loop") or "auto").lower()
    if choice not in _CHOICES:
        raise ValueError(f"event-loop must be one of {', '.join(_CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ImportError(
                "event-loop is 'uvloop' but uvloop is not installed: pip install uvloop, "
                "or set event-loop to 'auto' or 'asyncio'"
            ) from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``event-loop`` says."""
    return loop_factory()()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a loop of the kind ``event-loop`` says."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(main)
    factory = loop_factory()  # pragma: no cover - Python 3.10
    if factory is not asyncio.new_event_loop:  # pragma: no cover
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # this process is ours
    return asyncio.run(main)  # pragma: no cover
