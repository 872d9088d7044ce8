"""The task stream on the client: records shaped as distributed's, the chart, and the
``get_task_stream`` context manager.

A record is a dict with distributed's keys: ``key``, ``worker``, ``status`` (``"OK"``
or ``"error"``), ``nbytes`` and ``startstops``, a tuple holding
``{"action": "compute", "start": t0, "stop": t1}`` (Unix times on the worker), plus
``name``, the key's prefix (``"inc"`` for ``"inc-3f2a…"``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from shoal.client.client import Client

__all__ = [
    "figure_html",
    "get_task_stream",
    "lanes",
    "record_from_wire",
    "task_stream_figure",
    "write_figure",
]

#: bar colour of failed runs in the chart
ERROR_COLOUR = "#d62728"


def record_from_wire(raw: Any) -> dict[str, Any]:
    """A scheduler task-stream record as the client returns it (distributed's shape)."""
    r = dict(raw)
    return {
        "key": r["key"],
        "name": r.get("name", ""),
        "worker": r["worker"],
        "status": r["status"],
        "nbytes": r.get("nbytes", 0),
        "startstops": ({"action": "compute", "start": r["start"], "stop": r["stop"]},),
    }


def _span(record: dict[str, Any]) -> tuple[float, float]:
    ss = record["startstops"][0]
    return float(ss["start"]), float(ss["stop"])


def lanes(records: Sequence[dict[str, Any]]) -> list[str]:
    """The chart row of each record: ``"<worker> #<n>"``, runs that overlap on one worker
    (its threads) placed on separate rows, each on the lowest free one."""
    order = sorted(range(len(records)), key=lambda i: _span(records[i]))
    ends: dict[str, list[float]] = {}
    rows = [""] * len(records)
    for i in order:
        start, stop = _span(records[i])
        worker = str(records[i]["worker"])
        free = ends.setdefault(worker, [])
        for n, end in enumerate(free):
            if end <= start:
                free[n] = stop
                break
        else:
            n = len(free)
            free.append(stop)
        rows[i] = f"{worker} #{n}"
    return rows


def _hover(record: dict[str, Any], seconds: float) -> str:
    key = html.escape(str(record["key"]))
    return f"{key}<br>{seconds:.4f} s on {html.escape(str(record['worker']))}"


def task_stream_figure(records: Sequence[dict[str, Any]], title: str = "Task stream") -> go.Figure:
    """A plotly figure of the runs: one bar per run from its start to its stop (seconds
    since the first start), a row per worker thread, a colour per task prefix, failed
    runs in red."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if records:
        origin = min(_span(r)[0] for r in records)
        rows = lanes(records)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            name = "error" if r["status"] != "OK" else str(r.get("name") or "task")
            groups.setdefault(name, []).append(i)
        for name, idx in sorted(groups.items()):
            spans = [_span(records[i]) for i in idx]
            fig.add_trace(
                go.Bar(
                    name=name,
                    orientation="h",
                    y=[rows[i] for i in idx],
                    base=[s - origin for s, _ in spans],
                    x=[max(e - s, 0.0) for s, e in spans],
                    hovertext=[_hover(records[i], e - s) for i, (s, e) in zip(idx, spans)],
                    hoverinfo="text",
                    marker_color=ERROR_COLOUR if name == "error" else None,
                )
            )
    fig.update_layout(
        title=title,
        barmode="overlay",
        xaxis_title="seconds",
        yaxis={"categoryorder": "category descending"},
        height=max(250, 30 * len(set(lanes(records))) + 120),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )
    return fig


def figure_html(fig: go.Figure) -> str:
    """A figure as an HTML ``<div>`` and its script, without the plotly.js library."""
    return str(fig.to_html(full_html=False, include_plotlyjs=False))


def page(title: str, body: Iterable[str]) -> str:
    """A whole HTML page, plotly.js inlined in its head (no CDN: it works offline)."""
    from plotly.offline import get_plotlyjs

    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "<style>body{font-family:sans-serif;margin:20px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "pre{background:#f6f6f6;padding:8px;overflow:auto}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def write_figure(fig: go.Figure, filename: str, title: str = "Task stream") -> None:
    """Write ``fig`` as a self-contained HTML file."""
    with open(filename, "w", encoding="utf-8") as f:
        f.write(page(title, [figure_html(fig)]))


class get_task_stream:
    """Collect the task stream of what runs inside a ``with`` (or ``async with``) block.

    >>> with get_task_stream() as ts:
    ...     client.gather(client.map(inc, range(10)))
    >>> len(ts.data)
    10

    ``plot=True`` also builds ``ts.figure`` (a plotly figure); ``plot="save"`` writes
    it to ``filename`` as well. Uses the default client unless ``client`` is given.
    """

    def __init__(
        self,
        client: Client | None = None,
        plot: bool | str = False,
        filename: str = "task-stream.html",
    ) -> None:
        self.client = client
        self.plot = plot
        self.filename = filename
        #: the records, once the block is over
        self.data: list[dict[str, Any]] = []
        #: the plotly figure, with ``plot``
        self.figure: go.Figure | None = None
        self._index = 0

    def _client(self) -> Client:
        if self.client is None:
            from shoal.client.client import default_client

            self.client = default_client()
        return self.client

    def __enter__(self) -> get_task_stream:
        client = self._client()
        if client.asynchronous:
            raise RuntimeError(
                "get_task_stream with an asynchronous client: use `async with "
                "get_task_stream(client) as ts:`"
            )
        self._index = client._sync(client._task_stream_index)
        return self

    def __exit__(self, *exc: object) -> None:
        client = self._client()
        _, records = client._sync(client._task_stream, index=self._index)
        self._finish(records)

    async def __aenter__(self) -> get_task_stream:
        client = self._client()
        if not client.asynchronous:
            raise RuntimeError(
                "`async with get_task_stream(...)` needs an asynchronous client "
                "(Client(..., asynchronous=True)); use a plain `with` with this one"
            )
        self._index = await client._task_stream_index()
        return self

    async def __aexit__(self, *exc: object) -> None:
        _, records = await self._client()._task_stream(index=self._index)
        self._finish(records)

    def _finish(self, records: list[dict[str, Any]]) -> None:
        self.data.extend(records)
        if self.plot:
            self.figure = task_stream_figure(self.data)
            if self.plot == "save":
                write_figure(self.figure, self.filename)
