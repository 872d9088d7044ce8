"""``client.run``: a function called on a worker (or its nanny), outside any task."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import Any

from shoal._context import task_context
from shoal.errors import SerializeError
from shoal.protocol.messages import OK, ErrorReply, Message, RunFunction
from shoal.protocol.serialize import dumps_run_spec, loads
from shoal.worker.execute import pack_exception


async def run_function(msg: RunFunction, server: Any, is_worker: bool) -> Message:
    """Call the function of ``msg`` on ``server`` (a worker or a nanny); reply its result.

    A parameter named ``dask_worker`` receives ``server``, as distributed's ``Client.run``
    gives it. A coroutine function runs on the event loop, any other in a thread, where
    ``get_worker()`` answers on a worker. Errors come back as the exception itself.
    """
    where = f"{'worker' if is_worker else 'nanny'} {server.address}"
    try:
        function, args, kwargs = loads(msg.function)
    except SerializeError as e:
        return ErrorReply(f"{where} could not load the function: {e}")
    with contextlib.suppress(TypeError, ValueError):  # no signature: builtins, some C
        if "dask_worker" in inspect.signature(function).parameters:
            kwargs = {**kwargs, "dask_worker": server}

    def call() -> Any:
        if is_worker:
            task_context.worker = server
        return function(*args, **kwargs)

    try:
        if asyncio.iscoroutinefunction(function):
            result = await function(*args, **kwargs)
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, call)
    except Exception as exc:
        e_opaque, _, text, tb_text = pack_exception(exc)
        return ErrorReply(f"{text}\n{tb_text}", exception=e_opaque)
    try:
        return OK(dumps_run_spec(result))
    except SerializeError as e:
        return ErrorReply(f"the result of the function on {where} can't be sent: {e}")
