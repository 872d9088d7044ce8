"""Fixtures for the dashboard tests: real HTTP requests to a real scheduler."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

Response = tuple[int, str, str]  # status, content type, body


def get(url: str, timeout: float = 10) -> Response:
    """GET ``url``: (status, content type, body text), HTTP errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


@pytest.fixture
def get_url() -> Callable[[str], Response]:
    """``get_url(url)``: a blocking GET (for synchronous tests)."""
    return get


@pytest.fixture
def fetch() -> Callable[[str], Awaitable[Response]]:
    """``await fetch(url)``: a GET from a thread, so the scheduler's loop keeps serving."""

    async def fetch(url: str) -> Response:
        return await asyncio.to_thread(get, url)

    return fetch


@pytest.fixture
def fetch_json(
    fetch: Callable[[str], Awaitable[Response]],
) -> Callable[[str], Awaitable[Any]]:
    """``await fetch_json(url)``: the decoded JSON body of a 200 answer."""

    async def fetch_json(url: str) -> Any:
        status, ctype, body = await fetch(url)
        assert status == 200, (url, status, body)
        assert ctype.startswith("application/json"), ctype
        return json.loads(body)

    return fetch_json
