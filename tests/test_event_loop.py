"""shoal's own event loops: uvloop's where installed (``event-loop: auto``), else asyncio's."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest

from shoal import Client, LocalCluster, _loop, config

uvloop = pytest.importorskip("uvloop")


def kind(loop: asyncio.AbstractEventLoop) -> str:
    try:
        return type(loop).__module__.split(".")[0]
    finally:
        loop.close()


def test_auto_picks_uvloop_and_asyncio_can_be_asked_for(fresh_config: pytest.MonkeyPatch) -> None:
    assert kind(_loop.new_event_loop()) == "uvloop"
    fresh_config.setenv("SHOAL_EVENT_LOOP", "asyncio")
    config.refresh()
    assert kind(_loop.new_event_loop()) == "asyncio"
    fresh_config.setenv("SHOAL_EVENT_LOOP", "trio")
    config.refresh()
    with pytest.raises(ValueError, match="event-loop must be one of auto, uvloop, asyncio"):
        _loop.new_event_loop()


def test_without_uvloop_auto_falls_back_and_uvloop_says_what_to_do(
    fresh_config: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    fresh_config.setattr(builtins, "__import__", no_uvloop)
    assert kind(_loop.new_event_loop()) == "asyncio"
    fresh_config.setenv("SHOAL_EVENT_LOOP", "uvloop")
    config.refresh()
    with pytest.raises(ImportError, match="pip install uvloop"):
        _loop.new_event_loop()


def test_run_returns_the_coroutines_value_on_the_chosen_loop() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert _loop.run(which()) == "uvloop"


async def loop_kind() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_worker_processes_and_the_client_thread_run_on_uvloop() -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        assert list(client.run(loop_kind).values()) == ["uvloop"]  # the worker's loop
        assert list(client.run(loop_kind, nanny=True).values()) == ["uvloop"]  # ours
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3
