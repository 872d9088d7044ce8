import pytest

from shoal.comm.registry import (
    get_address_host,
    get_backend,
    parse_address,
    parse_host_port,
    unparse_address,
    unparse_host_port,
)
from shoal.comm.tcp import TCPBackend


def test_parse_address() -> None:
    assert parse_address("tcp://10.0.0.1:8786") == ("tcp", "10.0.0.1:8786")
    assert parse_address("inproc://12/3") == ("inproc", "12/3")
    assert parse_address("inproc://") == ("inproc", "")
    assert parse_address("10.0.0.1:8786") == ("tcp", "10.0.0.1:8786")
    assert unparse_address("tcp", "h:1") == "tcp://h:1"
    with pytest.raises(ValueError, match="empty scheme"):
        parse_address("://x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:8786", ("10.0.0.1", 8786)),
        ("localhost:0", ("localhost", 0)),
        (":8786", ("", 8786)),
        ("[::1]:8786", ("::1", 8786)),
        ("[::1]", ("::1", 99)),
        ("::1", ("::1", 99)),
        ("host", ("host", 99)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, default_port=99) == expected


@pytest.mark.parametrize("text", ["host", "h:port", "h:70000", "[::1", "[::1]x"])
def test_parse_host_port_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"port|address"):
        parse_host_port(text)


def test_unparse_host_port() -> None:
    assert unparse_host_port("::1", 5) == "[::1]:5"
    assert unparse_host_port("h", 5) == "h:5"
    assert unparse_host_port("h") == "h"


def test_get_address_host() -> None:
    assert get_address_host("tcp://10.0.0.1:8786") == "10.0.0.1"
    assert get_address_host("tcp://[::1]:8786") == "::1"
    assert get_address_host("inproc://123/4") == "123"


def test_backends() -> None:
    assert isinstance(get_backend("tcp"), TCPBackend)
    with pytest.raises(ValueError, match=r"unknown address scheme 'udp'.*inproc://.*tcp://"):
        get_backend("udp")
