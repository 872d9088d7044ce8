"""Small results travel with the task's completion: the client reads them without asking
a worker (worker.inline-result-bytes); larger ones are fetched from the worker."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from shoal import Client
from shoal.protocol.messages import GetData
from shoal.worker.server import Worker


def make(n: int) -> bytes:
    return b"x" * n


def unpicklable() -> Any:
    return threading.Lock()


def count_get_data(workers: list[Worker]) -> list[int]:
    """Patch the workers to count the GetData requests they answer."""
    counts = [0]
    for w in workers:
        dispatch = w.dispatch

        async def counting(msg: Any, dispatch: Any = dispatch) -> Any:
            if isinstance(msg, GetData):
                counts[0] += 1
            return await dispatch(msg)

        w.dispatch = counting  # type: ignore[method-assign]
    return counts


async def test_a_small_result_needs_no_request_to_a_worker(
    c_s_ws: tuple[Client, Any, list[Worker]],
) -> None:
    c, _, workers = c_s_ws
    gets = count_get_data(workers)
    small = c.submit(make, 100)
    assert await small == b"x" * 100
    assert await c.gather(c.map(make, range(50))) == [b"x" * i for i in range(50)]
    assert gets[0] == 0
    big = c.submit(make, 10_000)
    assert await big == b"x" * 10_000
    assert gets[0] == 1  # too large to ride along: read from the worker that holds it


async def test_an_unpicklable_small_result_still_fails_clearly(
    c_s_ws: tuple[Client, Any, list[Worker]],
) -> None:
    c, _, _ = c_s_ws
    f = c.submit(unpicklable)
    with pytest.raises(Exception, match="could not serialize"):
        await f
