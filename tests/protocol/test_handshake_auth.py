"""The authentication round of the handshake: HMAC proofs, never the secret itself."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.comm.connection import connect, listen
from shoal.errors import AuthenticationFailed, HandshakeError
from shoal.protocol.handshake import NONCE_BYTES, auth_proof, handshake_flow

SECRET = b"correct horse battery staple"


def _run(a: Any, b: Any) -> tuple[Any, Any]:
    """Drive two flows against each other; return each one's result or exception."""
    results: list[Any] = [None, None]
    flows = [a, b]
    frames = [next(a), next(b)]
    done = [False, False]
    while not all(done):
        out = list(frames)
        for i in (0, 1):
            if done[i]:
                continue
            try:
                frames[i] = flows[i].send(out[1 - i])
            except StopIteration as stop:
                results[i], done[i] = stop.value, True
            except HandshakeError as e:
                results[i], done[i] = e, True
    return results[0], results[1]


def test_both_sides_with_the_secret_authenticate() -> None:
    a = handshake_flow("client", {}, secret=SECRET, initiator=True)
    b = handshake_flow("scheduler", {}, secret=SECRET, initiator=False)
    ra, rb = _run(a, b)
    assert ra["role"] == "scheduler" and rb["role"] == "client"


def test_the_secret_never_crosses_the_wire() -> None:
    a = handshake_flow("client", {}, secret=SECRET, initiator=True)
    b = handshake_flow("scheduler", {}, secret=SECRET, initiator=False)
    sent = [next(a), next(b)]
    sent += [a.send(sent[1]), b.send(sent[0])]
    assert all(SECRET not in frame for frame in sent)


def test_different_secrets_fail_on_both_sides() -> None:
    a = handshake_flow("client", {}, secret=SECRET, initiator=True)
    b = handshake_flow("scheduler", {}, secret=b"another", initiator=False)
    ra, rb = _run(a, b)
    assert isinstance(ra, AuthenticationFailed) and "different secrets" in str(ra)
    assert isinstance(rb, AuthenticationFailed)


def test_a_side_without_the_secret_is_told_what_to_do() -> None:
    a = handshake_flow("client", {}, initiator=True)
    b = handshake_flow("scheduler", {}, secret=SECRET, initiator=False)
    ra, rb = _run(a, b)
    assert isinstance(ra, AuthenticationFailed)
    assert "requires an authentication token" in str(ra) and "SHOAL_AUTH_TOKEN" in str(ra)
    assert isinstance(rb, AuthenticationFailed)


def test_a_proof_cannot_be_reflected_back_to_its_author() -> None:
    # A proof made while accepting does not pass as one made while connecting, even
    # with the nonces swapped the way a reflecting attacker would swap them.
    n1, n2 = b"1" * NONCE_BYTES, b"2" * NONCE_BYTES
    accepted = auth_proof(SECRET, n1, n2, "accept", "worker")
    assert accepted != auth_proof(SECRET, n1, n2, "connect", "worker")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_answer_is_a_result_or_a_handshake_error(garbage: bytes) -> None:
    flow = handshake_flow("scheduler", {}, secret=SECRET, initiator=False)
    next(flow)
    peer = handshake_flow("client", {}, secret=SECRET, initiator=True)
    flow.send(next(peer))
    with pytest.raises(HandshakeError):
        flow.send(garbage)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.none() | st.binary(max_size=40), max_size=4))
def test_malformed_auth_maps_are_refused(obj: dict[str, Any]) -> None:
    flow = handshake_flow("scheduler", {}, secret=SECRET, initiator=False)
    next(flow)
    peer = handshake_flow("client", {}, secret=SECRET, initiator=True)
    flow.send(next(peer))
    with pytest.raises(HandshakeError):
        flow.send(msgpack.packb(obj, use_bin_type=True))


async def _serve(conn: Any) -> None:
    await conn.write(await conn.read())


async def test_over_tcp_a_peer_without_the_secret_is_refused_before_any_message() -> None:
    handled: list[Any] = []

    async def handler(conn: Any) -> None:
        handled.append(conn)

    listener = await listen("tcp://127.0.0.1:0", handler, role="scheduler", secret=SECRET)
    try:
        addr = listener.contact_address
        with pytest.raises(AuthenticationFailed, match="requires an authentication token"):
            await connect(addr, role="client", timeout=5)
        with pytest.raises(AuthenticationFailed, match="different secrets"):
            await connect(addr, role="client", timeout=5, secret=b"wrong")
        conn = await connect(addr, role="client", timeout=5, secret=SECRET)
        await conn.close()
        await asyncio.sleep(0.05)
        assert len(handled) == 1  # only the authenticated one reached the handler
    finally:
        listener.stop()
