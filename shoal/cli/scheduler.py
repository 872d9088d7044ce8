"""``shoal scheduler``: start a scheduler (options named as in ``dask scheduler``)."""

from __future__ import annotations

import logging

import click

from shoal.cli.main import run_until_signal, setup_logging


@click.command()
@click.option("--host", default=None, help="IP or hostname to listen on (default: all)")
@click.option("--port", default=8786, type=int, show_default=True, help="port to serve on")
@click.option("--protocol", default="tcp", show_default=True, help="transport: tcp")
@click.option(
    "--dashboard-address",
    default=None,
    help="accepted for compatibility; shoal has no dashboard yet",
)
@click.option("--log-level", default="INFO", show_default=True)
def scheduler(
    host: str | None, port: int, protocol: str, dashboard_address: str | None, log_level: str
) -> None:
    """Start a scheduler and print the address it listens on."""
    from shoal.scheduler.server import Scheduler

    setup_logging(log_level)
    log = logging.getLogger("shoal.scheduler")

    async def start() -> Scheduler:
        s = await Scheduler(host=host or "0.0.0.0", port=port, protocol=protocol)
        log.info("Scheduler at: %s", s.address)
        click.echo(f"Scheduler at: {s.address}", err=True)
        return s

    async def stop(s: Scheduler) -> None:
        await s.close()

    run_until_signal(start, stop)
