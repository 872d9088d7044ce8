"""The dashboard's routes: pages, static files (plotly from its package), JSON, metrics.

Routes:
- ``/`` → ``/status``; pages ``/status``, ``/tasks``, ``/progress``, ``/workers``,
  ``/graph`` (not mounted with ``pages=False``, as ``--no-dashboard``);
- ``/statics/...``: this package's script and style; ``/statics/plotly.min.js``: the
  copy shipped inside the ``plotly`` Python package;
- ``/health``, ``/metrics``, and ``/api/v1/{cluster,workers,tasks,task-stream,graph}``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import tornado.web

from shoal.dashboard import metrics
from shoal.dashboard.views import ClusterView

logger = logging.getLogger("shoal.dashboard")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: the pages: path → (title, what it shows)
PAGES: dict[str, tuple[str, str]] = {
    "status": ("Status", "memory per worker, progress and the task stream"),
    "tasks": ("Task stream", "which worker ran which task, and when"),
    "progress": ("Progress", "tasks of each group, by state"),
    "workers": ("Workers", "memory, CPU and network of each worker"),
    "graph": ("Graph", "the tasks of the current computation, by state"),
}


def plotly_js() -> Path | None:
    """Where the installed ``plotly`` package keeps ``plotly.min.js`` (None: not found)."""
    spec = importlib.util.find_spec("plotly")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    return None


class _Handler(tornado.web.RequestHandler):
    view: ClusterView

    def initialize(self, view: ClusterView) -> None:
        self.view = view

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def send_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, default=str, allow_nan=False))

    def int_argument(self, name: str, default: int) -> int:
        text = self.get_argument(name, None)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise tornado.web.HTTPError(
                400, reason=f"{name} must be an integer, got {text!r}"
            ) from None


class HealthHandler(_Handler):
    """``/health``: 200 ``ok`` while the scheduler runs."""

    def get(self) -> None:
        """Answer ``ok`` (503 and the status while not running)."""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if self.view.scheduler.status != "running":
            self.set_status(503)
            self.finish(self.view.scheduler.status)
        else:
            self.finish("ok")


class MetricsHandler(_Handler):
    """``/metrics``: Prometheus text."""

    def get(self) -> None:
        """Answer the Prometheus exposition."""
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render(self.view))


class ClusterHandler(_Handler):
    """``/api/v1/cluster``: the one-line summary."""

    def get(self) -> None:
        """Answer the summary."""
        self.send_json(self.view.summary())


class WorkersHandler(_Handler):
    """``/api/v1/workers``: one record per worker."""

    def get(self) -> None:
        """Answer the worker records."""
        self.send_json({"workers": self.view.workers()})


class TasksHandler(_Handler):
    """``/api/v1/tasks``: task counts by state, group and prefix."""

    def get(self) -> None:
        """Answer the task counts."""
        self.send_json(self.view.tasks())


class TaskStreamHandler(_Handler):
    """``/api/v1/task-stream?since=N``: task runs numbered N and after."""

    def get(self) -> None:
        """Answer the records after ``since`` (at most ``limit``)."""
        since = self.int_argument("since", 0)
        limit = self.int_argument("limit", 2000)
        if limit <= 0:
            raise tornado.web.HTTPError(400, reason="limit must be positive")
        self.send_json(self.view.task_stream(since, min(limit, 10_000)))


class GraphHandler(_Handler):
    """``/api/v1/graph?version=V``: the graph drawing (states only if V is current)."""

    def get(self) -> None:
        """Answer the drawing, or only the states."""
        self.send_json(self.view.graph(self.get_argument("version", None)))


class PageHandler(_Handler):
    """A dashboard page: a shell the page's script fills by polling the API."""

    def initialize(self, view: ClusterView, page: str = "status") -> None:  # type: ignore[override]
        """Serve ``page`` from ``view``."""
        self.view = view
        self.page = page

    def get(self) -> None:
        """Render the page."""
        title, about = PAGES[self.page]
        self.render(
            "page.html",
            page=self.page,
            title=title,
            about=about,
            pages=[(name, t) for name, (t, _) in PAGES.items()],
        )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Requests at debug level (pages poll twice a second), failures louder."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
    request = handler.request
    logger.log(
        level,
        "%d %s %s %.1f ms",
        status,
        request.method,
        request.uri,
        1000 * request.request_time(),
    )


def make_app(view: ClusterView, *, pages: bool = True) -> tornado.web.Application:
    """The tornado application serving the dashboard and API of ``view``'s scheduler."""
    args = {"view": view}
    routes: list[Any] = [
        (r"/health", HealthHandler, args),
        (r"/metrics", MetricsHandler, args),
        (r"/api/v1/cluster", ClusterHandler, args),
        (r"/api/v1/workers", WorkersHandler, args),
        (r"/api/v1/tasks", TasksHandler, args),
        (r"/api/v1/task-stream", TaskStreamHandler, args),
        (r"/api/v1/graph", GraphHandler, args),
    ]
    js = plotly_js() if pages else None
    if pages and js is None:
        logger.error(
            "the dashboard pages need plotly (pip install plotly): serving only /health, "
            "/metrics and /api/v1"
        )
    if js is not None:
        routes += [
            (r"/", tornado.web.RedirectHandler, {"url": "/status"}),
            (
                r"/statics/(plotly\.min\.js)",
                tornado.web.StaticFileHandler,
                {"path": str(js.parent)},
            ),
            (r"/statics/(.*)", tornado.web.StaticFileHandler, {"path": str(STATIC)}),
            *[(rf"/{name}", PageHandler, {"view": view, "page": name}) for name in PAGES],
        ]
    return tornado.web.Application(
        routes,
        template_path=str(TEMPLATES),
        compress_response=True,
        autoreload=False,
        log_function=_log_request,
        debug=False,
    )
