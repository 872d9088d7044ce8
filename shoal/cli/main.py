"""``shoal``: the command group (``shoal scheduler``, ``shoal worker``, ``shoal info``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import click

from shoal import __version__
from shoal._loop import run as run_loop


def setup_logging(level: str = "INFO") -> None:
    """Log shoal's messages to stderr with timestamps."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
    )


def security_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``shoal scheduler`` and ``shoal worker`` share for TLS and the secret."""
    path = click.Path(dir_okay=False)
    options = [
        click.option("--tls-ca-file", default=None, type=path, help="CA file (PEM) for tls://"),
        click.option("--tls-cert", default=None, type=path, help="certificate (PEM) for tls://"),
        click.option("--tls-key", default=None, type=path, help="private key (PEM) for tls://"),
        click.option(
            "--auth-token-file",
            default=None,
            type=path,
            help="file holding the cluster's shared secret (or set SHOAL_AUTH_TOKEN); every "
            "process of the cluster must present it",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run_until_signal(
    start: Callable[[], Awaitable[Any]], stop: Callable[[Any], Awaitable[None]]
) -> None:
    """Run a server until SIGINT/SIGTERM (or until it finishes), then stop it cleanly."""

    async def main() -> None:
        server = await start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        finished = asyncio.ensure_future(server.finished())
        waiter = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([finished, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if stopping.is_set():
            logging.getLogger("shoal").info("Received signal, shutting down")
        await stop(server)
        finished.cancel()

    run_loop(main())


@click.group()
@click.version_option(__version__, prog_name="shoal")
def cli() -> None:
    """shoal: a distributed task engine for Python."""


def main() -> None:
    """Entry point of the ``shoal`` console script."""
    from shoal.cli import info, scheduler, worker

    cli.add_command(scheduler.scheduler)
    cli.add_command(worker.worker)
    cli.add_command(info.info)
    cli()


if __name__ == "__main__":
    main()
