"""The cluster the actor, plugin and upload tests share: two worker processes (one per
test module), and a fresh client for each test."""

from __future__ import annotations

import pytest

from shoal import Client


@pytest.fixture
def c(process_client: Client) -> Client:
    """A client of the module's two worker processes (``process_cluster``)."""
    return process_client
