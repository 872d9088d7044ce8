"""Values of the coordination primitives ⇄ ``Opaque`` bytes, with Futures as keys.

A value put into a Variable or a Queue, or published as a dataset, is pickled here
(on the client or in the task that stores it) and unpickled where it is read; the
scheduler keeps the bytes without opening them. A Future can't be pickled on its own
(``Future.__reduce__`` refuses: it would outlive its client), but inside
:func:`encode` it can: it pickles as its key, and the key is reported to the
scheduler, which keeps it alive while the primitive holds the value. :func:`decode`
turns each key back into a Future of the reading client, which then wants the key
like any future it made.

How: a reducer for ``Future`` in ``copyreg.dispatch_table`` (which pickle and
cloudpickle consult before an object's ``__reduce__``). Outside :func:`encode` it
defers to ``Future.__reduce__``, so pickling a Future anywhere else fails as before.
The reducer finds :func:`encode`'s capture through a ``ContextVar`` (pickling happens
synchronously on the encoding thread).
"""

from __future__ import annotations

import contextvars
import copyreg
from typing import TYPE_CHECKING, Any

from shoal._types import Key
from shoal.client.futures import Future
from shoal.errors import SerializeError
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import dumps, loads

if TYPE_CHECKING:
    from shoal.client.client import Client

__all__ = ["decode", "encode"]


class _Capture:
    """What :func:`encode` collects while pickling: the keys of the futures found, and
    why a future could not be stored (if so)."""

    __slots__ = ("client", "keys", "problem", "what")

    def __init__(self, client: Client, what: str) -> None:
        self.client = client
        self.what = what
        self.keys: dict[Key, None] = {}
        self.problem: str | None = None


#: while encoding: the keys found so far and the client the futures must belong to
_capture: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar(
    "shoal_capture", default=None
)
#: while decoding: the client the rebuilt futures belong to
_reader: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "shoal_reader", default=None
)


def _rebuild_future(key: Key) -> Future:
    """Unpickle a Future stored by key: a Future of the reading client."""
    client = _reader.get()
    if client is None:
        raise RuntimeError(
            "a Future stored in a shoal Variable, Queue or dataset can only be read back "
            "through them (e.g. Variable.get()), not unpickled directly"
        )
    return Future(key, client, inform=True)


def _reduce_future(future: Future) -> Any:
    capture = _capture.get()
    if capture is None:
        return Future.__reduce__(future)  # refuses, with its explanation
    client, what = capture.client, capture.what
    if future.client.scheduler_address != client.scheduler_address:
        capture.problem = (
            f"{future!r} belongs to a client of scheduler {future.client.scheduler_address}, "
            f"but this {what} lives on {client.scheduler_address}"
        )
    elif future.status == "cancelled":
        capture.problem = f"{future!r} is cancelled: it can't be stored in a {what}"
    if capture.problem is not None:
        raise ValueError(capture.problem)
    capture.keys[future.key] = None
    return _rebuild_future, (future.key,)


copyreg.pickle(Future, _reduce_future)


def encode(
    client: Client, value: Any, what: str, futures: bool = True
) -> tuple[Opaque, tuple[Key, ...]]:
    """Pickle ``value`` for a ``what`` (``"Variable"``...); return the bytes and the keys
    of the Futures inside it (refused unless ``futures``)."""
    capture = _Capture(client, what)
    token = _capture.set(capture)
    try:
        data = dumps(value)
    except SerializeError:
        if capture.problem is not None:
            raise ValueError(capture.problem) from None
        raise
    finally:
        _capture.reset(token)
    keys = capture.keys
    if keys and not futures:
        raise TypeError(
            f"a {what} carries plain values, not Futures: put futures into a Queue or a "
            "Variable, or send their results"
        )
    return data, tuple(keys)


def decode(client: Client, data: Opaque, keys: tuple[Key, ...] = ()) -> Any:
    """Unpickle a value, its Futures bound to ``client``.

    The scheduler marked ``keys`` as wanted by ``client`` before answering; if the value
    can't be rebuilt here, those not held by a Future of this client are released.
    """
    token = _reader.set(client)
    try:
        return loads(data)
    except BaseException:
        client._release_unheld(keys)
        raise
    finally:
        _reader.reset(token)
