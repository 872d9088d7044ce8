"""The Jupyter summaries of Client and LocalCluster."""

from __future__ import annotations

import re
from typing import Any

from shoal import Client, LocalCluster
from shoal.diagnostics.html import Link, summary_table


def cell(html: str, label: str) -> str:
    m = re.search(rf"<th[^>]*>{label}</th><td[^>]*>(.*?)</td>", html)
    assert m is not None, f"no {label} row in {html}"
    return m.group(1)


def test_client_summary(client: Client, local_cluster: LocalCluster) -> None:
    html = client._repr_html_()
    assert cell(html, "Scheduler") == client.scheduler_address
    assert cell(html, "Status") == "running"
    assert cell(html, "Workers") == "2"
    assert cell(html, "Threads") == "4"
    assert "B" in cell(html, "Memory")  # formatted bytes, e.g. "3.91 GiB"
    assert cell(html, "Cluster") == "LocalCluster"
    link = client.dashboard_link  # LocalCluster serves a dashboard by default
    assert link is not None
    assert cell(html, "Dashboard") == f'<a href="{link}" target="_blank">{link}</a>'
    # the plain repr is unchanged
    assert repr(client) == f"<Client: scheduler={client.scheduler_address!r} status=running>"


def test_cluster_summary(local_cluster: LocalCluster) -> None:
    html = local_cluster._repr_html_()
    assert local_cluster.name in html
    assert cell(html, "Scheduler") == local_cluster.scheduler_address
    assert cell(html, "Workers") == "2"
    assert cell(html, "Threads") == "4"
    assert cell(html, "Processes") == "no (threads)"
    assert f'href="{local_cluster.dashboard_link}"' in cell(html, "Dashboard")
    assert repr(local_cluster).startswith("LocalCluster(")


async def test_async_client_summary_does_not_block(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    html = c._repr_html_()  # called on the event loop: must not wait for the scheduler
    assert cell(html, "Scheduler") == s.address
    assert "Workers" not in html


def test_closed_client(local_cluster: LocalCluster) -> None:
    c = Client(local_cluster, set_as_default=False)
    c.close()
    html = c._repr_html_()
    assert cell(html, "Status") == "closed"
    assert "Workers" not in html  # a closed client asks nothing


def test_values_are_escaped() -> None:
    html = summary_table("<T>", [("a<", "<script>x</script>"), ("link", Link("http://h/?a=1&b=2"))])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;T&gt;" in html and "a&lt;" in html
    assert 'href="http://h/?a=1&amp;b=2"' in html
