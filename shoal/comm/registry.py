"""URL schemes → transport backends, and address helpers."""

from __future__ import annotations

from shoal.comm.base import Backend

__all__ = [
    "get_address_host",
    "get_backend",
    "parse_address",
    "parse_host_port",
    "register_backend",
    "unparse_address",
    "unparse_host_port",
]

_BACKENDS: dict[str, Backend] = {}


def register_backend(scheme: str, backend: Backend) -> None:
    """Make ``scheme://`` addresses use ``backend`` (replacing any previous one)."""
    _BACKENDS[scheme] = backend


def get_backend(scheme: str) -> Backend:
    """The backend for ``scheme``; :class:`ValueError` naming the known ones if none."""
    _load_builtin_backends()
    try:
        return _BACKENDS[scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in sorted(_BACKENDS))
        raise ValueError(f"unknown address scheme {scheme!r}; known schemes: {known}") from None


def _load_builtin_backends() -> None:
    # Imported lazily: the backends import this module to register themselves.
    import shoal.comm.inproc
    import shoal.comm.tcp
    import shoal.comm.tls  # noqa: F401


def parse_address(address: str) -> tuple[str, str]:
    """Split ``"tcp://host:port"`` into ``("tcp", "host:port")``.

    An address without a scheme is taken as ``tcp``.
    """
    if not isinstance(address, str):
        raise TypeError(f"an address must be a string, got {type(address).__name__}")
    scheme, sep, rest = address.partition("://")
    if not sep:
        return "tcp", address
    if not scheme:
        raise ValueError(f"invalid address {address!r}: empty scheme")
    return scheme, rest


def unparse_address(scheme: str, rest: str) -> str:
    """Inverse of :func:`parse_address`."""
    return f"{scheme}://{rest}"


def parse_host_port(hostport: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``"host:port"`` or ``"[v6]:port"`` into ``(host, port)``.

    A missing port takes ``default_port`` (a :class:`ValueError` if that is None too).
    """
    host, port_text = hostport, ""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError(f"invalid address {hostport!r}: unclosed '['")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid address {hostport!r}")
            port_text = rest[1:]
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    elif hostport.count(":") > 1:  # a bare IPv6 address, no port
        host = hostport
    if port_text:
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"invalid port {port_text!r} in address {hostport!r}") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} out of range in address {hostport!r}")
        return host, port
    if default_port is None:
        raise ValueError(f"no port in address {hostport!r}")
    return host, default_port


def unparse_host_port(host: str, port: int | None = None) -> str:
    """Inverse of :func:`parse_host_port` (brackets IPv6 hosts)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def get_address_host(address: str) -> str:
    """The host part of an address: ``"tcp://10.0.0.1:8786"`` → ``"10.0.0.1"``."""
    scheme, rest = parse_address(address)
    if scheme == "inproc":
        return rest.partition("/")[0]
    return parse_host_port(rest, default_port=0)[0]
