"""The keys of the tasks ``submit`` and ``map`` create.

A pure call's key is ``<function name>-<token>``, the token hashing the function and
its arguments, so the same call gives the same key (and runs once); an impure call
gets a random token. A key the user gives must be a dask key (a string, a number, or
a tuple of those) that a message can carry (:func:`check_keys`): anything else is
refused here, before it reaches the scheduler.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from dask.base import tokenize
from dask.core import validate_key
from dask.utils import funcname

from shoal._types import Key
from shoal.protocol.runspec import PLAIN_TYPES
from shoal.protocol.wire import first_unencodable

__all__ = ["SCALARS", "check_keys", "check_options", "map_keys", "submit_key"]


def check_keys(keys: Sequence[Any]) -> None:
    """Raise ``TypeError`` for the first of ``keys`` that no message can carry (an int
    over 64 bits, a str with a lone surrogate, an object of another type).

    The scheduler could not tell a worker to compute it, nor a client that it finished:
    sent anyway, its task would never end.
    """
    bad = first_unencodable(keys)
    if bad is not None:
        i, why = bad
        raise TypeError(
            f"task key {keys[i]!r} can't be sent to the scheduler ({why}): a key is a str, "
            "an int of at most 64 bits, a float, or a tuple of those"
        )


def check_options(
    priorities: Sequence[Any],
    retries: Sequence[Any],
    workers: Sequence[Any],
    resources: Sequence[Any],
) -> None:
    """Raise ``TypeError`` for the first task option given (each argument lists the
    values given for it) that no message can carry: its task would never start."""
    checks: tuple[tuple[str, Sequence[Any], Sequence[Any]], ...] = (  # (name, given, sent)
        ("priority", priorities, [-p for p in priorities]),  # the scheduler's order
        ("retries", retries, retries),
        ("workers", workers, [w if w is None or isinstance(w, str) else tuple(w) for w in workers]),
        ("resources", resources, resources),
    )
    if first_unencodable([sent for _, _, sent in checks]) is None:
        return  # one msgpack call for them all: the common case, once per submit or graph
    for name, given, sent in checks:
        bad = first_unencodable(sent)
        if bad is not None:
            raise TypeError(f"{name}={given[bad[0]]!r} can't be sent to the scheduler ({bad[1]})")


def _checked(key: Key) -> Key:
    try:
        validate_key(key)
    except TypeError:
        raise TypeError(
            f"invalid task key {key!r} ({type(key).__name__}): a key is a str, an int, "
            "a float or a tuple of those"
        ) from None
    check_keys((key,))
    return key


def submit_key(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: Key | None,
    pure: bool,
) -> Key:
    """The key of ``submit(func, *args, **kwargs)``: ``key`` itself when given."""
    if key is not None:
        return _checked(key)
    token = tokenize(func, args, kwargs) if pure else uuid.uuid4().hex
    return f"{funcname(func)}-{token}"


def map_keys(
    func: Callable[..., Any],
    rows: list[tuple[Any, ...]],
    kwargs: dict[str, Any],
    key: str | Sequence[Key] | None,
    pure: bool,
) -> list[Key]:
    """The keys of ``map(func, ...)`` over ``rows``: ``key`` is a list of keys (one per
    row) or the prefix to use instead of the function's name."""
    if isinstance(key, (list, tuple)):
        if len(key) != len(rows):
            raise ValueError(f"map got {len(key)} keys for {len(rows)} items")
        return [_checked(k) for k in key]
    prefix = key if isinstance(key, str) else funcname(func)
    if not pure:
        # one random 128-bit number per call, counted up per item: as unique as a uuid4
        # each (two calls' ranges overlap with odds of n / 2**128) and 8x faster
        start = secrets.randbits(128)
        return [f"{prefix}-{(start + i) & _MASK_128:032x}" for i in range(len(rows))]
    base = tokenize(func, kwargs)  # tokenizing a function pickles it: once, not per item
    return [f"{prefix}-{_item_token(base, row)}" for row in rows]


def _item_token(base: str, row: tuple[Any, ...]) -> str:
    """The token of one ``map`` item: dask's ``tokenize``, or for a row of plain numbers
    and strings (exact types: a subclass may print alike) a hash of its repr, 6x faster."""
    if all(type(x) in SCALARS and (type(x) not in _SIZED or len(x) <= 256) for x in row):
        return hashlib.md5(f"{base}{row!r}".encode(), usedforsecurity=False).hexdigest()
    return tokenize(base, row)


_MASK_128 = (1 << 128) - 1

#: plain values, which can't hold a future either (exact types: a subclass could)
SCALARS = PLAIN_TYPES
_SIZED = (str, bytes)
