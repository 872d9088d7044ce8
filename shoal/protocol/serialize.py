"""User objects ⇄ :class:`Opaque` frames.  The only module of shoal that imports pickle.

* :func:`dumps` uses pickle protocol 5 with a ``buffer_callback``: buffers that support
  it (numpy arrays, pandas blocks, arrow buffers, ``PickleBuffer``) travel as their own
  frames, as views of the object's memory (no copy).  When plain pickle fails, or when
  its output refers to ``__main__`` (a function defined in a script or notebook, which
  the receiver could not import), the object is pickled with cloudpickle instead.
* :func:`dumps_run_spec` always uses cloudpickle: run specs reference user functions.
* :func:`loads` rebuilds the object; the out-of-band frames it received become the
  memory of the arrays it contains (writable when the frames are, e.g. slices of the
  decoder's receive buffer).

Every failure is a :class:`SerializeError` naming the object's type and the cause.
The scheduler never calls :func:`loads` (see STYLE.md, rule 3).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from typing import Any

import cloudpickle

from shoal.errors import SerializeError
from shoal.protocol.opaque import Frame, Opaque

__all__ = ["dumps", "dumps_run_spec", "loads", "nbytes_of"]

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


def dumps(obj: object) -> Opaque:
    """Serialize ``obj``: pickle 5 with out-of-band buffers, else cloudpickle."""
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
            f"could not serialize object of type {_type_name(obj)}: {type(e).__name__}: {e}"
        ) from e
    return Opaque([header, *(_raw(b) for b in buffers)])


def dumps_run_spec(obj: object) -> Opaque:
    """Serialize a run spec (a callable and its arguments) with cloudpickle."""
    try:
        header, buffers = _pickle_with(cloudpickle.dumps, obj)
    except Exception as e:
        raise SerializeError(
            f"could not serialize task of type {_type_name(obj)}: {type(e).__name__}: {e}"
        ) from e
    return Opaque([header, *(_raw(b) for b in buffers)])


def loads(data: Opaque) -> Any:
    """Rebuild the object serialized in ``data``."""
    frames = data.frames
    if not frames:
        raise SerializeError("could not unpickle: no frames")
    try:
        return pickle.loads(frames[0], buffers=frames[1:])
    except Exception as e:
        raise SerializeError(f"could not unpickle: {type(e).__name__}: {e}") from e


def nbytes_of(obj: object) -> int:
    """A cheap estimate of the memory ``obj`` holds, for bookkeeping (not exact).

    numpy arrays (and anything with an integer ``nbytes``): ``nbytes``; pandas
    objects: shallow ``memory_usage``; bytes-like objects: their size; otherwise
    ``sys.getsizeof``.
    """
    if isinstance(obj, bytes | bytearray):
        return len(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    if isinstance(obj, Opaque):
        return obj.nbytes
    if type(obj).__module__.startswith("pandas"):
        usage = getattr(obj, "memory_usage", None)
        if usage is not None:
            try:
                total = usage(index=True, deep=False)
                total = total.sum() if hasattr(total, "sum") else total
                return int(total)
            except Exception:
                pass
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    try:
        return sys.getsizeof(obj)
    except Exception:
        return 64
