"""The dashboard's HTTP server: where it listens, how it starts and stops.

``DashboardServer(scheduler, ":8787")`` serves on the scheduler's event loop. When the
port is taken (another cluster on this machine), it listens on a random free port
instead and logs a warning saying which, as distributed does; ``port`` and :meth:`link`
always tell where it really is.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Any

from shoal.dashboard.views import ClusterView

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

logger = logging.getLogger("shoal.dashboard")

_WILDCARDS = ("", "0.0.0.0", "::", "*")


def parse_dashboard_address(address: str | int, default_host: str = "") -> tuple[str, int]:
    """``":8787"``, ``"8787"``, ``8787``, ``"host:8787"`` or ``"[::1]:8787"`` as
    ``(host, port)``; a missing host is ``default_host`` (``""``: every interface)."""
    text = str(address).strip()
    for scheme in ("http://", "https://"):
        text = text.removeprefix(scheme)
    text = text.rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(
            f"invalid dashboard address {address!r}: give a port (':8787', '8787') or "
            "host and port ('127.0.0.1:8787'); 0 picks a free port; None turns the "
            "dashboard off"
        )
    return host, port


class DashboardServer:
    """The HTTP server of one scheduler: pages (unless ``pages=False``) and the API.

    ``address`` is parsed by :func:`parse_dashboard_address`; a missing host means the
    host the scheduler listens on.
    """

    def __init__(self, scheduler: Scheduler, address: str | int = ":8787", *, pages: bool = True):
        self.scheduler = scheduler
        self.requested = address
        self.host, self.port = parse_dashboard_address(address, scheduler_host(scheduler))
        self.pages = pages
        #: what the pages and the API read (see :mod:`shoal.dashboard.views`)
        self.view = ClusterView(scheduler)
        self._server: Any = None

    async def start(self) -> DashboardServer:
        """Listen (on a random port if the asked one is taken) and start serving."""
        from tornado.httpserver import HTTPServer
        from tornado.netutil import bind_sockets

        from shoal.dashboard.app import make_app

        host = None if self.host in _WILDCARDS else self.host
        try:
            sockets = bind_sockets(self.port, address=host)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or self.port == 0:
                raise OSError(
                    e.errno,
                    f"the dashboard could not listen on {self.host or '*'}:{self.port}: "
                    f"{e.strerror}. Pass another dashboard_address (--dashboard-address "
                    "host:port, or :0 for any free port), or dashboard_address=None to run "
                    "no HTTP server",
                ) from e
            sockets = bind_sockets(0, address=host)
            logger.warning(
                "Port %d is already in use (perhaps another cluster runs on this machine); "
                "the dashboard is served on port %d instead",
                self.port,
                sockets[0].getsockname()[1],
            )
        self.port = int(sockets[0].getsockname()[1])
        self._server = HTTPServer(make_app(self.view, pages=self.pages))
        self._server.add_sockets(sockets)
        logger.info("Dashboard at %s", self.link())
        return self

    def link(self, path: str = "/status") -> str:
        """The URL of ``path`` on this dashboard, with a host others can reach."""
        host = self.host
        if host in _WILDCARDS:
            host = contact_host(self.scheduler)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{path}"

    async def close(self) -> None:
        """Stop listening and close open connections (pages polling)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            await server.close_all_connections()


def scheduler_host(scheduler: Scheduler) -> str:
    """The host the scheduler binds to."""
    return str(getattr(scheduler, "_host", "") or "")


def contact_host(scheduler: Scheduler) -> str:
    """The host in the scheduler's contact address (``127.0.0.1`` for inproc)."""
    try:
        address = scheduler.address
    except RuntimeError:
        return "127.0.0.1"
    scheme, _, rest = address.partition("://")
    if scheme == "inproc" or not rest:
        return "127.0.0.1"
    host = rest.rpartition(":")[0].strip("[]")
    return "127.0.0.1" if host in _WILDCARDS else host
