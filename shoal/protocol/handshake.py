"""The first exchange on every connection, as pure functions and a generator flow.

Both ends send a hello at once, then read the other's::

    {"op": "hello", "protocol": 1, "role": "worker", "versions": {...}}

A hello travels as a message of one msgpack frame (it is not a :class:`Message`: it
precedes any agreement on the vocabulary).  :func:`handshake_flow` is the whole
exchange as a generator in the style of httpx's ``auth_flow``: it yields the frame to
send and receives the peer's frame, until it returns the peer's validated hello.  The
I/O layer (``shoal.comm.connection``) only drives it, so a later step can be added here
without touching any transport.

Authentication: when the cluster has a shared secret, each hello carries a random
nonce and ``"auth": true``, and a second round follows: each side sends
``{"op": "auth", "proof": HMAC-SHA256(secret, tag | verifier_nonce | prover_nonce |
direction | role)}`` and checks the peer's with ``hmac.compare_digest``.  The secret
never crosses the wire; the nonces make every proof fresh, and the direction
(``connect`` or ``accept``) keeps a proof from being reflected back to its author.
Both sides must agree on using a secret: a side without one facing a side with one
fails with :class:`AuthenticationFailed` saying which side lacks it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Generator
from typing import Any

import msgpack

from shoal.errors import AuthenticationFailed, HandshakeError, VersionMismatch
from shoal.protocol.opaque import Frame

__all__ = [
    "NONCE_BYTES",
    "PROTOCOL_VERSION",
    "HandshakeFlow",
    "auth_proof",
    "check_hello",
    "decode_hello",
    "encode_hello",
    "handshake_flow",
    "make_hello",
]

#: Bumped on any incompatible change of the wire format or the handshake (2: ComputeTask
#: carries the expected duration, TaskFinished and KeyInMemory small values; 3: values
#: shared through memory files in get-data; 4: values lent to copy out of a worker's
#: memory, and release-data; 5: compact run specs, msgpack arguments beside the function;
#: compute-task and task-finished as arrays in batches; broadcast to nannies; 6: a
#: compact run spec's str keys as UTF-8, extension 2).
PROTOCOL_VERSION = 6

#: Bytes of randomness in each side's nonce.
NONCE_BYTES = 32
_TAG = b"shoal-auth-v1"

#: Yields frames to send, is sent the peer's frames, returns the peer's hello.
HandshakeFlow = Generator[bytes, Frame, dict[str, Any]]


def make_hello(
    role: str,
    versions: dict[str, Any],
    *,
    auth: bool = False,
    nonce: bytes = b"",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The hello this process sends: protocol version, its role, its versions, and
    whether it authenticates (with its nonce); ``extra`` fields are added as they are."""
    hello: dict[str, Any] = {
        **(extra or {}),
        "op": "hello",
        "protocol": PROTOCOL_VERSION,
        "role": role,
        "versions": versions,
    }
    if auth:
        hello["auth"] = True
        hello["nonce"] = nonce
    return hello


def auth_proof(
    secret: bytes, verifier_nonce: bytes, prover_nonce: bytes, direction: str, role: str
) -> bytes:
    """What a side that knows ``secret`` sends to prove it (see the module doc)."""
    msg = b"|".join([_TAG, verifier_nonce, prover_nonce, direction.encode(), role.encode()])
    return hmac.new(secret, msg, hashlib.sha256).digest()


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


def handshake_flow(
    role: str,
    versions: dict[str, Any],
    *,
    secret: bytes | None = None,
    initiator: bool = True,
    nonce: bytes | None = None,
    extra: dict[str, Any] | None = None,
) -> HandshakeFlow:
    """The handshake as a generator: yields frames to send, returns the peer's hello.

    Drive it with ``frame = next(flow)``, send ``frame``, read the peer's frame and
    ``flow.send(peer_frame)`` until it raises ``StopIteration`` whose ``value`` is
    the peer's hello.  With a ``secret``, a second round proves that both sides know
    it (``initiator``: this side opened the connection); :class:`AuthenticationFailed`
    otherwise.  ``extra`` fields go into this side's hello.
    """
    mine = nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES)
    hello = make_hello(role, versions, auth=secret is not None, nonce=mine, extra=extra)
    peer_frame = yield encode_hello(hello)
    peer = decode_hello(peer_frame)
    peer_auth = peer.get("auth") is True
    if secret is None:
        if peer_auth:
            raise AuthenticationFailed(
                f"the {peer['role']} requires an authentication token and this process has "
                "none: pass the cluster's secret (Security(token=...), the SHOAL_AUTH_TOKEN "
                "environment variable, or --auth-token-file)"
            )
        return peer
    if not peer_auth:
        raise AuthenticationFailed(
            f"this process has an authentication token but the {peer['role']} does not "
            "use one: start every process of the cluster with the same secret"
        )
    theirs = peer.get("nonce")
    if not isinstance(theirs, bytes) or len(theirs) != NONCE_BYTES:
        raise HandshakeError("invalid hello: the nonce must be 32 bytes")
    direction, peer_direction = ("connect", "accept") if initiator else ("accept", "connect")
    proof = auth_proof(secret, theirs, mine, direction, role)
    answer_frame = yield msgpack.packb({"op": "auth", "proof": proof}, use_bin_type=True)
    try:
        answer = msgpack.unpackb(answer_frame, raw=False, use_list=False, strict_map_key=False)
    except Exception as e:
        raise HandshakeError(f"invalid authentication answer ({type(e).__name__}: {e})") from e
    got = answer.get("proof") if isinstance(answer, dict) else None
    expected = auth_proof(secret, mine, theirs, peer_direction, str(peer["role"]))
    if not isinstance(got, bytes) or not hmac.compare_digest(got, expected):
        raise AuthenticationFailed(
            f"the {peer['role']} did not prove it knows this cluster's authentication "
            "token: the two processes were given different secrets"
        )
    return peer
