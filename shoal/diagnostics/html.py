"""The Jupyter ``_repr_html_`` of ``Client`` and ``LocalCluster``.

A small table: the scheduler's address, the dashboard link when there is one, the
number of workers, threads and the total memory. Everything shown is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from dask.utils import format_bytes

from shoal.protocol.messages import Identity

__all__ = ["client_html", "cluster_html", "summary_table"]


def summary_table(title: str, rows: Iterable[tuple[str, Any]]) -> str:
    """An HTML table of ``(label, value)`` rows under ``title``; values are escaped, except
    those given as :class:`Link`."""
    cells = []
    for label, value in rows:
        shown = value.html() if isinstance(value, Link) else html.escape(str(value))
        cells.append(
            f'<tr><th style="text-align: left">{html.escape(label)}</th>'
            f'<td style="text-align: left">{shown}</td></tr>'
        )
    return (
        f'<div class="shoal-summary"><h3 style="margin: 0 0 4px 0">{html.escape(title)}</h3>'
        f"<table>{''.join(cells)}</table></div>"
    )


class Link:
    """A URL shown as a link in :func:`summary_table`."""

    def __init__(self, url: str) -> None:
        self.url = url

    def html(self) -> str:
        """The ``<a>`` element (opens in a new tab)."""
        url = html.escape(self.url, quote=True)
        return f'<a href="{url}" target="_blank">{html.escape(self.url)}</a>'


def _workers_rows(workers: dict[str, Any]) -> list[tuple[str, Any]]:
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    memory = sum(int(w.get("memory_limit", 0) or 0) for w in workers.values())
    return [
        ("Workers", len(workers)),
        ("Threads", threads),
        ("Memory", format_bytes(memory) if memory else "unlimited"),
    ]


def _dashboard_rows(obj: Any) -> list[tuple[str, Any]]:
    try:
        link = getattr(obj, "dashboard_link", None)
    except Exception:  # a property that could not answer: show the rest
        link = None
    return [("Dashboard", Link(link))] if isinstance(link, str) and link else []


def client_html(client: Any) -> str:
    """The HTML summary of a client; asks the scheduler for its workers when it can
    without blocking an event loop (a synchronous client outside its loop thread)."""
    rows: list[tuple[str, Any]] = [
        ("Scheduler", client.scheduler_address),
        ("Status", client.status),
        *_dashboard_rows(client),
    ]
    info = None
    if client.status == "running" and not client.asynchronous:
        try:
            info = client._sync(client._request, Identity(), timeout=5)
        except Exception:  # unreachable scheduler: a repr must still render
            info = None
    if isinstance(info, dict):
        rows.extend(_workers_rows(dict(info.get("workers", {}))))
    cluster = getattr(client, "cluster", None)
    if cluster is not None:
        rows.append(("Cluster", type(cluster).__name__))
    return summary_table("Client", rows)


def cluster_html(cluster: Any) -> str:
    """The HTML summary of a ``LocalCluster``."""
    running = cluster.status == "running" and cluster.scheduler is not None
    n = len(cluster.workers)
    memory = cluster.memory_limit * n
    rows: list[tuple[str, Any]] = [
        ("Scheduler", cluster.scheduler.address if running else "not running"),
        ("Status", cluster.status),
        *_dashboard_rows(cluster),
        ("Workers", n),
        ("Threads", n * cluster.threads_per_worker),
        ("Memory", format_bytes(memory) if memory else "unlimited"),
        ("Processes", "yes" if cluster.processes else "no (threads)"),
    ]
    return summary_table(cluster.name, rows)
