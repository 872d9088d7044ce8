"""The first exchange on every connection, as pure functions and a generator flow.

Both ends send a hello at once, then read the other's::

    {"op": "hello", "protocol": 1, "role": "worker", "versions": {...}}

A hello travels as a message of one msgpack frame (it is not a :class:`Message`: it
precedes any agreement on the vocabulary).  :func:`handshake_flow` is the whole
exchange as a generator in the style of httpx's ``auth_flow``: it yields the frame to
send and receives the peer's frame, until it returns the peer's validated hello.  The
I/O layer (``shoal.comm.connection``) only drives it, so a later step can be added here
without touching any transport.

Authentication seam: a cluster secret will add a second round to the flow (each side
sends a random nonce in its hello, then answers ``HMAC(secret, peer_nonce || role)``
and checks the peer's answer with ``hmac.compare_digest``, raising
``AuthenticationFailed``); the secret itself never crosses the wire.  Until that is
implemented, connections are *not* authenticated: nothing here pretends otherwise.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import msgpack

from shoal.errors import HandshakeError, VersionMismatch
from shoal.protocol.opaque import Frame

__all__ = [
    "PROTOCOL_VERSION",
    "HandshakeFlow",
    "check_hello",
    "decode_hello",
    "encode_hello",
    "handshake_flow",
    "make_hello",
]

#: Bumped on any incompatible change of the wire format or the handshake.
PROTOCOL_VERSION = 1

#: Yields frames to send, is sent the peer's frames, returns the peer's hello.
HandshakeFlow = Generator[bytes, Frame, dict[str, Any]]


def make_hello(role: str, versions: dict[str, Any]) -> dict[str, Any]:
    """The hello this process sends: protocol version, its role and its versions."""
    return {"op": "hello", "protocol": PROTOCOL_VERSION, "role": role, "versions": versions}


def check_hello(obj: Any) -> dict[str, Any]:
    """Validate a peer's hello and return it.

    Raise :class:`HandshakeError` when it is not a hello, :class:`VersionMismatch`
    when it speaks another protocol version.  Unknown extra fields are ignored so that
    later versions may add some.
    """
    if not isinstance(obj, dict):
        raise HandshakeError(f"expected a hello map, got {type(obj).__name__}")
    if obj.get("op") != "hello":
        raise HandshakeError(f"expected a hello, got op {obj.get('op')!r}")
    protocol = obj.get("protocol")
    if not isinstance(protocol, int) or isinstance(protocol, bool):
        raise HandshakeError(f"invalid hello: protocol must be an integer, got {protocol!r}")
    if protocol != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"the peer speaks shoal protocol version {protocol}, this process speaks "
            f"version {PROTOCOL_VERSION}; install the same shoal version everywhere"
        )
    if not isinstance(obj.get("role"), str):
        raise HandshakeError(f"invalid hello: role must be a string, got {obj.get('role')!r}")
    if not isinstance(obj.get("versions"), dict):
        raise HandshakeError("invalid hello: versions must be a map")
    return obj


def encode_hello(hello: dict[str, Any]) -> bytes:
    """The single frame carrying ``hello``."""
    return msgpack.packb(hello, use_bin_type=True)  # type: ignore[no-any-return]


def decode_hello(frame: Frame) -> dict[str, Any]:
    """Parse and validate a peer's hello frame; :class:`HandshakeError` if malformed."""
    try:
        obj = msgpack.unpackb(frame, raw=False, use_list=False, strict_map_key=False)
    except Exception as e:
        raise HandshakeError(
            f"the peer did not send a valid hello ({type(e).__name__}: {e}); is it a shoal process?"
        ) from e
    return check_hello(obj)


def handshake_flow(role: str, versions: dict[str, Any]) -> HandshakeFlow:
    """The handshake as a generator: yields frames to send, returns the peer's hello.

    Drive it with ``frame = next(flow)``, send ``frame``, read the peer's frame and
    ``flow.send(peer_frame)`` until it raises ``StopIteration`` whose ``value`` is
    the peer's hello.
    """
    peer_frame = yield encode_hello(make_hello(role, versions))
    return decode_hello(peer_frame)
