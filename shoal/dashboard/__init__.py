"""The scheduler's web dashboard and HTTP API (DESIGN.md §6).

One tornado HTTP server on the scheduler's event loop serves:
- live pages (``/status``, ``/tasks``, ``/progress``, ``/workers``, ``/graph``) drawn with
  plotly, whose ``plotly.min.js`` is served from the installed package (no CDN); each
  page polls JSON endpoints and redraws with ``Plotly.react``;
- ``/health``, ``/metrics`` (Prometheus text format) and ``/api/v1/...`` (JSON).

The dashboard reads the scheduler and never changes it. tornado is imported only when
a dashboard starts, so a scheduler without one starts as fast as before.
"""

from __future__ import annotations

from shoal.dashboard.server import DashboardServer, parse_dashboard_address

__all__ = ["DashboardServer", "parse_dashboard_address"]
