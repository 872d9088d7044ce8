"""Asking a worker for values (``get-data``), the fastest way this host allows.

Over the socket by default; from the same host (same kernel boot, pid namespace and
user) a value may instead come as a memory file to map (:mod:`shoal.comm.shared_memory`)
or as buffers lent to copy out of the worker's memory (:mod:`shoal.comm.cross_memory`).
Any failure of either falls back to the bytes, asked for again over the socket; where
the kernel won't let this process open a worker's files or read its memory (ptrace
rules), that worker is not offered that way again for :data:`REFUSED_FOR` seconds; a
kernel without ``process_vm_readv`` for this process (``ENOSYS``) ends copying for good.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Sequence
from typing import Any

from shoal._types import Key
from shoal.comm import cross_memory, shared_memory
from shoal.comm.rpc import ConnectionPool
from shoal.comm.same_host import process_identity
from shoal.errors import RemoteProtocolError
from shoal.protocol.frames import DEFAULT_LIMITS
from shoal.protocol.messages import OK, DataReply, GetData, ReleaseData
from shoal.protocol.opaque import Opaque

__all__ = ["REFUSED_FOR", "releases_sent", "request_data"]

logger = logging.getLogger("shoal.comm.get_data")

#: Seconds a worker whose files or memory the kernel won't let this process reach
#: (another user, ``hidepid``, Yama's ``ptrace_scope``) is not asked that way again.
REFUSED_FOR = 60.0
#: (worker address, "map" or "copy") -> until when that way is not offered to it
_refused: dict[tuple[str, str], float] = {}


def _allowed(address: str, way: str) -> bool:
    return _refused.get((address, way), 0.0) <= time.monotonic()


def _refuse(address: str, way: str) -> None:
    now = time.monotonic()
    for stale in [k for k, until in _refused.items() if until <= now]:
        del _refused[stale]
    _refused[address, way] = now + REFUSED_FOR


async def request_data(
    pool: ConnectionPool, address: str, keys: Sequence[Key], who: str | None = None
) -> tuple[dict[Key, Opaque], tuple[Key, ...]]:
    """Ask the server at ``address`` for ``keys``: the serialized values it sent, and
    the keys it lacked.

    Values the server shares through memory files are mapped, values it lends are
    copied out of its memory; what fails either way is asked for again as bytes.
    Raises what ``pool.request`` raises.
    """
    same_host = process_identity()
    copy = same_host is not None and cross_memory.enabled() and _allowed(address, "copy")
    nonce = cross_memory.new_nonce() if copy else None
    msg = GetData(
        keys=tuple(keys),
        who=who,
        same_host=same_host,
        # whoever can map files offers to: the setting decides whether workers write them
        map_files=same_host is not None and _allowed(address, "map"),
        cross_memory=nonce,
    )
    asked = time.monotonic()
    reply = await _request(pool, address, msg)
    wanted = set(msg.keys)  # a reply has no say over which keys this process gets
    opaques = {k: v for k, v in reply.data.items() if k in wanted}
    missing = list(reply.missing)
    again = []
    for key, ref in reply.shared.items():
        if key not in wanted:
            continue
        try:
            opaques[key] = shared_memory.attach(ref)
        except OSError as e:
            logger.debug("could not map %r from %s (%s); asking for its bytes", key, address, e)
            again.append(key)
            if isinstance(e, PermissionError):  # /proc won't show us its descriptors
                _refuse(address, "map")
    if reply.lent:
        lent = {k: v for k, v in reply.lent.items() if k in wanted}
        copied = await _borrow(pool, address, reply.lease, lent, nonce, asked) if nonce else None
        if copied is None:
            again += lent
        else:
            opaques.update(copied)
    if again:
        retry = await _request(pool, address, GetData(keys=tuple(again), who=who))
        opaques.update((k, v) for k, v in retry.data.items() if k in wanted)
        missing += retry.missing
    return opaques, tuple(missing)


async def _borrow(
    pool: ConnectionPool,
    address: str,
    lease: Any,
    lent: dict[Key, Any],
    nonce: bytes,
    asked: float,
) -> dict[Key, Opaque] | None:
    """Copy what a worker lent (asked for at ``asked``, ``time.monotonic()``), then
    release the lease; None if the copy failed or the lease had ended before the
    release (the copy can't be trusted then).

    The release goes out whatever happens, this coroutine cancelled included (a
    ``gather`` timing out): the worker then stops pinning the buffers at once. A copy
    over within half the lease's time since the request was sent is used without
    waiting for the worker's answer: the lease began after that and held throughout.
    """
    copied = None
    try:
        limits = pool.limits or DEFAULT_LIMITS
        copied = await cross_memory.read(lease, lent, nonce, limits.max_message_bytes)
    except Exception as e:
        logger.debug("could not copy from %s (%s); asking for the bytes", address, e)
        if getattr(e, "errno", None) == errno.ENOSYS:
            cross_memory.unsupported()  # not in this sandbox: from no worker at all
        elif isinstance(e, PermissionError):
            _refuse(address, "copy")  # the kernel refused: ptrace rules
    finally:
        release = asyncio.ensure_future(_release(pool, address, nonce))
        _releasing.add(release)  # held until done, even if this coroutine is cancelled
        release.add_done_callback(_releasing.discard)
    seconds = cross_memory.lease_seconds(lease)
    if copied is not None and seconds is not None and time.monotonic() - asked < seconds / 2:
        return copied
    held = await asyncio.shield(release)
    return copied if held else None


#: releases in progress (asyncio keeps only weak references to tasks)
_releasing: set[asyncio.Future[bool]] = set()


async def releases_sent(timeout: float = 1.0) -> None:
    """Wait (``timeout`` seconds at most) for the releases still in flight on this event
    loop: a client or worker closing its connections waits for them first, or the workers
    would keep the lent buffers pinned until the leases end."""
    loop = asyncio.get_running_loop()
    pending = [f for f in _releasing if f.get_loop() is loop]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


async def _release(pool: ConnectionPool, address: str, nonce: bytes) -> bool:
    """Release a lease; whether it still held (False too when the worker can't say)."""
    try:
        reply = await pool.request(address, ReleaseData(nonce=nonce))
    except Exception as e:
        logger.debug("could not release a lease on %s: %s", address, e)
        return False
    return isinstance(reply, OK) and reply.value is True


async def _request(pool: ConnectionPool, address: str, msg: GetData) -> DataReply:
    reply = await pool.request(address, msg)
    if not isinstance(reply, DataReply):
        raise RemoteProtocolError(f"expected a 'data' reply from {address}, got {reply.op!r}")
    if not all(isinstance(m, dict) for m in (reply.data, reply.shared, reply.lent)):
        raise RemoteProtocolError(f"malformed 'data' reply from {address}")
    return reply
