"""``shoal scheduler``: start a scheduler (options named as in ``dask scheduler``)."""

from __future__ import annotations

import logging

import click

from shoal.cli.addresses import address_options, resolve_cli_addresses
from shoal.cli.main import run_until_signal, security_options, setup_logging
from shoal.errors import CommError


@click.command()
@click.option(
    "--host",
    default=None,
    help="IP or hostname to listen on, and to advertise (default: every interface, "
    "advertising an address of this host that others can reach)",
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="port to serve on  [default: 8786]",
)
@address_options("scheduler")
@click.option(
    "--dashboard-address",
    default=":8787",
    show_default=True,
    help="where the dashboard and HTTP API listen ('host:port' or ':port'; a random port "
    "when this one is taken)",
)
@click.option(
    "--dashboard/--no-dashboard",
    default=True,
    show_default=True,
    help="serve the dashboard pages (--no-dashboard keeps /health, /metrics, /api/v1)",
)
@security_options
@click.option(
    "--allow-run-on-scheduler/--no-allow-run-on-scheduler",
    default=False,
    show_default=True,
    help="let clients run code in this process (client.run_on_scheduler)",
)
@click.option(
    "--journal",
    default=None,
    type=click.Path(dir_okay=False),
    help="journal file: a scheduler started again on it recovers its tasks "
    "(see README: Surviving a scheduler crash)",
)
@click.option("--log-level", default="INFO", show_default=True)
def scheduler(
    host: str | None,
    port: int | None,
    interface: str | None,
    protocol: str | None,
    listen_address: str | None,
    contact_address: str | None,
    dashboard_address: str,
    dashboard: bool,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    auth_token_file: str | None,
    allow_run_on_scheduler: bool,
    journal: str | None,
    log_level: str,
) -> None:
    """Start a scheduler and print the address it listens on."""
    from shoal import run_on_scheduler
    from shoal.scheduler.journal import JournalError
    from shoal.scheduler.server import Scheduler
    from shoal.security import Security, read_token_file

    bind, contact = resolve_cli_addresses(
        host=host,
        port=port,
        interface=interface,
        protocol=protocol,
        listen_address=listen_address,
        contact_address=contact_address,
        default_port=8786,
        port_option="--port",
    )
    setup_logging(log_level)
    log = logging.getLogger("shoal.scheduler")
    try:
        base = Security.from_config()
        security = Security(
            token=read_token_file(auth_token_file) if auth_token_file else base.token,
            tls_ca_file=tls_ca_file or base.tls_ca_file,
            tls_cert=tls_cert or base.tls_cert,
            tls_key=tls_key or base.tls_key,
        )
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--auth-token-file") from None
    from shoal.dashboard.server import parse_dashboard_address

    try:
        parse_dashboard_address(dashboard_address)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--dashboard-address") from None

    async def start() -> Scheduler:
        try:
            s = await Scheduler(
                host=bind.host,
                port=bind.port,
                protocol=bind.protocol,
                contact_address=contact,
                security=security,
                journal=journal,
                dashboard_address=dashboard_address,
                dashboard=dashboard,
            )
        except (CommError, OSError, JournalError) as e:  # can't listen, or a wrong --journal
            raise click.ClickException(str(e)) from None
        if allow_run_on_scheduler:
            run_on_scheduler.enable(s)
            log.warning("clients may run code in this scheduler (--allow-run-on-scheduler)")
        if not security.token:
            log.warning(
                "no authentication: anyone who can reach %s may use this cluster "
                "(set SHOAL_AUTH_TOKEN or --auth-token-file)",
                s.address,
            )
        log.info("Scheduler at: %s", s.address)
        if s.address != s.listen_address:
            log.info("Listening on: %s", s.listen_address)
        click.echo(f"Scheduler at: {s.address}", err=True)
        if s.http_server is not None:
            what = "Dashboard at" if dashboard else "HTTP API (no dashboard) at"
            click.echo(f"{what}: {s.http_server.link('/status' if dashboard else '')}", err=True)
        return s

    async def stop(s: Scheduler) -> None:
        await s.close()

    run_until_signal(start, stop)
