"""The address options ``shoal scheduler`` and ``shoal worker`` share (as ``dask``'s).

``--host`` / ``--interface`` / ``--listen-address`` say where to bind (one of them);
``--contact-address`` what to advertise when others must connect through another
address (NAT, a container's published port). See :mod:`shoal.comm.addressing`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from shoal.comm.addressing import BindAddress, check_contact_address, resolve_bind

__all__ = ["NETWORK_PROTOCOLS", "address_options", "resolve_cli_addresses"]

#: the transports a scheduler or worker started from the command line can use
NETWORK_PROTOCOLS = ("tcp", "tls")


def address_options(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--interface``, ``--protocol``, ``--listen-address`` and ``--contact-address``
    for ``role`` (``"scheduler"`` or ``"worker"``); ``--host`` and the ports are the
    commands' own."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option(
                "--interface",
                default=None,
                help="network interface to listen on, e.g. eth0 or ib0 (its IPv4 address); "
                "instead of --host",
            ),
            click.option(
                "--protocol",
                default=None,
                help="transport: tcp or tls (default: tcp"
                + (", or the scheduler address's)" if role == "worker" else ")"),
            ),
            click.option(
                "--listen-address",
                default=None,
                help=f"address the {role} binds to, e.g. tcp://0.0.0.0:9000 (instead of "
                "--host/--interface and the port)",
            ),
            click.option(
                "--contact-address",
                default=None,
                help=f"address the {role} advertises to "
                + (
                    "workers and clients"
                    if role == "scheduler"
                    else "the scheduler, peers and clients"
                )
                + " when it differs from where it binds (NAT, containers), e.g. "
                "tcp://203.0.113.7:9000",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def resolve_cli_addresses(
    *,
    host: str | None,
    port: int | None,
    interface: str | None,
    protocol: str | None,
    listen_address: str | None,
    contact_address: str | None,
    default_port: int,
    port_option: str,
) -> tuple[BindAddress, str | None]:
    """Where to bind and what to advertise, or a :class:`click.UsageError` saying why not.

    Without ``--host``, ``--interface`` or ``--listen-address`` a server binds to every
    interface (``0.0.0.0``) and advertises an address of this host that others can
    reach, as ``dask scheduler`` and ``dask worker`` do.
    """
    try:
        if listen_address and port is not None:
            raise ValueError(
                f"--listen-address {listen_address} includes the port; don't give {port_option} too"
            )
        bind = resolve_bind(
            host,
            port,
            interface=interface,
            listen_address=listen_address,
            protocol=protocol,
            default_host="0.0.0.0",
            default_port=default_port,
        )
        if bind.protocol not in NETWORK_PROTOCOLS:
            raise ValueError(
                f"unknown protocol {bind.protocol!r}: give --protocol tcp or tls (or a "
                "tcp:// or tls:// listen address)"
            )
        contact = check_contact_address(contact_address, bind.protocol) if contact_address else None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    return bind, contact
