"""``/metrics``: the cluster in the Prometheus text exposition format (version 0.0.4).

Written by hand (the format is a few lines of text per family), from the same
:class:`~shoal.dashboard.views.ClusterView` records the pages use. Counters end in
``_total``; rates are left to Prometheus (``rate(shoal_tasks_completed_total[1m])``),
with a gauge of the recent rate for a quick look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shoal.dashboard.views import RATE_WINDOW, ClusterView
from shoal.scheduler.state.model import LIVE_STATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, str], float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Exposition:
    """Metric families in the order they are added, rendered by :meth:`text`."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        """Add the family ``name`` (``kind``: gauge or counter) with its samples; a
        counter's samples are named ``<name>_total``."""
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
                self._lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self._lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self._lines) + "\n"


def render(view: ClusterView) -> str:
    """Every shoal metric, as Prometheus text."""
    out = Exposition()
    summary = view.summary()
    tasks = view.tasks()
    workers = view.workers()
    out.family("shoal_scheduler_workers", "gauge", "Workers connected.", [({}, summary["workers"])])
    out.family(
        "shoal_scheduler_threads", "gauge", "Worker threads in all.", [({}, summary["threads"])]
    )
    out.family("shoal_scheduler_clients", "gauge", "Clients connected.", [({}, summary["clients"])])
    out.family(
        "shoal_scheduler_tasks",
        "gauge",
        "Tasks the scheduler knows, by state.",
        [({"state": s}, tasks["states"].get(s, 0)) for s in LIVE_STATES],
    )
    out.family(
        "shoal_scheduler_tasks_by_prefix",
        "gauge",
        "Tasks the scheduler knows, by key prefix and state.",
        [
            ({"prefix": prefix, "state": s}, n)
            for prefix, states in sorted(tasks["prefixes"].items())
            for s, n in sorted(states.items())
        ],
    )
    out.family(
        "shoal_tasks_completed",
        "counter",
        "Task runs workers reported done (finished or failed) since the scheduler started.",
        [({}, tasks["completed"])],
    )
    out.family(
        "shoal_tasks_per_second",
        "gauge",
        f"Task runs per second over the last {RATE_WINDOW:g} seconds.",
        [({}, tasks["task_rate"])],
    )
    out.family(
        "shoal_scheduler_bytes_in_memory",
        "gauge",
        "Bytes of results held by workers, as the scheduler counts them.",
        [({}, sum(w["nbytes"] for w in workers))],
    )
    _worker_families(out, workers)
    return out.text()


def _per_worker(workers: list[dict[str, Any]], get: Any) -> list[Sample]:
    return [({"worker": w["address"], "name": str(w["name"])}, get(w)) for w in workers]


def _worker_families(out: Exposition, workers: list[dict[str, Any]]) -> None:
    families: list[tuple[str, str, str, Any]] = [
        ("shoal_worker_threads", "gauge", "Threads of the worker.", lambda w: w["nthreads"]),
        (
            "shoal_worker_memory_limit_bytes",
            "gauge",
            "Memory limit of the worker (0: none).",
            lambda w: w["memory_limit"],
        ),
        (
            "shoal_worker_managed_bytes",
            "gauge",
            "Bytes of results the worker holds in memory.",
            lambda w: w["memory"]["managed"],
        ),
        (
            "shoal_worker_unmanaged_bytes",
            "gauge",
            "Process memory not held by results (RSS minus managed).",
            lambda w: w["memory"]["unmanaged"],
        ),
        (
            "shoal_worker_spilled_bytes",
            "gauge",
            "Bytes of results the worker spilled to disk.",
            lambda w: w["memory"]["spilled"],
        ),
        (
            "shoal_worker_rss_bytes",
            "gauge",
            "Resident memory of the worker process.",
            lambda w: w["memory"]["rss"],
        ),
        (
            "shoal_worker_cpu_percent",
            "gauge",
            "CPU use of the worker process, in percent of one core.",
            lambda w: w["cpu"],
        ),
        (
            "shoal_worker_processing_tasks",
            "gauge",
            "Tasks assigned to the worker.",
            lambda w: w["processing"],
        ),
        (
            "shoal_worker_transfer_incoming_bytes",
            "counter",
            "Bytes of dependencies the worker fetched from its peers.",
            lambda w: w["transfer_incoming_bytes"],
        ),
        (
            "shoal_worker_transfer_incoming",
            "counter",
            "Values the worker fetched from its peers.",
            lambda w: w["transfer_incoming_count"],
        ),
        (
            "shoal_worker_transfer_lent_bytes",
            "counter",
            "Bytes peers and clients on the worker's host copied straight out of its memory.",
            lambda w: w["transfer_lent_bytes"],
        ),
    ]
    for name, kind, help_text, get in families:
        out.family(name, kind, help_text, _per_worker(workers, get))
    out.family(
        "shoal_worker_network_bytes_per_second",
        "gauge",
        "Network traffic of the worker's host, by direction.",
        [
            ({"worker": w["address"], "name": str(w["name"]), "direction": d}, w["network"][k])
            for w in workers
            for d, k in (("read", "read_bps"), ("write", "write_bps"))
        ],
    )
    out.family(
        "shoal_transfer_incoming_bytes",
        "counter",
        "Bytes workers fetched from their peers, all connected workers together.",
        [({}, sum(w["transfer_incoming_bytes"] for w in workers))],
    )
