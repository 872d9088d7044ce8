"""Moving data: serve ``get-data`` to peers and clients, fetch dependencies from peers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from shoal._types import Key
from shoal.comm import cross_memory, get_data, shared_memory
from shoal.comm.rpc import ConnectionPool
from shoal.errors import SerializeError
from shoal.protocol.frames import frame_nbytes
from shoal.protocol.messages import DataReply, ErrorReply, Message
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import dumps, loads


def serve_data(
    data: Mapping[Key, Any],
    keys: Sequence[Key],
    address: str,
    shared: Callable[[Key], shared_memory.SharedValue | None] | None = None,
    lend: Lend | None = None,
) -> Message:
    """Answer a ``get-data`` request from the values in ``data``.

    With ``shared`` (the asker maps memory files of this host), a key it gives a memory
    file for is answered with a reference to that file instead of the value's bytes.
    With ``lend`` (the asker copies out of this process's memory), values whose
    buffers total at least ``lend.min_bytes`` are lent: their headers and the spans of
    their buffers go in the reply, under one lease for the whole reply.
    """
    out: dict[Key, Opaque] = {}
    refs = {}
    to_lend: dict[Key, Opaque] = {}
    missing = []
    for key in keys:
        if shared is not None:
            file = shared(key)
            if file is not None:
                refs[key] = file.reference()
                continue
        try:
            value = data[key]
        except KeyError:
            missing.append(key)
            continue
        try:
            opaque = dumps(value)
        except SerializeError as e:
            return ErrorReply(
                f"worker {address} could not serialize the result of task {key!r} to send it: "
                f"{e}. Return a picklable object from the task, or consume the value in a "
                "task on the cluster instead of moving it."
            )
        if lend is not None and sum(frame_nbytes(b) for b in opaque.frames[1:]) >= lend.min_bytes:
            to_lend[key] = opaque
        else:
            out[key] = opaque
    lent: dict[Key, tuple[Any, ...]] = {}
    lease: tuple[Any, ...] = ()
    if to_lend:
        assert lend is not None
        buffers = [b for opaque in to_lend.values() for b in opaque.frames[1:]]
        loan = lend.lender.lend(buffers, lend.nonce, lend.now)
        if loan is None:  # a malformed or reused nonce: the bytes then
            out.update(to_lend)
        else:
            spans, lease = loan
            first = 0
            for key, opaque in to_lend.items():
                end = first + 2 * (len(opaque.frames) - 1)
                lent[key] = (Opaque(opaque.frames[:1]), spans[first:end])
                first = end
    return DataReply(data=out, missing=tuple(missing), shared=refs, lent=lent, lease=lease)


class Lend(NamedTuple):
    """How :func:`serve_data` lends buffers: who records the lease, from what size, under
    which of the asker's nonces, at what time."""

    lender: cross_memory.Lender
    min_bytes: int
    nonce: bytes
    now: float


async def fetch_data(
    pool: ConnectionPool, address: str, keys: Sequence[Key], who: str | None = None
) -> tuple[dict[Key, Any], tuple[Key, ...]]:
    """Get ``keys`` from the server at ``address``: (values received, keys it lacked).

    Raises ``CommError`` when the peer can't be reached, ``RemoteError`` when it refused
    (for instance a value it could not serialize), and ``SerializeError`` when a value
    can't be loaded here.
    """
    opaques, missing = await get_data.request_data(pool, address, keys, who)
    values = {}
    for key, opaque in opaques.items():
        try:
            values[key] = loads(opaque)
        except SerializeError as e:
            raise SerializeError(f"could not load the value of {key!r} from {address}: {e}") from e
    return values, missing
