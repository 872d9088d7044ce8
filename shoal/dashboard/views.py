"""What the dashboard shows, as plain data: read from the scheduler, never written.

Everything here is O(workers), O(new task-stream records) or O(shown graph nodes),
except the per-group and per-prefix task counts, which walk every task: those are
cached for a while that grows with the number of tasks, so many open pages cost the
scheduler at most about a tenth of its time.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from shoal.scheduler.state.model import LIVE_STATES

if TYPE_CHECKING:
    from shoal.scheduler.server import Scheduler

#: seconds over which the recent task rate is measured
RATE_WINDOW = 10.0
#: most task-stream records one answer carries
STREAM_LIMIT = 2000
#: most tasks the graph view draws (the most recently submitted)
GRAPH_LIMIT = 2000
#: most edges the graph view draws
EDGE_LIMIT = 10_000


def _num(value: Any) -> float:
    """``value`` as a finite float (0 for anything else: JSON has no NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else str(key)


class ClusterView:
    """Read-only views of one scheduler for the pages, the JSON API and ``/metrics``."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._counts: tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]] = ({}, {})
        self._counts_until = 0.0
        self._layout: dict[str, Any] | None = None
        #: most tasks the graph view draws
        self.graph_limit = GRAPH_LIMIT

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        """The cluster in one line: address, workers, threads, tasks, clients, rate."""
        s = self.scheduler
        state = s.state
        try:
            address = s.address
        except RuntimeError:
            address = ""
        return {
            "address": address,
            "id": s.id,
            "status": s.status,
            "started": s.start_time,
            "now": time.time(),
            "workers": len(state.workers),
            "threads": sum(ws.nthreads for ws in state.workers.values()),
            "memory_limit": sum(ws.memory_limit for ws in state.workers.values()),
            "clients": len(state.clients),
            "tasks": len(state.tasks),
            "states": {name: n for name, n in state.counts.items()},
            "tasks_completed": s.task_stream.count,
            "task_rate": self.task_rate(),
        }

    def task_rate(self, now: float | None = None) -> float:
        """Task runs per second that ended in the last :data:`RATE_WINDOW` seconds."""
        now = time.time() if now is None else now
        since = now - RATE_WINDOW
        return self.scheduler.task_stream.ended_since(since) / RATE_WINDOW

    # ------------------------------------------------------------------ workers

    def workers(self) -> list[dict[str, Any]]:
        """One record per worker: the scheduler's view and its last heartbeat's figures."""
        out = []
        now = time.time()
        for ws in self.scheduler.state.workers.values():
            info = self.scheduler.worker_info.get(ws.address, {})
            m = info.get("metrics") or {}
            rss = int(_num(m.get("process_memory")))
            managed = int(_num(m.get("managed_bytes")))
            out.append(
                {
                    "address": ws.address,
                    "name": ws.name,
                    "nthreads": ws.nthreads,
                    "memory_limit": ws.memory_limit,
                    "status": (
                        "closing_gracefully"
                        if ws.retiring
                        else "paused"
                        if ws.paused
                        else "running"
                    ),
                    "processing": len(ws.processing),
                    "keys": len(ws.has_what),
                    "nbytes": ws.nbytes,
                    "occupancy": ws.occupancy,
                    "memory": {
                        "managed": managed,
                        "unmanaged": max(rss - managed, 0),
                        "spilled": int(_num(m.get("spilled_bytes"))),
                        "rss": rss,
                    },
                    "cpu": _num(m.get("cpu")),
                    "network": {
                        "read_bps": _num(m.get("read_bps")),
                        "write_bps": _num(m.get("write_bps")),
                    },
                    "executing": int(_num(m.get("executing"))),
                    "transfer_incoming_bytes": int(_num(m.get("transfer_incoming_bytes"))),
                    "transfer_incoming_count": int(_num(m.get("transfer_incoming_count"))),
                    "transfer_lent_bytes": int(_num(m.get("transfer_lent_bytes"))),
                    "last_seen": now - _num(info.get("last_seen", now)),
                    "nanny": info.get("nanny") or None,
                }
            )
        return out

    # ------------------------------------------------------------------ tasks

    def task_counts(self) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        """``(by group, by prefix)``: how many tasks of each are in each state.

        Walks every task, so the answer is reused for ten times as long as it took to
        compute (and at least a quarter of a second).
        """
        now = time.monotonic()
        if now < self._counts_until:
            return self._counts
        tasks = self.scheduler.state.tasks
        pairs = Counter((ts.group, ts.state) for ts in tasks.values())
        by_group: dict[str, dict[str, int]] = {}
        by_prefix: dict[str, dict[str, int]] = {}
        for (tg, state), n in pairs.items():
            group = by_group.setdefault(tg.name, {})
            group[state] = group.get(state, 0) + n
            prefix = by_prefix.setdefault(tg.prefix.name, {})
            prefix[state] = prefix.get(state, 0) + n
        elapsed = time.monotonic() - now
        self._counts = (by_group, by_prefix)
        self._counts_until = time.monotonic() + max(0.25, 10 * elapsed)
        return self._counts

    def tasks(self) -> dict[str, Any]:
        """Task counts: in total, by state, and by group and prefix (each by state)."""
        by_group, by_prefix = self.task_counts()
        state = self.scheduler.state
        return {
            "total": len(state.tasks),
            "states": {name: state.counts.get(name, 0) for name in LIVE_STATES},
            "groups": by_group,
            "prefixes": by_prefix,
            "completed": self.scheduler.task_stream.count,
            "task_rate": self.task_rate(),
        }

    def task_stream(self, since: int = 0, limit: int = STREAM_LIMIT) -> dict[str, Any]:
        """Task-stream records numbered ``since`` and after (the last ``limit`` of them)."""
        count, records = self.scheduler.task_stream.since(max(since, 0))
        records = records[-limit:]
        return {
            "next": count,
            "now": time.time(),
            "records": [
                {
                    "key": _key_text(r["key"]),
                    "name": r["name"],
                    "worker": r["worker"],
                    "start": r["start"],
                    "stop": r["stop"],
                    "status": r["status"],
                    "nbytes": r["nbytes"],
                }
                for r in records
            ],
        }

    # ------------------------------------------------------------------ graph

    def graph(self, version: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """The newest ``limit`` tasks (``graph_limit`` by default) as a layered node-link
        drawing, colored by state.

        ``version`` names the layout a page already has: while the shown tasks stay the
        same, only their states are sent.
        """
        limit = self.graph_limit if limit is None else limit
        tasks_by_key = self.scheduler.state.tasks
        shown = list(itertools.islice(reversed(tasks_by_key.values()), limit))
        shown.reverse()
        new_version = f"{hash(tuple(ts.key for ts in shown)) & 0xFFFFFFFFFFFF:x}-{len(shown)}"
        head = {
            "version": new_version,
            "total": len(tasks_by_key),
            "shown": len(shown),
            "limit": limit,
            "states": [ts.state for ts in shown],
        }
        if version == new_version:
            return head
        layout = self._layout
        if layout is None or layout["version"] != new_version:
            layout = self._layout = {"version": new_version, **_layered_layout(shown)}
        return {**head, **{k: v for k, v in layout.items() if k != "version"}}


def _layered_layout(shown: list[Any]) -> dict[str, Any]:
    """Nodes at (depth, rank): depth is the longest chain of shown dependencies below a
    task; tasks of one depth are stacked, grouped by task group, around y = 0."""
    index = {ts: i for i, ts in enumerate(shown)}
    deps: list[list[int]] = []
    n_edges = 0
    for ts in shown:
        mine: list[int] = []
        if n_edges < EDGE_LIMIT:
            for dep in ts.dependencies:
                j = index.get(dep)
                if j is not None:
                    mine.append(j)
            n_edges += len(mine)
        deps.append(mine)
    # Kahn's order over the shown subgraph: depth = 1 + the deepest dependency.
    dependents: list[list[int]] = [[] for _ in shown]
    missing = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            dependents[j].append(i)
    depth = [0] * len(shown)
    ready = [i for i, m in enumerate(missing) if m == 0]
    while ready:
        j = ready.pop()
        for i in dependents[j]:
            depth[i] = max(depth[i], depth[j] + 1)
            missing[i] -= 1
            if missing[i] == 0:
                ready.append(i)
    layers: dict[int, list[int]] = {}
    for i in sorted(range(len(shown)), key=lambda i: (shown[i].group.name, i)):
        layers.setdefault(depth[i], []).append(i)
    y = [0.0] * len(shown)
    for members in layers.values():
        middle = (len(members) - 1) / 2
        for rank, i in enumerate(members):
            y[i] = rank - middle
    edge_x: list[float | None] = []
    edge_y: list[float | None] = []
    for i, d in enumerate(deps):
        for j in d:
            edge_x += [depth[j], depth[i], None]
            edge_y += [y[j], y[i], None]
    return {
        "x": depth,
        "y": y,
        "keys": [_key_text(ts.key) for ts in shown],
        "groups": [ts.group.name for ts in shown],
        "edges": {"x": edge_x, "y": edge_y, "count": sum(len(d) for d in deps)},
        "edges_truncated": n_edges >= EDGE_LIMIT,
    }
