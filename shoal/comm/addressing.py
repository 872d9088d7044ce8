"""Where a server binds, and what address it advertises (for many hosts, NAT, containers).

A server (scheduler, worker, nanny) has two addresses:

- the **listen address**, where its socket is bound: ``tcp://0.0.0.0:8786`` (every
  interface), ``tcp://10.0.0.5:8786``, or the IPv4 address of a named interface
  (``interface="eth0"``);
- the **contact address**, which it tells others (the scheduler, peers, clients) to
  connect to. By default it is the listen address, with ``0.0.0.0`` replaced by an IP
  of this host that others can probably reach
  (:func:`shoal.comm.tcp.reachable_ip`). Behind NAT, a port mapping or a container
  runtime, the two differ: bind ``tcp://0.0.0.0:9000``, advertise
  ``tcp://public-host:31000``. ``contact_address`` says so.

The names and the rules follow ``dask scheduler`` / ``dask worker``: ``host`` and
``interface`` exclude each other, and ``listen_address`` excludes both, and a port of
its own.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import psutil

from shoal.comm.registry import parse_address, parse_host_port, unparse_host_port

__all__ = [
    "BindAddress",
    "check_contact_address",
    "interface_ip",
    "non_loopback_ip",
    "resolve_bind",
    "split_listen_address",
]


def interface_ip(name: str, family: int = socket.AF_INET) -> str:
    """The address of network interface ``name`` (IPv4 by default), e.g. ``"eth0"``.

    Raise :class:`ValueError` naming the interfaces this host has when there is no
    such interface, or when it has no address of that family.
    """
    interfaces = psutil.net_if_addrs()
    if name not in interfaces:
        known = ", ".join(sorted(interfaces)) or "none"
        raise ValueError(
            f"no network interface {name!r} on this host; its interfaces are: {known} "
            "(`ip addr` lists them with their addresses)"
        )
    for addr in interfaces[name]:
        if addr.family == family:
            return str(addr.address).split("%", 1)[0]
    kind = "IPv4" if family == socket.AF_INET else "IPv6"
    raise ValueError(
        f"network interface {name!r} has no {kind} address; give --host with an address "
        "instead, or bring the interface up with an address"
    )


def non_loopback_ip(family: int = socket.AF_INET) -> str | None:
    """The first address of ``family`` on an interface that is up and not loopback.

    For hosts with no default route (a container or a network namespace on a private
    bridge), where asking the OS for the route to a public address fails.
    """
    stats = psutil.net_if_stats()
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        st = stats.get(name)
        if st is None or not st.isup:
            continue
        for addr in addrs:
            if addr.family != family:
                continue
            ip = str(addr.address).split("%", 1)[0]
            if ip.startswith("127.") or ip == "::1" or ip.startswith("fe80:"):
                continue
            return ip
    return None


@dataclass(frozen=True)
class BindAddress:
    """A listen address taken apart: scheme, host (``""`` for every interface), port."""

    protocol: str
    host: str
    port: int


def split_listen_address(address: str, protocol: str | None = None) -> BindAddress:
    """``"tcp://0.0.0.0:9000"`` (or ``"tcp://:9000"``, ``"10.0.0.5:9000"``) taken apart.

    A scheme that disagrees with ``protocol`` (when one is given) is a
    :class:`ValueError`; so is an address without a port.
    """
    scheme = protocol.removesuffix("://") if protocol else None
    if "://" in address:
        given, rest = parse_address(address)
        if scheme and given != scheme:
            raise ValueError(
                f"listen address {address!r} is {given}:// but the protocol is {scheme}://; "
                "give one or the other"
            )
        scheme = given
    else:
        rest = address
    if scheme == "inproc":
        raise ValueError("an inproc:// server has no network address to listen on")
    try:
        host, port = parse_host_port(rest)
    except ValueError as e:
        raise ValueError(
            f"invalid listen address {address!r}: {e} (expected e.g. tcp://0.0.0.0:9000)"
        ) from None
    return BindAddress(scheme or "tcp", host, port)


def resolve_bind(
    host: str | None,
    port: int | None,
    *,
    interface: str | None = None,
    listen_address: str | None = None,
    protocol: str | None = None,
    default_host: str = "127.0.0.1",
    default_port: int = 0,
) -> BindAddress:
    """Where a server binds, from the options a user gave (``dask scheduler``'s rules).

    ``listen_address`` is used alone (with ``host``, ``interface`` or ``port`` too it is
    a :class:`ValueError`); otherwise ``interface`` gives the host (the interface's
    IPv4 address; with ``host`` too it is a :class:`ValueError`), else ``host``, else
    ``default_host``. ``port`` None means ``default_port``.
    """
    if listen_address:
        given = [
            name
            for name, value in (("host", host), ("interface", interface), ("port", port))
            if value
        ]
        if given:
            raise ValueError(
                f"listen address {listen_address!r} says where to bind; don't give "
                f"{' or '.join(given)} too"
            )
        return split_listen_address(listen_address, protocol)
    if interface and host:
        raise ValueError(
            f"give either a host ({host!r}) or an interface ({interface!r}) to listen on, not both"
        )
    scheme = (protocol or "tcp").removesuffix("://")
    if interface:
        host = interface_ip(interface)
    return BindAddress(scheme, host or default_host, default_port if port is None else port)


def check_contact_address(contact_address: str, protocol: str) -> str:
    """``contact_address`` as a full URL (``tcp://`` added when it has no scheme).

    It must name a host and a port others can connect to (not port 0, not
    ``0.0.0.0``), and use the server's ``protocol``; otherwise :class:`ValueError`
    says what to give instead.
    """
    scheme = protocol.removesuffix("://")
    if scheme == "inproc":
        raise ValueError("an inproc:// server can't advertise a network contact address")
    if "://" in contact_address:
        given, rest = parse_address(contact_address)
        if given != scheme:
            raise ValueError(
                f"contact address {contact_address!r} is {given}:// but this server "
                f"listens on {scheme}://; others must connect with the same protocol"
            )
    else:
        rest = contact_address
    try:
        host, port = parse_host_port(rest)
    except ValueError as e:
        raise ValueError(
            f"invalid contact address {contact_address!r}: {e} (expected e.g. "
            f"{scheme}://203.0.113.7:9000)"
        ) from None
    if not host or host in ("0.0.0.0", "::") or port == 0:
        raise ValueError(
            f"contact address {contact_address!r} must name the host and the port that "
            f"others connect to (e.g. {scheme}://203.0.113.7:9000), not a wildcard or port 0"
        )
    return f"{scheme}://{unparse_host_port(host, port)}"
