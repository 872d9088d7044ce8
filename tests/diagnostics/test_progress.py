"""shoal.progress on real clusters: terminal bars written to a stream, in every mode."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from typing import Any

import dask.array as da
import pytest

from shoal import Client, futures_of, progress, wait
from shoal.diagnostics.progress import ProgressBar


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


def final_lines(text: str) -> dict[str, str]:
    """The last state drawn of each bar, by description (tqdm redraws with \\r)."""
    last: dict[str, str] = {}
    for chunk in re.split(r"[\r\n]", text):
        chunk = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", chunk).strip()
        if "|" in chunk:
            head = chunk.split("|")[0]
            last[head.rsplit(":", 1)[0].strip() if ":" in head else ""] = chunk
    return last


def test_blocks_until_done_and_ends_at_100_percent(client: Client) -> None:
    futures = client.map(inc, range(12))
    out = io.StringIO()
    assert progress(futures, file=out) is None
    assert all(f.done() for f in futures)  # it blocked until the end
    (line,) = final_lines(out.getvalue()).values()
    assert "100%" in line
    assert "12/12" in line


def test_one_bar_per_prefix_or_one_in_all(client: Client) -> None:
    futures = client.map(inc, range(5)) + client.map(double, range(3))
    out = io.StringIO()
    progress(futures, file=out)
    lines = final_lines(out.getvalue())
    assert "5/5" in lines["inc"] and "100%" in lines["inc"]
    assert "3/3" in lines["double"] and "100%" in lines["double"]

    out = io.StringIO()
    progress(futures, multi=False, file=out)
    (line,) = final_lines(out.getvalue()).values()
    assert "8/8" in line


def test_persisted_collection(client: Client) -> None:
    x = (da.ones(40, chunks=10) + 1).persist()
    out = io.StringIO()
    progress(x, file=out)
    (line,) = final_lines(out.getvalue()).values()
    assert "4/4" in line and "100%" in line
    assert len(futures_of(x)) == 4


def test_complete_false_counts_only_what_was_left(client: Client) -> None:
    futures = client.map(inc, range(100, 104))
    wait(futures)
    out = io.StringIO()
    progress(futures, complete=False, file=out)
    (line,) = final_lines(out.getvalue()).values()
    assert "0/0" in line


def test_erred_future_is_marked_and_progress_returns(client: Client) -> None:
    futures = [client.submit(boom, 1), *client.map(inc, range(200, 203))]
    out = io.StringIO()
    done = threading.Event()

    def run() -> None:
        progress(futures, file=out)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(30), "progress hung on an erred future"
    lines = final_lines(out.getvalue())
    assert "1 erred" in lines["boom"]
    assert "0/1" in lines["boom"]  # an error is noted, not counted as done


RELEASE = threading.Event()


def slow(x: int) -> int:
    RELEASE.wait(30)
    return x


def test_notebook_mode_returns_at_once_and_updates_in_background(client: Client) -> None:
    futures = client.map(slow, range(3))
    out = io.StringIO()
    bar = progress(futures, notebook=True, file=out)
    assert isinstance(bar, ProgressBar)
    assert bar.status == "running"  # returned before the futures finished
    RELEASE.set()
    assert bar.wait(30)
    assert bar.status == "finished"
    (line,) = final_lines(out.getvalue()).values()
    assert "3/3" in line


async def test_async_client_does_not_block(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    futures = c.map(inc, range(6))
    await c.gather(futures)
    more = c.map(double, range(4))
    out = io.StringIO()
    bar = progress(futures + more, file=out, interval=0.02)
    assert isinstance(bar, ProgressBar)
    await asyncio.wait_for(bar, 30)
    assert bar.status == "finished"
    lines = final_lines(out.getvalue())
    assert "6/6" in lines["inc"] and "4/4" in lines["double"]


async def test_async_client_error(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    out = io.StringIO()
    bar = progress(c.submit(boom, 5), file=out, interval=0.02)
    assert bar is not None
    await asyncio.wait_for(bar, 30)
    assert bar.status == "error"
    assert "1 erred" in out.getvalue()


def test_bad_arguments_say_what_to_do(client: Client) -> None:
    with pytest.raises(ValueError, match="persist"):
        progress(da.ones(10, chunks=5))
    with pytest.raises(ValueError, match="needs futures"):
        progress()
    with pytest.raises(ValueError, match="prefix"):
        progress(client.submit(inc, 1), group_by="spans")
    for interval in (0, -1, "-1s"):  # it would poll in a busy loop, or not at all
        with pytest.raises(ValueError, match="interval must be a positive time"):
            progress(client.submit(inc, 1), interval=interval)
