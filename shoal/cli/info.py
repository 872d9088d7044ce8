"""``shoal info``: versions of shoal and the packages it relies on."""

from __future__ import annotations

import json

import click


@click.command()
def info() -> None:
    """Print the versions shoal would report in a handshake."""
    from shoal.protocol.versions import collect_versions

    click.echo(json.dumps(collect_versions(), indent=2, default=str))
