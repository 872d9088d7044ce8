"""``client.run_on_scheduler``: the one place a client's code may run in the scheduler.

The scheduler package never unpickles anything (a test enforces it), so a bad pickle,
a missing package or a malicious client can't crash or take over the scheduler. Running
a client's function there is therefore an opt-in that lives outside that package:
:func:`enable` installs the handler on one scheduler (``shoal scheduler
--allow-run-on-scheduler``, ``LocalCluster(allow_run_on_scheduler=True)``).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING

from shoal.errors import SerializeError
from shoal.protocol.messages import OK, ErrorReply, Message, RunOnScheduler
from shoal.protocol.serialize import dumps, dumps_run_spec, loads

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

__all__ = ["enable"]


def enable(scheduler: Scheduler) -> None:
    """Let clients of ``scheduler`` run functions in its process."""
    scheduler.extra_handlers[RunOnScheduler.op] = _run


async def _run(scheduler: Scheduler, msg: Message) -> Message:
    assert isinstance(msg, RunOnScheduler)
    try:
        function, args, kwargs = loads(msg.function)
    except SerializeError as e:
        return ErrorReply(f"the scheduler could not load the function: {e}")
    try:
        if "dask_scheduler" in inspect.signature(function).parameters:
            kwargs = {**kwargs, "dask_scheduler": scheduler}
    except (TypeError, ValueError):  # no signature (builtins): call as given
        pass
    try:
        result = function(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = await result
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        try:
            return ErrorReply(text, exception=dumps(exc))
        except SerializeError:
            return ErrorReply(text)
    try:
        return OK(dumps_run_spec(result))
    except SerializeError as e:
        return ErrorReply(f"the function's result can't be sent back: {e}")
