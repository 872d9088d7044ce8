"""``shoal worker ADDRESS``: start a worker (options named as in ``dask worker``)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys

import click

from shoal.cli.main import run_until_signal, setup_logging


def parse_resources(text: str | None) -> dict[str, float]:
    """Parse ``"GPU=2 MEM=10e9"`` (comma- or space-separated ``NAME=NUMBER`` pairs).

    The syntax of ``dask worker --resources``. Raises ``ValueError`` naming the first
    malformed item.
    """
    out: dict[str, float] = {}
    for item in (text or "").replace(",", " ").split():
        name, eq, value = item.partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = math.nan
        if not name or not eq or math.isnan(amount) or amount < 0:
            raise ValueError(f"{item!r}: expected NAME=NUMBER (a number >= 0), e.g. GPU=2")
        out[name] = amount
    return out


def _resources_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, float]:
    try:
        return parse_resources(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None


@click.command()
@click.argument("scheduler_address", required=True)
@click.option("--host", default=None, help="IP or hostname to listen on")
@click.option("--worker-port", default=0, type=int, help="port to serve on (0: random)")
@click.option("--nthreads", default=None, type=int, help="threads for running tasks")
@click.option("--name", default=None, help="a unique name for this worker")
@click.option(
    "--memory-limit",
    default="auto",
    show_default=True,
    help="bytes (e.g. 4GB), a fraction of this machine's memory, 'auto' or 0",
)
@click.option(
    "--nanny/--no-nanny",
    default=False,
    help="supervise the worker in a nanny process (not available yet)",
)
@click.option(
    "--resources",
    default=None,
    callback=_resources_option,
    help='abstract resources tasks may ask for, e.g. "GPU=2 MEM=10e9" or "GPU=2,MEM=10e9"',
)
@click.option(
    "--exit-with-parent",
    is_flag=True,
    hidden=True,
    help="exit when standard input closes (used by LocalCluster)",
)
@click.option("--log-level", default="INFO", show_default=True)
def worker(
    scheduler_address: str,
    host: str | None,
    worker_port: int,
    nthreads: int | None,
    name: str | None,
    memory_limit: str,
    nanny: bool,
    resources: dict[str, float],
    exit_with_parent: bool,
    log_level: str,
) -> None:
    """Start a worker that joins the scheduler at SCHEDULER_ADDRESS."""
    from shoal.worker.server import Worker

    if nanny:
        raise click.UsageError(
            "the nanny is not available yet in shoal; run with --no-nanny "
            "(the worker then runs in this process)"
        )
    if "://" not in scheduler_address:
        scheduler_address = f"tcp://{scheduler_address}"
    setup_logging(log_level)
    log = logging.getLogger("shoal.worker")

    async def start() -> Worker:
        w = await Worker(
            scheduler_address,
            nthreads=nthreads or os.cpu_count() or 1,
            name=name,
            memory_limit=memory_limit,
            host=host,
            port=worker_port,
            resources=resources,
        )
        log.info("Worker at: %s", w.address)
        if exit_with_parent:
            _close_when_stdin_closes(w)
        return w

    async def stop(w: Worker) -> None:
        await w.close()

    run_until_signal(start, stop)


_closing: set[asyncio.Future[None]] = set()


def _close_when_stdin_closes(w: object) -> None:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            _closing.add(asyncio.ensure_future(w.close(reason="parent process exited")))  # type: ignore[attr-defined]

    loop.add_reader(fd, on_readable)
