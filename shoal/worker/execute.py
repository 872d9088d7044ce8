"""Running tasks: load the run spec, fill in dependencies, call, capture errors."""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback as tb_module
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tblib

from shoal._context import task_context
from shoal._types import Key
from shoal.actor import NewActor
from shoal.comm import shared_memory
from shoal.comm.shared_memory import SharedValue
from shoal.errors import SerializeError
from shoal.protocol import runspec
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import dumps, dumps_small, nbytes_of

if TYPE_CHECKING:
    from shoal.worker.server import Worker


def get_worker() -> Worker:
    """Return the worker running the current task (call it inside a task)."""
    worker = getattr(task_context, "worker", None)
    if worker is None:
        from shoal.worker.server import Worker

        live = [w for w in Worker.instances if w.status == "running"]
        if len(live) == 1:
            return live[0]
        raise ValueError("get_worker() was called outside of a task running on a shoal worker")
    return worker  # type: ignore[no-any-return]


@dataclass(slots=True)
class Outcome:
    """What running one task produced."""

    key: Key
    ok: bool
    value: Any = None
    nbytes: int = 0
    type_name: str = ""
    exception: Opaque | None = None
    traceback: Opaque | None = None
    exception_text: str = ""
    traceback_text: str = ""
    start: float = 0.0
    stop: float = 0.0
    #: The value serialized, when it is small enough to travel with the report.
    wire: bytes | None = None
    #: The memory file the value is a view of (see :mod:`shoal.comm.shared_memory`).
    file: SharedValue | None = None


def small_value(value: Any, nbytes: int, limit: int) -> bytes | None:
    """``value`` pickled into one buffer of at most ``limit`` bytes, else None: it then
    travels inside the message header, as bytes."""
    return None if nbytes > limit else dumps_small(value, limit)


def pack_exception(
    exc: BaseException,
) -> tuple[Opaque | None, Opaque | None, str, str]:
    """Serialize an exception and its traceback for the wire, plus both as text."""
    text = f"{type(exc).__name__}: {exc}"
    tb = exc.__traceback__
    tb_text = "".join(tb_module.format_exception(type(exc), exc, tb))
    try:
        tb_opaque: Opaque | None = dumps(tblib.Traceback(tb)) if tb is not None else None
    except Exception:
        tb_opaque = None
    try:
        exc_opaque: Opaque | None = dumps(exc.with_traceback(None))
    except Exception:
        exc_opaque = None
    finally:
        exc.with_traceback(tb)
    return exc_opaque, tb_opaque, text, tb_text


def _run_coroutine(worker: Worker, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on the worker's event loop and wait for its result on this thread
    (a task thread), as distributed runs ``async def`` tasks."""
    loop = worker._loop
    if loop is None or loop.is_closed():
        coro.close()
        raise RuntimeError("the worker's event loop is not running")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def run_task(
    worker: Worker, key: Key, run_spec: Opaque | None, values: Mapping[Key, Any]
) -> Outcome:
    """Run one task on the calling thread and describe what happened. Never raises."""
    start = time.time()
    task_context.worker = worker
    task_context.key = key
    try:
        if run_spec is None:
            raise RuntimeError(f"task {key!r} has no run spec (was its data lost?)")
        try:
            spec = runspec.loads_run_spec(run_spec)
        except SerializeError as e:
            raise SerializeError(
                f"could not load the function of task {key!r} on worker {worker.address}: {e}. "
                "Is the module that defines it installed on the workers?"
            ) from e.__cause__
        value = spec(values)
        if inspect.iscoroutine(value):  # an ``async def`` task: run on the worker's loop
            value = _run_coroutine(worker, value)
    except BaseException as exc:  # user code may raise anything, SystemExit included
        e_opaque, tb_opaque, text, tb_text = pack_exception(_strip_frames(exc))
        return Outcome(
            key,
            ok=False,
            exception=e_opaque,
            traceback=tb_opaque,
            exception_text=text,
            traceback_text=tb_text,
            start=start,
            stop=time.time(),
        )
    finally:
        task_context.key = None
    nbytes = nbytes_of(value)
    file = None
    least = worker.share_min_bytes
    if least is not None and nbytes >= least:  # only plain numpy arrays are shared
        # written once now, so that peers on this host map it instead of copying it (the
        # thread is busy meanwhile: the task's duration includes it)
        shared = shared_memory.share(value, least)
        if shared is not None:
            value, file = shared
    stop = time.time()
    return Outcome(
        key,
        ok=True,
        value=value,
        nbytes=nbytes,
        type_name=_type_name(value),
        start=start,
        stop=stop,
        # an actor's value is the proxy its worker makes of it (Worker._tasks_done)
        wire=None
        if type(value) is NewActor
        else small_value(value, nbytes, worker.inline_result_bytes),
        file=file,
    )


def _strip_frames(exc: BaseException) -> BaseException:
    """Drop shoal's own frames from the start of the traceback (keep the user's)."""
    tb = exc.__traceback__
    ours = (__file__, runspec.__file__)
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    return exc.with_traceback(tb)


def _type_name(value: Any) -> str:
    typ = type(value)
    mod = typ.__module__
    return typ.__qualname__ if mod == "builtins" else f"{mod}.{typ.__qualname__}"
