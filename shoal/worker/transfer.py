"""Moving data: serve ``get-data`` to peers and clients, fetch dependencies from peers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shoal._types import Key
from shoal.comm.rpc import ConnectionPool
from shoal.errors import RemoteProtocolError, SerializeError
from shoal.protocol.messages import DataReply, ErrorReply, GetData, Message
from shoal.protocol.serialize import dumps, loads


def serve_data(data: Mapping[Key, Any], keys: Sequence[Key], address: str) -> Message:
    """Answer a ``get-data`` request from the values in ``data``."""
    out = {}
    missing = []
    for key in keys:
        try:
            value = data[key]
        except KeyError:
            missing.append(key)
            continue
        try:
            out[key] = dumps(value)
        except SerializeError as e:
            return ErrorReply(
                f"worker {address} could not serialize the result of task {key!r} to send it: "
                f"{e}. Return a picklable object from the task, or consume the value in a "
                "task on the cluster instead of moving it."
            )
    return DataReply(data=out, missing=tuple(missing))


async def fetch_data(
    pool: ConnectionPool, address: str, keys: Sequence[Key], who: str | None = None
) -> tuple[dict[Key, Any], tuple[Key, ...]]:
    """Get ``keys`` from the server at ``address``: (values received, keys it lacked).

    Raises ``CommError`` when the peer can't be reached, ``RemoteError`` when it refused
    (for instance a value it could not serialize), and ``SerializeError`` when a value
    can't be loaded here.
    """
    reply = await pool.request(address, GetData(keys=tuple(keys), who=who))
    if not isinstance(reply, DataReply):
        raise RemoteProtocolError(f"expected a 'data' reply from {address}, got {reply.op!r}")
    values = {}
    for key, opaque in reply.data.items():
        try:
            values[key] = loads(opaque)
        except SerializeError as e:
            raise SerializeError(f"could not load the value of {key!r} from {address}: {e}") from e
    return values, tuple(reply.missing)
