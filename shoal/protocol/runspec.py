"""What a task runs: a callable, its arguments, and references to other tasks' results.

The client builds a :class:`RunSpec` for ``submit``/``map``; references to futures become
:class:`KeyRef` placeholders (found by :func:`find_refs`), the worker swaps them for the
dependencies' values (:func:`substitute`) and calls the function. dask graph nodes
(``dask._task_spec.GraphNode``) are run specs too; the worker calls them with a mapping
of dependency values.

A call whose arguments are all plain scalars or references, with no keywords
(``map(f, range(n))``, ``delayed(add)(a, b)``: the common tiny tasks) travels compact:
its arguments as msgpack, the function (cloudpickled once) in its own frame, no pickle
at all (:func:`dumps_call`, :func:`loads_run_spec`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from shoal._types import Key
from shoal.errors import SerializeError
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import (
    dumps_function,
    dumps_run_spec,
    function_bytes,
    loads,
    loads_function,
)

_CONTAINERS = (list, tuple, set, frozenset, dict)


class KeyRef:
    """A placeholder for the value of another task, resolved on the worker."""

    __slots__ = ("key",)

    def __init__(self, key: Key) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyRef, (self.key,))

    def __repr__(self) -> str:
        return f"KeyRef({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyRef) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("KeyRef", self.key))


class RunSpec:
    """``function(*args, **kwargs)`` where args may hold :class:`KeyRef` placeholders."""

    __slots__ = ("args", "function", "kwargs")

    def __init__(
        self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        # The function travels cloudpickled (once per function, cached), so the rest
        # of the spec pickles with the fast plain pickler.
        return (_rebuild_run_spec, (dumps_function(self.function), self.args, self.kwargs))

    def __call__(self, values: Mapping[Key, Any]) -> Any:
        """Run the function with every placeholder replaced by its value."""
        if values:
            args = substitute(self.args, values)
            kwargs = substitute(self.kwargs, values)
            return self.function(*args, **kwargs)
        return self.function(*self.args, **self.kwargs)


#: Returned by a ``replace`` callback to keep an object as it is.
KEEP: Any = object()


def _rebuild_run_spec(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunSpec:
    return RunSpec(loads_function(function), args, kwargs)


#: Plain values: msgpack gives each back as it was (exact types: a subclass would not
#: come back as itself).
PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})

#: First byte of a compact run spec's header (a pickle's is 0x80): msgpack follows.
_COMPACT = b"\x01"


#: msgpack extension codes of a :class:`KeyRef` among compact arguments: a ``str`` key
#: as UTF-8 (delayed and submit keys), any other key as msgpack
_STR_REF_EXT = 2
_REF_EXT = 1

_new_tuple = tuple.__new__
_packers = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's msgpack packer: ``msgpack.packb`` makes a new one each call, which
    costs more than packing a few scalars."""
    try:
        packer: msgpack.Packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer


def _pack_ref(obj: Any) -> Any:
    # (as msgpack's ``default`` this would cost a Python call per argument, references
    # or not)
    return packed_ref(obj.key) if type(obj) is KeyRef else obj


def packed_ref(key: Key) -> Any:
    """A reference to the result of the task ``key`` as it goes into a compact run
    spec's arguments (:func:`dumps_packed_call`)."""
    # an ExtType is a namedtuple whose checking constructor costs 0.3 us
    if type(key) is str:
        return _new_tuple(msgpack.ExtType, (_STR_REF_EXT, key.encode()))
    return _new_tuple(msgpack.ExtType, (_REF_EXT, _packer().pack(key)))


def dumps_packed_call(args: tuple[Any, ...], function_frame: bytes) -> Opaque | None:
    """The compact run spec of the function cloudpickled in ``function_frame`` called on
    ``args``: plain values (:data:`PLAIN_TYPES`) and :func:`packed_ref` references. None
    when msgpack can't carry them (an int beyond 64 bits, a str with lone surrogates).

    What :func:`dumps_call` makes, for a caller that has the references already (a dask
    graph's task: its arguments' ``TaskRef`` s, without a :class:`KeyRef` each)."""
    try:
        packed: bytes = _packer().pack(args)
    except (OverflowError, ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        return None
    return Opaque([_COMPACT + packed, function_frame])


def _unpack_ref(code: int, data: bytes) -> KeyRef:
    if code == _STR_REF_EXT:
        return KeyRef(data.decode())
    if code != _REF_EXT:
        raise ValueError(f"unknown msgpack extension {code}")
    return KeyRef(msgpack.unpackb(data, raw=False, use_list=False))


def dumps_call(
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    function_frame: bytes | None = None,
) -> Opaque:
    """The run spec of ``function(*args, **kwargs)``, serialized.

    Arguments that are plain scalars or :class:`KeyRef` s (the results of other tasks),
    and no keywords (``map`` over numbers or strings, a dask task of a function of other
    tasks): msgpack, about 7x faster to make and 3x to load than a pickle. Anything else
    (containers, keywords, an int beyond 64 bits, a str with lone surrogates): pickle, as
    :func:`~shoal.protocol.serialize.dumps_run_spec` does. ``function_frame``: the
    function already cloudpickled (else :func:`~shoal.protocol.serialize.function_bytes`).
    """
    packed = None if kwargs else _pack_args(args)
    if packed is None:
        return dumps_run_spec(RunSpec(function, args, kwargs))
    frame = function_bytes(function) if function_frame is None else function_frame
    return Opaque([_COMPACT + packed, frame])


def _pack_args(args: tuple[Any, ...]) -> bytes | None:
    """``args`` as msgpack, or None when one is neither plain nor a :class:`KeyRef`, or
    msgpack can't carry it."""
    refs = False
    for a in args:
        if type(a) is KeyRef:
            refs = True
        elif type(a) not in PLAIN_TYPES:
            return None
    try:  # references are converted only when there are some: map over numbers has none
        packed: bytes = _packer().pack(tuple(map(_pack_ref, args)) if refs else args)
    except (OverflowError, ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        return None
    return packed


def loads_run_spec(data: Opaque) -> Any:
    """Inverse of :func:`dumps_call` and of ``dumps_run_spec`` (a :class:`RunSpec`, a dask
    graph node, or whatever was pickled)."""
    frames = data.frames
    if len(frames) != 2 or bytes(frames[0][:1]) != _COMPACT:
        return loads(data)
    try:
        args = msgpack.unpackb(
            memoryview(frames[0])[1:], raw=False, use_list=False, ext_hook=_unpack_ref
        )
    except Exception as e:
        raise SerializeError(
            f"could not unpack the task's arguments: {type(e).__name__}: {e}"
        ) from e
    if type(args) is not tuple:
        raise SerializeError(f"a compact run spec holds {type(args).__name__}, not arguments")
    return RunSpec(loads_function(frames[1]), args, {})


def replace_objects(obj: Any, replace: Callable[[Any], Any]) -> Any:
    """Rebuild ``obj`` with every object for which ``replace`` doesn't return ``KEEP``.

    Walks lists, tuples, sets and dicts (values only); other objects are leaves. The
    original container is returned when nothing inside it changed.
    """
    new = replace(obj)
    if new is not KEEP:
        return new
    typ = type(obj)
    if typ is list or typ is tuple or typ is set or typ is frozenset:
        items = [replace_objects(x, replace) for x in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return typ(items)
    if typ is dict:
        values = {k: replace_objects(v, replace) for k, v in obj.items()}
        if all(values[k] is v for k, v in obj.items()):
            return obj
        return values
    return obj


def find_refs(obj: Any) -> set[Key]:
    """Return the keys of every :class:`KeyRef` inside ``obj`` (containers walked)."""
    found: set[Key] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, KeyRef):
            found.add(x.key)
        elif type(x) in _CONTAINERS:
            stack.extend(x.values() if type(x) is dict else x)
    return found


def substitute(obj: Any, values: Mapping[Key, Any]) -> Any:
    """Replace every :class:`KeyRef` inside ``obj`` with ``values[ref.key]``."""
    return replace_objects(obj, lambda x: values[x.key] if isinstance(x, KeyRef) else KEEP)
