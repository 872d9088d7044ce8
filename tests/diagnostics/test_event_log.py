"""Structured events: log_event, get_events, subscriptions, and what the scheduler logs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shoal import Client
from shoal.testing.cluster import cluster


def boom(x: int) -> int:
    raise ValueError("boom")


async def until(condition: Callable[[], Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def actions(events: tuple[tuple[float, Any], ...]) -> list[Any]:
    return [msg for _, msg in events]


def test_log_and_get_events(client: Client) -> None:
    before = time.time()
    client.log_event("my-topic", {"x": 1, "items": [1, 2]})
    client.log_event(["my-topic", "other-topic"], "hello")
    events = client.get_events("my-topic")
    assert isinstance(events, tuple)
    assert [msg for _, msg in events] == [{"x": 1, "items": (1, 2)}, "hello"]
    assert all(before <= t <= time.time() for t, _ in events)
    everything = client.get_events()
    assert everything["other-topic"][0][1] == "hello"
    assert everything["my-topic"] == events
    assert client.get_events("never-logged") == ()


def test_bad_events_say_what_to_do(client: Client) -> None:
    with pytest.raises(TypeError, match="plain data"):
        client.log_event("t", object())
    with pytest.raises(TypeError, match="topic"):
        client.log_event(5, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topic"):
        client.log_event([], "x")
    with pytest.raises(TypeError, match="topic"):
        client.get_events(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        client.subscribe_topic("t", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not subscribed"):
        client.unsubscribe_topic("never-subscribed")


def test_sync_subscription(client: Client) -> None:
    got: list[Any] = []
    arrived = threading.Event()

    def handler(event: Any) -> None:
        got.append(event)
        arrived.set()

    client.subscribe_topic("sync-topic", handler)
    client.log_event("sync-topic", {"n": 1})
    assert arrived.wait(10)
    ((t, msg),) = got
    assert msg == {"n": 1} and isinstance(t, float)
    client.unsubscribe_topic("sync-topic")


async def test_scheduler_logs_joins_leaves_clients_and_errors() -> None:
    async with cluster(n_workers=2) as (s, ws):
        async with Client(s.address, asynchronous=True) as c:
            everything = actions(await c.get_events("all"))
            for w in ws:
                assert {"action": "add-worker", "worker": w.address} in everything
                assert actions(await c.get_events(w.address)) == [{"action": "add-worker"}]
            assert {"action": "add-client", "client": c.id} in everything
            assert actions(await c.get_events(c.id)) == [{"action": "add-client", "client": c.id}]

            f = c.submit(boom, 1, key="boom-key")
            with pytest.raises(ValueError, match="boom"):
                await f
            (erred,) = [
                m for m in actions(await c.get_events("all")) if m["action"] == "task-erred"
            ]
            assert erred["key"] == "boom-key"
            assert erred["worker"] in {w.address for w in ws}
            assert "ValueError: boom" in erred["exception"]
            worker_log = actions(await c.get_events(erred["worker"]))
            assert erred in worker_log

            gone = ws[1].address
            await ws[1].close()

            async def removed() -> bool:
                return any(
                    m == {"action": "remove-worker", "worker": gone, "reason": m.get("reason")}
                    for m in actions(await c.get_events("all"))
                )

            await until(removed)
            assert actions(await c.get_events(gone))[-1]["action"] == "remove-worker"

            other = await Client(s.address, asynchronous=True)
            other_id = other.id
            await other.close()

            async def client_left() -> bool:
                events = actions(await c.get_events(other_id))
                return {"action": "remove-client", "client": other_id} in events

            await until(client_left)


async def test_subscriptions_across_clients(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, s, _ = c_s_ws
    got: list[Any] = []
    got_async: list[Any] = []

    async def async_handler(event: Any) -> None:
        await asyncio.sleep(0)
        got_async.append(event)

    await c.subscribe_topic("news", got.append)
    await c.subscribe_topic("async-news", async_handler)
    async with Client(s.address, asynchronous=True) as other:
        await other.log_event("news", {"from": "other"})
        await other.log_event(["async-news", "unwatched"], 42)
    s.log_event("news", "from the scheduler")

    async def arrived() -> bool:
        return len(got) == 2 and len(got_async) == 1

    await until(arrived)
    assert [msg for _, msg in got] == [{"from": "other"}, "from the scheduler"]
    assert got_async[0][1] == 42
    # the times are the scheduler's, as in get_events
    assert [t for t, _ in got] == [t for t, _ in await c.get_events("news")]

    await c.unsubscribe_topic("news")
    await c.log_event("news", "after")
    await c.log_event("async-news", "still watched")

    async def second() -> bool:
        return len(got_async) == 2

    await until(second)
    assert len(got) == 2  # nothing after unsubscribing


async def test_plugin_task_failed_hook() -> None:
    from shoal.scheduler.plugins import SchedulerPlugin

    class Failures(SchedulerPlugin):
        def __init__(self) -> None:
            self.seen: list[tuple[Any, str, str]] = []

        def task_failed(
            self, scheduler: Any, key: Any, *, worker: str, exception_text: str, **kwargs: Any
        ) -> None:
            assert "Traceback" in kwargs["traceback_text"] or kwargs["traceback_text"] == ""
            self.seen.append((key, worker, exception_text))

    plugin = Failures()
    async with cluster(n_workers=1, scheduler_kwargs={"plugins": [plugin]}) as (s, ws):
        async with Client(s.address, asynchronous=True) as c:
            with pytest.raises(ValueError):
                await c.submit(boom, 2, key=("boom", 2))
    assert plugin.seen == [(("boom", 2), ws[0].address, "ValueError: boom")]


async def test_an_object_msgpack_cannot_send_arrives_as_its_repr(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    got: list[Any] = []
    await c.subscribe_topic("odd", got.append)
    s.log_event("odd", {1, 2})  # a scheduler plugin may log anything

    async def arrived() -> bool:
        return len(got) == 1

    await until(arrived)
    assert got[0][1] == repr({1, 2})
    assert actions(await c.get_events("odd")) == [repr({1, 2})]
    assert (await c.get_events())["odd"][0][1] == repr({1, 2})
    # the stream still works afterwards
    assert await c.submit(lambda: 7) == 7


async def test_the_event_log_adds_no_per_transition_hook() -> None:
    # watching every transition would cost microseconds per task; the event log hooks
    # only joins, leaves and failures
    async with cluster(n_workers=1) as (s, _):
        assert "shoal-event-log" in s.hooks.plugins
        assert s.state.transition_listener is None
