"""``shoal worker ADDRESS``: start a worker (options named as in ``dask worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
from typing import Protocol

import click

from shoal import config
from shoal.cli.addresses import NETWORK_PROTOCOLS, address_options, resolve_cli_addresses
from shoal.cli.main import run_until_signal, security_options, setup_logging
from shoal.comm.addressing import BindAddress
from shoal.errors import CommError
from shoal.security import Security, read_token_file


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


def _memory_limit_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from shoal.worker.memory import parse_memory_limit

    try:
        parse_memory_limit(value, 1)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    return value


@click.command()
@click.argument("scheduler_address", required=True)
@click.option(
    "--host",
    default=None,
    help="IP or hostname to listen on, and to advertise; it must be reachable from the "
    "scheduler, the other workers and clients (default: every interface, advertising an "
    "address of this host that others can reach)",
)
@click.option(
    "--worker-port",
    "--port",
    "worker_port",
    default=None,
    type=click.IntRange(0, 65535),
    help="port for the worker (default: a random free one)",
)
@click.option(
    "--nanny-port", default=0, type=click.IntRange(0, 65535), help="port for the nanny (0: random)"
)
@address_options("worker")
@click.option(
    "--nanny-contact-address",
    default=None,
    help="address the nanny advertises to the scheduler, when it differs from where it "
    "binds (NAT, containers)",
)
@click.option(
    "--nthreads",
    default=None,
    type=click.IntRange(min=0),
    help="threads for running tasks (default, or 0: one per core)",
)
@click.option("--name", default=None, help="a unique name for this worker")
@click.option(
    "--memory-limit",
    default="auto",
    show_default=True,
    callback=_memory_limit_option,
    help="bytes (e.g. 4GB), a fraction of this machine's memory, 'auto' or 0; with a "
    "nanny, the worker is restarted above worker.memory.terminate (0.95) of it",
)
@click.option(
    "--nanny/--no-nanny",
    default=True,
    show_default=True,
    help="run the worker in a child process supervised by a nanny, which restarts it "
    "when it dies or exceeds its memory limit; --no-nanny runs it in this process",
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
    help="exit when standard input closes (used by LocalCluster and the nanny)",
)
@click.option(
    "--ready-fd",
    default=None,
    type=int,
    hidden=True,
    help="write the worker's address on this file descriptor once it is up (the nanny's)",
)
@click.option(
    "--local-directory",
    default=None,
    type=click.Path(file_okay=False),
    help="where the worker spills results to disk (default: a new temporary directory)",
)
@security_options
@click.option("--log-level", default="INFO", show_default=True)
def worker(
    scheduler_address: str,
    host: str | None,
    worker_port: int | None,
    nanny_port: int,
    interface: str | None,
    protocol: str | None,
    listen_address: str | None,
    contact_address: str | None,
    nanny_contact_address: str | None,
    nthreads: int | None,
    name: str | None,
    memory_limit: str,
    nanny: bool,
    resources: dict[str, float],
    exit_with_parent: bool,
    ready_fd: int | None,
    local_directory: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    auth_token_file: str | None,
    log_level: str,
) -> None:
    """Start a worker that joins the scheduler at SCHEDULER_ADDRESS.

    By default the worker runs under a nanny (as with ``dask worker``): this process
    starts the worker as a child, starts it again when it dies, and restarts it when
    it uses more than 95% of --memory-limit. It exits (code 0) when the worker closes on
    purpose (retired, or told to terminate) or on SIGINT/SIGTERM, stopping the worker.
    """
    if "://" not in scheduler_address:
        scheduler_address = f"tcp://{scheduler_address}"
    if scheduler_address.partition("://")[0] not in NETWORK_PROTOCOLS:
        raise click.BadParameter(
            f"{scheduler_address!r}: give the address the scheduler printed, "
            "e.g. tcp://10.0.0.1:8786 (tcp:// or tls://)",
            param_hint="SCHEDULER_ADDRESS",
        )
    bind, contact = resolve_cli_addresses(
        host=host,
        port=worker_port,
        interface=interface,
        protocol=protocol or scheduler_address.partition("://")[0],
        listen_address=listen_address,
        contact_address=contact_address,
        default_port=0,
        port_option="--worker-port",
    )
    nanny_contact = None
    if nanny_contact_address:
        if not nanny:
            raise click.UsageError("--nanny-contact-address is for a worker with a nanny")
        nanny_contact = resolve_cli_addresses(
            host=None,
            port=None,
            interface=None,
            protocol=bind.protocol,
            listen_address=None,
            contact_address=nanny_contact_address,
            default_port=0,
            port_option="--nanny-port",
        )[1]
    setup_logging(log_level)
    if auth_token_file:
        try:
            token = read_token_file(auth_token_file)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--auth-token-file") from None
        # Through the environment, so that the worker under the nanny has it too.
        os.environ["SHOAL_AUTH_TOKEN"] = token
    _tls_to_environment(tls_ca_file, tls_cert, tls_key)
    config.refresh()
    if nanny:
        if ready_fd is not None:
            raise click.UsageError("--ready-fd is for a worker without a nanny (--no-nanny)")
        _run_nanny(
            scheduler_address,
            bind=bind,
            contact_address=contact,
            nanny_contact_address=nanny_contact,
            nanny_port=nanny_port,
            nthreads=nthreads,
            name=name,
            memory_limit=memory_limit,
            resources=resources,
            exit_with_parent=exit_with_parent,
            log_level=log_level,
            local_directory=local_directory,
        )
    else:
        _run_worker(
            scheduler_address,
            bind=bind,
            contact_address=contact,
            nthreads=nthreads,
            name=name,
            memory_limit=memory_limit,
            resources=resources,
            exit_with_parent=exit_with_parent,
            ready_fd=ready_fd,
            local_directory=local_directory,
        )


def _tls_to_environment(ca: str | None, cert: str | None, key: str | None) -> None:
    """Pass TLS files on through the environment (a nanny's worker inherits them)."""
    for var, value in (
        ("SHOAL_TLS__CA_FILE", ca),
        ("SHOAL_TLS__CERT", cert),
        ("SHOAL_TLS__KEY", key),
    ):
        if value:
            os.environ[var] = os.path.abspath(value)


def _run_worker(
    scheduler_address: str,
    *,
    bind: BindAddress,
    contact_address: str | None,
    nthreads: int | None,
    name: str | None,
    memory_limit: str,
    resources: dict[str, float],
    exit_with_parent: bool,
    ready_fd: int | None,
    local_directory: str | None,
) -> None:
    from shoal.worker.server import Worker

    log = logging.getLogger("shoal.worker")

    async def start() -> Worker:
        try:
            w = await Worker(
                scheduler_address,
                nthreads=nthreads or os.cpu_count() or 1,
                name=name,
                memory_limit=memory_limit,
                host=bind.host,
                port=bind.port,
                protocol=bind.protocol,
                contact_address=contact_address,
                resources=resources,
                local_directory=local_directory,
            )
        except CommError as e:  # an address or port this host can't listen on
            raise click.ClickException(str(e)) from None
        log.info("Worker at: %s", w.address)
        if w.address != w.listen_address:
            log.info("Listening on: %s", w.listen_address)
        if ready_fd is not None:
            _announce(ready_fd, w.address)
        if exit_with_parent:
            _close_when_stdin_closes(w)
        return w

    async def stop(w: Worker) -> None:
        await w.close()

    run_until_signal(start, stop)


def _run_nanny(
    scheduler_address: str,
    *,
    bind: BindAddress,
    contact_address: str | None,
    nanny_contact_address: str | None,
    nanny_port: int,
    nthreads: int | None,
    name: str | None,
    memory_limit: str,
    resources: dict[str, float],
    exit_with_parent: bool,
    log_level: str,
    local_directory: str | None,
) -> None:
    from shoal.worker.nanny import Nanny

    security = Security.from_config()

    async def start() -> Nanny:
        try:
            n = await Nanny(
                scheduler_address,
                nthreads=nthreads,
                name=name,
                memory_limit=memory_limit,
                host=bind.host,
                port=nanny_port,
                protocol=bind.protocol,
                worker_port=bind.port,
                contact_address=contact_address,
                nanny_contact_address=nanny_contact_address,
                resources=resources,
                worker_args=[
                    "--log-level",
                    log_level,
                    *(["--local-directory", local_directory] if local_directory else []),
                ],
                secret=security.secret,
                ssl_context=security.server_context(),
            )
        except CommError as e:  # an address or port this host can't listen on
            raise click.ClickException(str(e)) from None
        if exit_with_parent:
            _close_when_stdin_closes(n)
        return n

    async def stop(n: Nanny) -> None:
        await n.close()

    run_until_signal(start, stop)


def _announce(fd: int, address: str) -> None:
    """Tell the nanny (through the pipe it gave us) that the worker is up, and where."""
    try:
        os.write(fd, f"{address}\n".encode())
    except OSError as e:  # the nanny is gone: --exit-with-parent closes us soon
        logging.getLogger("shoal.worker").warning("could not tell the nanny: %s", e)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Closable(Protocol):
    async def close(self, reason: str = "") -> None: ...


_closing: set[asyncio.Future[None]] = set()


def _close_when_stdin_closes(server: _Closable) -> None:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            _closing.add(asyncio.ensure_future(server.close(reason="parent process exited")))

    loop.add_reader(fd, on_readable)
