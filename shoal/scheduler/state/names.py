"""Task names: the prefix (``"inc"``) and the group (``"inc-<token>"`` layer) of a key.

dask keys look like ``"inc-5f3a9c0e..."`` (delayed, submit) or ``("x-5f3a9c0e...", 3)``
(one chunk of a collection layer). The *prefix* is the human part of the name, shared by
every task running the same function: run times are learned per prefix. The *group* is
one layer of one graph: every chunk of ``("x-<token>", i)`` shares the group
``"x-<token>"``; a string key's group is its prefix.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"[a-f0-9]+")


def _is_token(word: str) -> bool:
    # dask tokens are hex digests; 8+ hex characters never read as a word.
    return len(word) >= 8 and _HEX.fullmatch(word) is not None


def _text(key: object) -> str:
    while isinstance(key, tuple) and key:
        key = key[0]
    if isinstance(key, bytes):
        return key.decode(errors="replace")
    return key if isinstance(key, str) else str(key)


def key_prefix(key: object) -> str:
    """The name part of ``key``: ``"inc-ab12cd34ef"`` → ``"inc"``, ``("x-1f2e...", 0)`` → ``"x"``.

    Leading words are kept up to the first token or number; a key that is only a token
    (for example a 32-character hash) is ``"data"``.
    """
    text = _text(key)
    words = text.split("-")
    first = words[0].strip("_'\"()<> ")
    if not first or _is_token(first):
        return "data" if len(words) == 1 or not first else first
    out = [first]
    for word in words[1:]:
        if not word.isalpha() or _is_token(word):
            break
        out.append(word)
    return "-".join(out)


def key_group(key: object) -> str:
    """The layer ``key`` belongs to: a tuple key's name, else the key's prefix."""
    if isinstance(key, tuple) and key:
        return _text(key[0])
    return key_prefix(key)
