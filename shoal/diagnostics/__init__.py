"""Client-side diagnostics: progress bars, the task stream, performance reports, reprs.

- :mod:`.progress`: ``shoal.progress(...)``, bars in a terminal or a notebook;
- :mod:`.task_stream`: ``shoal.get_task_stream()`` and the task-stream chart;
- :mod:`.report`: ``shoal.performance_report(...)``, a self-contained HTML file;
- :mod:`.html`: the Jupyter ``_repr_html_`` of ``Client`` and ``LocalCluster``.

The plotting library (plotly) is imported only by what draws.
"""
