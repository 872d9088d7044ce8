"""Actors on worker processes: calls go straight to the worker, never to the scheduler.

Worker processes can't import this test module, so the actor classes are made by
functions (local classes travel by value) and tasks are lambdas.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from shoal import Actor, ActorFuture, ActorLost, Client, LocalCluster, get_worker


def make_counter() -> type:
    class Counter:
        n = 0

        def __init__(self, marker: str | None = None) -> None:
            self.n = 0
            self.marker = marker

        def increment(self, by: int = 1) -> int:
            self.n += by
            return self.n

        def fail(self) -> None:
            raise ValueError("the actor's method failed")

        def where(self) -> str:
            return str(get_worker().address)

        def twice(self, me: Any) -> int:
            # calls its own actor through a proxy: made directly, not queued behind
            # this very call on the actor's thread
            me.increment().result()
            return int(me.increment().result()) + int(me.n)

        def __del__(self) -> None:
            if self.marker:
                Path(self.marker).write_text(str(self.n))

    return Counter


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_counter_called_1000_times_straight_on_its_worker(
    c: Client, process_cluster: LocalCluster
) -> None:
    fut = c.submit(make_counter(), actor=True)
    counter = fut.result()
    assert isinstance(counter, Actor)
    assert [counter._address] == c.who_has([fut])[fut.key]
    assert counter.where().result() == counter._address
    s = process_cluster.scheduler
    assert s is not None
    tasks, transitions = len(s.state.tasks), len(s.state.transition_log)
    calls = [counter.increment() for _ in range(1000)]
    assert all(isinstance(f, ActorFuture) for f in calls)
    assert sorted(f.result(timeout=30) for f in calls) == list(range(1, 1001))
    assert counter.n == 1000  # attribute reads return the value
    # the scheduler saw neither a task nor a transition for any of those calls
    assert (len(s.state.tasks), len(s.state.transition_log)) == (tasks, transitions)
    # the value never left its worker: one holder, even when asked for copies
    c.replicate([fut], n=2)
    assert c.who_has([fut])[fut.key] == [counter._address]


def test_actor_calling_itself_through_a_proxy(c: Client) -> None:
    counter = c.submit(make_counter(), actor=True).result()
    assert counter.twice(counter).result(timeout=10) == 4


def test_map_makes_one_actor_per_item(c: Client) -> None:
    counters = c.gather(c.map(make_counter(), [None, None, None], actor=True))
    assert len({a.key for a in counters}) == 3
    assert [a.increment(i).result() for i, a in enumerate(counters)] == [0, 1, 2]
    assert [a.n for a in counters] == [0, 1, 2]  # each kept its own state


def test_bad_calls_raise_clear_errors(c: Client) -> None:
    counter = c.submit(make_counter(), actor=True).result()
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        counter.nope()
    with pytest.raises(AttributeError, match="has no attribute 'marker'"):
        _ = counter.marker  # set in __init__ only: not declared in the class body
    with pytest.raises(ValueError, match="the actor's method failed"):
        counter.fail().result()
    with pytest.raises(AttributeError, match="actor proxy"):
        counter.n = 3
    assert counter.increment(5).result() == 5  # still usable after the errors


def test_actor_used_from_other_tasks(c: Client) -> None:
    fut = c.submit(make_counter(), actor=True)
    counter = fut.result()

    def bump(actor: Any, by: int) -> int:
        return int(actor.increment(by).result())

    # as a dependency (the task gets a proxy fetched from the actor's worker) ...
    via_future = c.map(bump, [fut] * 5, range(1, 6), pure=False)
    assert max(c.gather(via_future)) == 1 + 2 + 3 + 4 + 5  # each call saw the others
    # ... and as a proxy among the arguments
    assert c.submit(bump, counter, 100, pure=False).result() == 115
    assert counter.n == 115
    # the proxies fetched by those tasks are not copies of the actor
    assert c.who_has([fut])[fut.key] == [counter._address]


def test_actor_released_with_its_last_reference(c: Client, tmp_path: Path) -> None:
    marker = tmp_path / "deleted"
    fut = c.submit(make_counter(), str(marker), actor=True)
    counter = fut.result()
    assert counter.increment().result() == 1

    def held() -> int:
        return len(get_worker().actors)

    assert sum(c.run(held).values()) == 1
    del fut  # the proxy still holds the actor
    gc.collect()
    time.sleep(0.2)
    assert counter.increment().result() == 2
    assert sum(c.run(held).values()) == 1
    del counter
    gc.collect()
    _wait_for(marker.exists)  # the object's __del__ ran on its worker
    assert marker.read_text() == "2"
    assert sum(c.run(held).values()) == 0


def test_a_worker_that_no_longer_holds_the_actor_says_so(c: Client) -> None:
    counter = c.submit(make_counter(), actor=True).result()
    key = counter.key
    c.run(lambda: get_worker().actors.discard([key]), workers=[counter._address])
    with pytest.raises(ActorLost, match="does not hold actor"):
        counter.increment().result()


def test_killed_worker_raises_actor_lost_and_its_future_errs() -> None:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        fut = c.submit(make_counter(), actor=True)
        counter = fut.result()
        assert counter.increment(7).result() == 7
        pid = c.run(os.getpid)[counter._address]
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ActorLost, match="can't be reached"):
            counter.increment().result(timeout=30)
        assert time.monotonic() - started < 30
        # as in distributed, a lost actor is not made again (its state is gone): its
        # future errs with ActorLost, and so does every later call through its proxies
        _wait_for(lambda: fut.status == "error", timeout=30)
        with pytest.raises(ActorLost, match="was lost"):
            fut.result(timeout=30)
        with pytest.raises(ActorLost, match="was lost"):
            counter.increment()
        # a new actor can be made on the workers left
        again = c.submit(make_counter(), actor=True).result()
        assert again.increment().result(timeout=30) == 1


async def test_async_client_awaits_calls_and_attributes() -> None:
    from shoal.testing.cluster import cluster

    class Account:
        balance = 0

        def deposit(self, amount: int) -> int:
            self.balance += amount
            return self.balance

        async def adeposit(self, amount: int) -> int:
            self.balance += amount
            return self.balance

    async with (
        cluster(n_workers=1, nthreads=1) as (s, ws),
        Client(s.address, asynchronous=True) as c,
    ):
        account = await c.submit(Account, actor=True)
        assert await account.deposit(10) == 10
        assert await account.adeposit(5) == 15  # an async def method, on the worker's loop
        assert await account.balance == 15
        with pytest.raises(AttributeError, match="has no attribute 'withdraw'"):
            account.withdraw(3)
        assert len(ws[0].actors) == 1
