"""``performance_report``: what ran inside a ``with`` block, as one self-contained HTML file.

The file holds the task stream chart, the time spent per task prefix (chart and table),
a table per worker (threads, memory, tasks run, busy time, utilisation), the duration,
the number of tasks, and the source of the code that ran the block when Python can find
it. Charts are plotly, with plotly.js inlined: the file opens offline and loads
nothing from the network.

shoal has no statistical profiler yet, so the report has no flame graph: the worker
table and the per-prefix times stand in for distributed's profile tabs.
"""

from __future__ import annotations

import html
import inspect
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes, format_time

from shoal.diagnostics.task_stream import figure_html, page, task_stream_figure
from shoal.protocol.messages import Identity

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from shoal.client.client import Client

__all__ = ["performance_report", "render_report"]


def _duration(record: dict[str, Any]) -> float:
    ss = record["startstops"][0]
    return max(float(ss["stop"]) - float(ss["start"]), 0.0)


def prefix_summary(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task prefix: ``name``, ``count``, ``erred``, ``total`` and ``mean`` seconds,
    ``max`` seconds and ``nbytes`` of results, the most total time first."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        name = str(r.get("name") or "task")
        row = rows.setdefault(
            name,
            {"name": name, "count": 0, "erred": 0, "total": 0.0, "max": 0.0, "nbytes": 0},
        )
        d = _duration(r)
        row["count"] += 1
        row["erred"] += r["status"] != "OK"
        row["total"] += d
        row["max"] = max(row["max"], d)
        row["nbytes"] += int(r.get("nbytes") or 0)
    for row in rows.values():
        row["mean"] = row["total"] / row["count"]
    return sorted(rows.values(), key=lambda row: -row["total"])


def worker_summary(
    records: Sequence[dict[str, Any]], workers: dict[str, Any], duration: float
) -> list[dict[str, Any]]:
    """Per worker: ``address``, ``name``, ``nthreads``, ``memory_limit``, ``tasks``,
    ``busy`` seconds and ``utilization`` (busy time over threads times duration)."""
    rows: dict[str, dict[str, Any]] = {}
    for address, info in workers.items():
        rows[address] = {
            "address": address,
            "name": str(info.get("name", "")),
            "nthreads": int(info.get("nthreads", 0)),
            "memory_limit": int(info.get("memory_limit", 0) or 0),
            "tasks": 0,
            "busy": 0.0,
        }
    for r in records:
        address = str(r["worker"])
        row = rows.setdefault(
            address,  # a worker that left before the end
            {
                "address": address,
                "name": "(gone)",
                "nthreads": 0,
                "memory_limit": 0,
                "tasks": 0,
                "busy": 0.0,
            },
        )
        row["tasks"] += 1
        row["busy"] += _duration(r)
    for row in rows.values():
        capacity = duration * row["nthreads"]
        row["utilization"] = row["busy"] / capacity if capacity > 0 else None
    return sorted(rows.values(), key=lambda row: row["address"])


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _prefix_figure(summary: Sequence[dict[str, Any]]) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Bar(
            x=[row["total"] for row in summary],
            y=[row["name"] for row in summary],
            orientation="h",
            hovertext=[f"{row['count']} tasks, {row['total']:.4f} s" for row in summary],
            hoverinfo="text",
        )
    )
    fig.update_layout(
        title="Compute time per task prefix",
        xaxis_title="seconds",
        yaxis={"autorange": "reversed"},
        height=max(250, 30 * len(summary) + 120),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def render_report(
    records: Sequence[dict[str, Any]],
    workers: dict[str, Any],
    start: float,
    stop: float,
    code: str = "",
    title: str = "shoal performance report",
) -> str:
    """The report page for ``records`` (task-stream records) run between ``start`` and
    ``stop`` (Unix times) on ``workers`` (``scheduler_info()["workers"]``)."""
    duration = max(stop - start, 0.0)
    prefixes = prefix_summary(records)
    per_worker = worker_summary(records, workers, duration)
    erred = sum(r["status"] != "OK" for r in records)
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    facts = [
        ("Started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start))),
        ("Duration", format_time(duration)),
        ("Tasks", len(records)),
        ("Erred tasks", erred),
        ("Compute time", format_time(sum(row["total"] for row in prefixes))),
        ("Workers", len(workers)),
        ("Threads", threads),
    ]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        _table(["", ""], facts),
        "<h2>Task stream</h2>",
        figure_html(task_stream_figure(records)),
        "<h2>Task prefixes</h2>",
        figure_html(_prefix_figure(prefixes)),
        _table(
            ["prefix", "tasks", "erred", "total", "mean", "max", "result bytes"],
            [
                (
                    row["name"],
                    row["count"],
                    row["erred"],
                    format_time(row["total"]),
                    format_time(row["mean"]),
                    format_time(row["max"]),
                    format_bytes(row["nbytes"]),
                )
                for row in prefixes
            ],
        ),
        "<h2>Workers</h2>",
        _table(
            ["worker", "name", "threads", "memory limit", "tasks", "busy", "utilization"],
            [
                (
                    row["address"],
                    row["name"],
                    row["nthreads"],
                    format_bytes(row["memory_limit"]) if row["memory_limit"] else "-",
                    row["tasks"],
                    format_time(row["busy"]),
                    "-" if row["utilization"] is None else f"{100 * row['utilization']:.1f}%",
                )
                for row in per_worker
            ],
        ),
    ]
    if code:
        parts += ["<h2>Code</h2>", f"<pre><code>{html.escape(code)}</code></pre>"]
    return page(title, parts)


def _caller_code(depth: int) -> str:
    """The source of the function (or module) ``depth`` frames up, or ``""``."""
    try:
        frame = sys._getframe(depth + 1)
        return inspect.getsource(frame)
    except (OSError, TypeError, ValueError):  # no source: a REPL, an exec'd string
        return ""


class performance_report:
    """Write an HTML report of everything the cluster ran inside the block.

    >>> with performance_report(filename="dask-report.html"):
    ...     x.sum().compute()

    Works with ``async with`` for an asynchronous client. Uses the default client.
    ``stacklevel`` picks whose code is shown (1: the code containing the ``with``).
    ``mode`` is accepted for compatibility with distributed (plotly.js is always
    inlined); the file is written locally, so a remote URL or ``storage_options`` is
    refused at once, before anything runs.
    """

    def __init__(
        self,
        filename: str = "dask-report.html",
        stacklevel: int = 1,
        mode: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in (None, "inline"):
            raise ValueError(
                f"performance_report always inlines plotly.js (mode='inline'), not {mode!r}"
            )
        if storage_options or "://" in str(filename):
            raise ValueError(
                f"performance_report writes a local file, not {filename!r}"
                + (" with storage_options" if storage_options else "")
                + ": give a local path and copy the file where it should go"
            )
        self.filename = filename
        self.stacklevel = stacklevel
        self._client: Client | None = None
        self._index = 0
        self._start = 0.0
        self._code = ""

    def _default_client(self, asynchronous: bool) -> Client:
        from shoal.client.client import default_client

        client = default_client()
        if client.asynchronous != asynchronous:
            raise RuntimeError(
                "performance_report: use `async with performance_report(...)` with an "
                "asynchronous client and a plain `with` with a synchronous one"
            )
        return client

    def __enter__(self) -> performance_report:
        self._code = _caller_code(self.stacklevel)
        self._client = client = self._default_client(asynchronous=False)
        self._index = client._sync(client._task_stream_index)
        self._start = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        client = self._client
        assert client is not None
        stop = time.time()
        _, records = client._sync(client._task_stream, index=self._index)
        info = client._sync(client._request, Identity())
        self._write(records, info, stop)

    async def __aenter__(self) -> performance_report:
        self._code = _caller_code(self.stacklevel)
        self._client = client = self._default_client(asynchronous=True)
        self._index = await client._task_stream_index()
        self._start = time.time()
        return self

    async def __aexit__(self, *exc: object) -> None:
        client = self._client
        assert client is not None
        stop = time.time()
        _, records = await client._task_stream(index=self._index)
        info = await client._request(Identity())
        self._write(records, info, stop)

    def _write(self, records: list[dict[str, Any]], info: Any, stop: float) -> None:
        workers = dict(info.get("workers", {})) if isinstance(info, dict) else {}
        text = render_report(records, workers, self._start, stop, self._code)
        with open(self.filename, "w", encoding="utf-8") as f:
            f.write(text)
