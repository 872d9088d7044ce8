"""User objects ⇄ :class:`Opaque` frames.  The only module of shoal that imports pickle.

* :func:`dumps` uses pickle protocol 5 with a ``buffer_callback``: buffers that support
  it (numpy arrays, pandas blocks, arrow buffers, ``PickleBuffer``) travel as their own
  frames, as views of the object's memory (no copy).  When plain pickle fails, or when
  its output refers to ``__main__`` (a function defined in a script or notebook, which
  the receiver could not import), the object is pickled with cloudpickle instead.
* :func:`dumps_run_spec` does the same for run specs, whose functions are cloudpickled
  once each by :func:`dumps_function`.
* :func:`loads` rebuilds the object; the out-of-band frames it received become the
  memory of the arrays it contains (writable when the frames are, e.g. slices of the
  decoder's receive buffer).

Every failure is a :class:`SerializeError` naming the object's type and the cause.
The scheduler never calls :func:`loads` (see STYLE.md, rule 3).
"""

from __future__ import annotations

import io
import pickle
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cloudpickle

from shoal.errors import SerializeError
from shoal.protocol.opaque import Frame, Opaque

__all__ = [
    "dumps",
    "dumps_function",
    "dumps_run_spec",
    "dumps_small",
    "function_bytes",
    "loads",
    "loads_function",
    "nbytes_of",
]

_PROTOCOL = 5


def _raw(buf: pickle.PickleBuffer) -> Frame:
    """The flat bytes of an out-of-band buffer, without a copy when possible."""
    try:
        return buf.raw()
    except BufferError:  # not contiguous: pickle would copy it in-band anyway
        return bytes(buf)


def _pickle_with(
    pickler: Callable[..., bytes], obj: object
) -> tuple[bytes, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    header = pickler(obj, protocol=_PROTOCOL, buffer_callback=buffers.append)
    return header, buffers


def _type_name(obj: object) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _dumps(obj: object, what: str) -> Opaque:
    try:
        header, buffers = _pickle_with(pickle.dumps, obj)
    except Exception:
        pass
    else:
        # A reference to __main__ pickles fine here but cannot be loaded elsewhere.
        if b"__main__" not in header:
            return Opaque([header, *(_raw(b) for b in buffers)])
    try:
        header, buffers = _pickle_with(cloudpickle.dumps, obj)
    except Exception as e:
        raise SerializeError(
            f"could not serialize {what} of type {_type_name(obj)}: {type(e).__name__}: {e}"
        ) from e
    return Opaque([header, *(_raw(b) for b in buffers)])


def dumps(obj: object) -> Opaque:
    """Serialize ``obj``: pickle 5 with out-of-band buffers, else cloudpickle."""
    return _dumps(obj, "object")


class _TooLarge(Exception):
    pass


class _CappedWriter(io.BytesIO):
    """A pickle destination that gives up past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:  # type: ignore[override]
        n = super().write(data)
        if self.tell() > self.limit:
            raise _TooLarge
        return n


def _refuse_out_of_band(buf: pickle.PickleBuffer) -> bool:
    raise _TooLarge  # a buffer large enough to travel on its own: not small


def dumps_small(obj: object, limit: int) -> bytes | None:
    """``obj`` pickled into at most ``limit`` bytes, in one buffer, or None.

    Stops as soon as the output passes ``limit`` (an object that hides a large payload
    costs no more than ``limit`` bytes of pickling); None too when plain pickle can't do
    it, or the output refers to ``__main__`` (:func:`dumps` then picks the right way).
    """
    out = _CappedWriter(limit)
    try:
        pickle.Pickler(out, protocol=_PROTOCOL, buffer_callback=_refuse_out_of_band).dump(obj)
    except Exception:  # _TooLarge, or anything plain pickle can't do
        return None
    data = out.getvalue()
    return None if b"__main__" in data else data


def dumps_run_spec(obj: object) -> Opaque:
    """Serialize a run spec (a callable and its arguments), as :func:`dumps` does.

    Plain pickle is fast here: a :class:`~shoal.protocol.runspec.RunSpec` carries its
    function already cloudpickled (see :func:`dumps_function`). Out-of-band buffers
    that are views of the caller's memory (a numpy argument) are copied: the task gets
    the arguments as they were at submit, whatever the caller does with them after.
    """
    opaque = _dumps(obj, "task")
    opaque.frames = [
        f if type(f) is bytes or (type(f) is memoryview and type(f.obj) is bytes) else bytes(f)
        for f in opaque.frames
    ]
    return opaque


_CACHE_SIZE = 128
_cache_lock = threading.Lock()
_dumped: OrderedDict[Any, bytes] = OrderedDict()
_loaded: OrderedDict[bytes, Any] = OrderedDict()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    with _cache_lock:
        cache[key] = value
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)


def dumps_function(func: Any) -> pickle.PickleBuffer:
    """:func:`function_bytes` as a ``PickleBuffer``, so that inside a pickled run spec
    the function travels as its own out-of-band frame (and the ``__main__`` check of
    :func:`dumps_run_spec` looks at the arguments only)."""
    return pickle.PickleBuffer(function_bytes(func))


def function_bytes(func: Any, remember: bool = True) -> bytes:
    """cloudpickle a task's function, once: ``map`` over 10,000 items pickles it once.

    Functions with closures are pickled every time (their cells may change), and so is
    every function with ``remember=False``.
    """
    cacheable = remember and getattr(func, "__closure__", None) is None
    cached = None
    if cacheable:
        try:
            cached = _dumped.get(func)
        except TypeError:  # unhashable callable
            cacheable = False
    if cached is None:
        try:
            cached = cloudpickle.dumps(func, protocol=_PROTOCOL)
        except Exception as e:
            name = getattr(func, "__qualname__", None) or _type_name(func)
            raise SerializeError(
                f"could not serialize function {name}: {type(e).__name__}: {e}"
            ) from e
        if cacheable:
            _remember(_dumped, func, cached)
    return cached


def loads_function(data: Any) -> Any:
    """Inverse of :func:`dumps_function`, with a cache of recently loaded functions."""
    key = bytes(data)
    func = _loaded.get(key)
    if func is None:
        try:
            func = pickle.loads(key)
        except Exception as e:
            raise SerializeError(
                f"could not unpickle the task's function: {type(e).__name__}: {e}"
            ) from e
        _remember(_loaded, key, func)
    return func


def loads(data: Opaque) -> Any:
    """Rebuild the object serialized in ``data``."""
    frames = data.frames
    if not frames:
        raise SerializeError("could not unpickle: no frames")
    try:
        return pickle.loads(frames[0], buffers=frames[1:])
    except Exception as e:
        raise SerializeError(f"could not unpickle: {type(e).__name__}: {e}") from e


#: items of a container measured one by one; beyond that, a sample is extrapolated
_SAMPLED_ITEMS = 20


def _pandas_nbytes(obj: Any) -> int | None:
    """Shallow size of a pandas DataFrame/Series/Index from its arrays (what
    ``memory_usage(deep=False)`` says, about 100x faster: no Series is built)."""
    try:
        mgr = getattr(obj, "_mgr", None)
        if mgr is not None:
            return int(sum(a.nbytes for a in mgr.arrays) + obj.index.nbytes)
        return int(obj.nbytes)  # an Index
    except Exception:
        usage = getattr(obj, "memory_usage", None)
        if usage is None:
            return None
        try:
            total = usage(index=True, deep=False)
            return int(total.sum() if hasattr(total, "sum") else total)
        except Exception:
            return None


def nbytes_of(obj: object, _depth: int = 0) -> int:
    """A cheap estimate of the memory ``obj`` holds, for bookkeeping (not exact).

    numpy arrays (and anything with an integer ``nbytes``): ``nbytes``; pandas
    objects: the size of their arrays (shallow); bytes-like objects: their size; lists,
    tuples, sets and dicts: their own size plus their items' (from a sample of
    ``_SAMPLED_ITEMS`` when larger; three levels deep at most); otherwise
    ``sys.getsizeof``.
    """
    if isinstance(obj, bytes | bytearray):
        return len(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    if isinstance(obj, Opaque):
        return obj.nbytes
    if type(obj).__module__.startswith("pandas"):
        size = _pandas_nbytes(obj)
        if size is not None:
            return size
    if isinstance(obj, list | tuple | set | frozenset | dict) and _depth < 3:
        items = list(obj.values()) if isinstance(obj, dict) else list(obj)
        if len(items) > _SAMPLED_ITEMS:
            step = len(items) / _SAMPLED_ITEMS
            sample = [items[int(i * step)] for i in range(_SAMPLED_ITEMS)]
            inner = sum(nbytes_of(x, _depth + 1) for x in sample) * len(items) // _SAMPLED_ITEMS
        else:
            inner = sum(nbytes_of(x, _depth + 1) for x in items)
        return sys.getsizeof(obj) + inner
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    try:
        return sys.getsizeof(obj)
    except Exception:
        return 64
