from typing import Any

import msgpack
import pytest

from shoal.errors import HandshakeError, VersionMismatch
from shoal.protocol.handshake import (
    PROTOCOL_VERSION,
    check_hello,
    decode_hello,
    encode_hello,
    handshake_flow,
    make_hello,
)
from shoal.protocol.versions import collect_versions


def test_make_and_check() -> None:
    hello = make_hello("worker", collect_versions())
    assert hello["op"] == "hello"
    assert hello["protocol"] == PROTOCOL_VERSION
    assert check_hello(hello) is hello
    assert decode_hello(encode_hello(hello))["role"] == "worker"


def test_extra_fields_are_ignored() -> None:
    assert check_hello({**make_hello("client", {}), "nonce": b"x"})["role"] == "client"


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [1],
        {"op": "ok"},
        {"op": "hello", "role": "w", "versions": {}},
        {"op": "hello", "protocol": "1", "role": "w", "versions": {}},
        {"op": "hello", "protocol": True, "role": "w", "versions": {}},
        {"op": "hello", "protocol": PROTOCOL_VERSION, "versions": {}},
        {"op": "hello", "protocol": PROTOCOL_VERSION, "role": "w", "versions": []},
    ],
)
def test_malformed(obj: Any) -> None:
    with pytest.raises(HandshakeError) as info:
        check_hello(obj)
    assert not isinstance(info.value, VersionMismatch)


def test_other_protocol_version() -> None:
    with pytest.raises(VersionMismatch, match="version 99"):
        check_hello({**make_hello("w", {}), "protocol": 99})


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"GET / HTTP/1.1\r\n", msgpack.packb([1])])
def test_decode_garbage(frame: bytes) -> None:
    with pytest.raises(HandshakeError):
        decode_hello(frame)


def test_flow() -> None:
    a = handshake_flow("scheduler", {"python": "3"})
    b = handshake_flow("worker", {"python": "3"})
    fa, fb = next(a), next(b)
    with pytest.raises(StopIteration) as sa:
        a.send(fb)
    with pytest.raises(StopIteration) as sb:
        b.send(fa)
    assert sa.value.value["role"] == "worker"
    assert sb.value.value["role"] == "scheduler"
