"""The coordination primitives with an asynchronous client, and their errors."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from shoal import Client, Event, Lock, Pub, Queue, Semaphore, Sub, Variable
from shoal.coordination.values import encode
from shoal.errors import CommError, SerializeError
from shoal.protocol.serialize import dumps, loads


def inc(x: int) -> int:
    return x + 1


async def forgotten(s: Any, key: Any) -> None:
    """Wait (up to 2 s) until the scheduler forgot ``key``."""
    for _ in range(100):
        if key not in s.state.tasks:
            return
        await asyncio.sleep(0.02)
    assert key not in s.state.tasks


async def test_variable_set_get_delete(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    v = Variable("v", client=c)
    getter = asyncio.ensure_future(v.get())  # waits for a value
    await asyncio.sleep(0.05)
    assert not getter.done()
    await v.set({"a": [1, 2]})
    assert await getter == {"a": [1, 2]}
    await v.set("replaced")
    assert await Variable("v", client=c).get() == "replaced"
    await v.delete()
    with pytest.raises(TimeoutError, match=r"Variable .v. had no value within 0\.1 s"):
        await v.get(timeout=0.1)


async def test_futures_nested_in_a_variable_value_come_back_as_futures(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    futures = c.map(inc, range(3))
    keys = [f.key for f in futures]
    await Variable("nested", client=c).set({"results": futures, "note": "three"})
    del futures
    gc.collect()
    await asyncio.sleep(0.1)
    assert all(k in s.state.tasks for k in keys)
    value = await Variable("nested", client=c).get()
    assert value["note"] == "three"
    assert await c.gather(value["results"]) == [1, 2, 3]


async def test_queue_put_get_batch_and_timeouts(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, s, _ = c_s_ws
    q = Queue("jobs", client=c, maxsize=2)
    await q.put(1)
    await q.put(c.submit(inc, 1))
    assert await q.qsize() == 2
    with pytest.raises(TimeoutError, match=r"Queue 'jobs' stayed full \(2 items\) for 0.1 s"):
        await q.put(3, timeout=0.1)
    first, second = await q.get(batch=True)
    assert first == 1
    assert await second == 2
    assert await q.get(batch=True) == []
    with pytest.raises(TimeoutError, match=r"Queue .jobs. had no item to get within 0\.1 s"):
        await q.get(timeout="100ms")  # durations as distributed writes them
    taker = asyncio.ensure_future(q.get(batch=2))
    await q.put("a")
    await asyncio.sleep(0.05)
    assert not taker.done()
    await q.put("b")
    assert await taker == ["a", "b"]
    with pytest.raises(ValueError, match="maxsize must be an int >= 0"):
        Queue("bad", client=c, maxsize=-1)


async def test_a_future_put_into_a_queue_lives_until_taken(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    q = Queue("keep", client=c)
    fut = c.submit(inc, 10)
    key = fut.key
    await q.put(fut)
    del fut
    gc.collect()
    await asyncio.sleep(0.1)
    assert key in s.state.tasks
    got = await q.get()
    assert await got == 11
    del got
    gc.collect()
    await forgotten(s, key)


async def test_lock_errors_and_non_blocking_acquire(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    mine = Lock("l", client=c)
    theirs = Lock("l", client=c)
    assert await mine.acquire()
    assert await mine.locked()
    assert await theirs.acquire(blocking=False) is False
    assert await theirs.acquire(timeout=0.05) is False
    with pytest.raises(RuntimeError, match="Lock 'l' released by a holder that did not acquire"):
        theirs.release()
    waiter = asyncio.ensure_future(theirs.acquire())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await mine.release()
    assert await waiter is True
    await theirs.release()
    assert not await mine.locked()
    with pytest.raises(ValueError, match="non-blocking"):
        mine.acquire(blocking=False, timeout=1)


async def test_semaphore_counts_and_errors(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    sem = Semaphore(max_leases=2, name="s", client=c)
    async with sem:
        assert await sem.acquire()
        assert await sem.get_value() == 2
        assert await Semaphore(max_leases=2, name="s", client=c).acquire(timeout=0.05) is False
        assert await sem.release() is True
    assert await sem.get_value() == 0
    with pytest.raises(RuntimeError, match=r"Released too often: this Semaphore \('s'\)"):
        sem.release()
    with pytest.raises(ValueError, match="exists with max_leases=2, not 3"):
        await Semaphore(max_leases=3, name="s", client=c).acquire()
    with pytest.raises(ValueError, match="max_leases must be a positive int"):
        Semaphore(max_leases=0)


async def test_event_set_wait_clear(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    ev = Event("e", client=c)
    assert await ev.is_set() is False
    assert await ev.wait(timeout=0.05) is False
    waiter = asyncio.ensure_future(Event("e", client=c).wait())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await ev.set()
    assert await waiter is True
    assert await ev.wait() is True
    await ev.clear()
    assert await ev.is_set() is False


async def test_pub_sub_in_order_and_only_after_subscribing(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, _, _ = c_s_ws
    pub = Pub("news", client=c)
    await pub.put("before anyone listens")
    sub1 = await Sub("news", client=c)
    sub2 = await Sub("news", client=c)
    for i in range(5):
        pub.put(i)  # sent in order in the background
    assert [await sub1.get(timeout=5) for _ in range(5)] == list(range(5))
    got = []
    async for msg in sub2:
        got.append(msg)
        if len(got) == 5:
            break
    assert got == list(range(5))
    with pytest.raises(TimeoutError, match=r"nothing was published on .news. within 0\.05 s"):
        await sub1.get(timeout=0.05)
    with pytest.raises(TypeError, match="carries plain values, not Futures"):
        pub.put(c.submit(inc, 1))
    await sub1.close()
    with pytest.raises(RuntimeError, match="this Sub is closed"):
        sub1.get()


async def test_a_client_that_leaves_gives_back_its_leases(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    async with Client(s.address, asynchronous=True) as other:
        assert await Lock("left", client=other).acquire()
        assert await Lock("left", client=c).locked()
    # the other client said goodbye: its lease went with it
    assert await Lock("left", client=c).acquire(timeout=5)


async def test_a_future_can_not_be_pickled_outside_a_primitive(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, _, _ = c_s_ws
    fut = c.submit(inc, 1)
    with pytest.raises(SerializeError, match="can't be pickled"):
        dumps({"inside": [fut]})


async def test_values_that_can_not_be_stored_say_why(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    fut = c.submit(inc, 1)
    await c.cancel([fut])
    with pytest.raises(ValueError, match="is cancelled: it can't be stored in a Variable"):
        Variable("cancelled", client=c).set(fut)
    with pytest.raises(ValueError, match="batch must be True, False or an int >= 0"):
        Queue("q", client=c).get(batch=-1)
    with pytest.raises(TypeError, match="a timeout is a number of seconds or None"):
        Event("e", client=c).wait(timeout=True)
    # a stored future can't be unpickled except through the primitive
    data, keys = encode(c, [c.submit(inc, 2)], "Variable")
    assert len(keys) == 1
    with pytest.raises(SerializeError, match="can only be read back through them"):
        loads(data)


async def test_dataset_misuse_says_what_to_do(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    with pytest.raises(ValueError, match=r"publish several as keywords: publish_dataset\(a=a"):
        await c.publish_dataset(1, 2, name="two")
    with pytest.raises(ValueError, match="needs the value"):
        await c.publish_dataset(name="nothing")
    with pytest.raises(ValueError, match="needs something to publish"):
        await c.publish_dataset()
    with pytest.raises(RuntimeError, match=r"client\.datasets is for synchronous clients"):
        _ = c.datasets
    assert await c.get_dataset("absent", default="fallback") == "fallback"


async def test_a_cancelled_wait_takes_nothing(c_s_ws: tuple[Client, Any, list[Any]]) -> None:
    c, _, _ = c_s_ws
    q = Queue("cancelled-get", client=c)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), 0.1)  # cancels the get
    await asyncio.sleep(0.05)  # the cancellation reaches the scheduler
    await q.put("kept")
    assert await q.get(timeout=5) == "kept"

    holder = Lock("cancelled-acquire", client=c)
    assert await holder.acquire()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(Lock("cancelled-acquire", client=c).acquire(), 0.1)
    await asyncio.sleep(0.05)
    await holder.release()
    # the cancelled acquire did not take the freed lease
    assert await Lock("cancelled-acquire", client=c).acquire(timeout=5)

    sub = await Sub("cancelled-sub", client=c)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.get(), 0.1)
    await asyncio.sleep(0.05)
    await Pub("cancelled-sub", client=c).put("still here")
    assert await sub.get(timeout=5) == "still here"


async def test_a_future_put_twice_lives_until_both_are_taken(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    q = Queue("twice", client=c)
    fut = c.submit(inc, 20)
    key = fut.key
    await q.put(fut)
    await q.put([fut])
    del fut
    gc.collect()
    first = await q.get()
    assert await first == 21
    del first
    gc.collect()
    await asyncio.sleep(0.1)
    assert key in s.state.tasks  # the second item still holds it
    [second] = await q.get()
    assert await second == 21
    del second
    gc.collect()
    await forgotten(s, key)


async def test_a_new_value_releases_the_future_of_the_old_one(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    v = Variable("replaced", client=c)
    fut = c.submit(inc, 30)
    key = fut.key
    await v.set(fut)
    del fut
    gc.collect()
    await v.set("plain now")
    await forgotten(s, key)
    assert await v.get() == "plain now"


async def test_a_client_that_leaves_stops_waiting_for_an_event(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    sync = s.hooks.plugins["shoal-coordination"].sync
    async with Client(s.address, asynchronous=True) as other:
        waiter = asyncio.ensure_future(Event("left-waiting", client=other).wait())
        for _ in range(200):
            if "left-waiting" in sync.events and len(sync.events["left-waiting"].waiters):
                break
            await asyncio.sleep(0.01)
        assert len(sync.events["left-waiting"].waiters) == 1
    # the client said goodbye: the scheduler no longer waits for it (nor keeps the event)
    for _ in range(200):
        if "left-waiting" not in sync.events:
            break
        await asyncio.sleep(0.01)
    assert "left-waiting" not in sync.events
    with pytest.raises(CommError):  # its own call ended when it closed
        await asyncio.wait_for(waiter, 5)


async def test_releasing_a_lease_that_expired_returns_false(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, s, _ = c_s_ws
    sync = s.hooks.plugins["shoal-coordination"].sync
    sync.lease_timeout = 0.25  # holders refresh every 0.05 s
    holder = Lock("expires", client=c)
    assert await holder.acquire()
    # the scheduler took the holder for dead (its refreshes were late): the lease goes
    sync.expire_leases(asyncio.get_running_loop().time() + 3600)
    assert await Lock("expires", client=c).acquire(timeout=5)  # someone else takes it
    await asyncio.sleep(0.3)  # the holder's next refresh hears that its lease is gone
    assert await holder.release() is False  # not "released too often"
    with pytest.raises(RuntimeError, match="did not acquire it"):
        await holder.release()


async def test_a_batch_larger_than_maxsize_and_a_batch_that_times_out(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    c, _, _ = c_s_ws
    q = Queue("small", client=c, maxsize=2)
    taker = asyncio.ensure_future(q.get(batch=5, timeout=30))
    for i in range(5):  # each put waits for room, which the taker makes
        await q.put(i, timeout=30)
    assert await taker == [0, 1, 2, 3, 4]
    await q.put("x")
    await q.put("y")
    with pytest.raises(TimeoutError, match=r"fewer than 3 items to get within 0\.1 s"):
        await q.get(batch=3, timeout=0.1)
    # the get that timed out took nothing: the items are there, in order
    assert await q.qsize() == 2
    assert await q.get(batch=True) == ["x", "y"]


async def test_a_waiter_woken_by_set_returns_true_even_if_cleared_at_once(
    c_s_ws: tuple[Client, Any, list[Any]],
) -> None:
    from shoal.coordination.messages import EventClear, EventSet

    c, s, _ = c_s_ws
    sync = s.hooks.plugins["shoal-coordination"].sync
    waiter = asyncio.ensure_future(Event("pulse", client=c).wait(timeout=30))
    for _ in range(200):
        if "pulse" in sync.events and len(sync.events["pulse"].waiters):
            break
        await asyncio.sleep(0.01)
    # set then clear before the woken waiter runs again (as threading.Event.wait)
    await sync.event_set(s, EventSet("pulse"))
    await sync.event_clear(s, EventClear("pulse"))
    assert await waiter is True
    assert await Event("pulse", client=c).is_set() is False
