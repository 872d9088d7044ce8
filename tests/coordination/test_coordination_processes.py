"""Coordination across processes: tasks on two worker processes and the client share
Queues, Locks, Semaphores, Events, Pub/Sub and Variables through the scheduler."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal import Client, Event, LocalCluster, Lock, Pub, Queue, Semaphore, Sub, Variable


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A synchronous client of two worker processes with two threads each."""
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, processes=True, nanny=False) as lc,
        Client(lc) as c,
    ):
        yield c


def pid() -> int:
    return os.getpid()


# --------------------------------------------------------------------------- Queue


def produce(name: str, start: int, n: int) -> int:
    q = Queue(name)
    for i in range(start, start + n):
        q.put(i)
    return n


def consume(name: str, n: int) -> list[int]:
    q = Queue(name)
    return [q.get(timeout=30) for _ in range(n)]


def test_producer_and_consumer_tasks_share_a_queue(client: Client) -> None:
    consumers = [client.submit(consume, "pc", 10, pure=False) for _ in range(2)]
    producers = [client.submit(produce, "pc", i * 10, 10, pure=False) for i in range(2)]
    assert client.gather(producers) == [10, 10]
    got = client.gather(consumers)
    assert sorted(got[0] + got[1]) == list(range(20))
    # each producer's items come out in the order it put them
    for items in got:
        for start in (0, 10):
            mine = [i for i in items if start <= i < start + 10]
            assert mine == sorted(mine)
    assert Queue("pc", client=client).qsize() == 0


def put_future_of_task(name: str) -> str:
    from shoal import get_client

    c = get_client()
    fut = c.submit(pid, pure=False)
    Queue(name).put(fut)
    return str(fut.key)


def test_a_future_put_by_a_task_is_taken_out_by_the_client(client: Client) -> None:
    key = client.submit(put_future_of_task, "futures-q", pure=False).result()
    fut = Queue("futures-q", client=client).get(timeout=30)
    assert fut.key == key
    assert isinstance(fut.result(), int)


# --------------------------------------------------------------------------- Lock


def locked_increment(path: str) -> int:
    with Lock("counter-file"):
        value = int(Path(path).read_text())
        time.sleep(0.005)  # widen the read-modify-write window
        Path(path).write_text(str(value + 1))
    return os.getpid()


def test_a_lock_guards_a_counter_file_written_by_20_tasks_on_2_processes(
    client: Client, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    pids = client.gather(
        [client.submit(locked_increment, str(counter), pure=False) for _ in range(20)]
    )
    assert int(counter.read_text()) == 20
    assert len(set(pids)) == 2  # both worker processes took part
    assert not Lock("counter-file", client=client).locked()


# --------------------------------------------------------------------------- Semaphore


def limited(path: str, i: int) -> None:
    with Semaphore(max_leases=2, name="two-at-a-time"):
        with open(path, "a") as f:
            f.write(f"{time.time()!r} 1 {i}\n")
        time.sleep(0.1)
        with open(path, "a") as f:
            f.write(f"{time.time()!r} -1 {i}\n")


def test_a_semaphore_with_two_leases_lets_two_tasks_in_at_a_time(
    client: Client, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    log.touch()
    client.gather([client.submit(limited, str(log), i, pure=False) for i in range(12)])
    events = sorted(
        (float(t), int(d)) for t, d, _ in (line.split() for line in log.read_text().splitlines())
    )
    assert len(events) == 24
    inside = peak = 0
    for _, d in events:
        inside += d
        peak = max(peak, inside)
    assert 1 <= peak <= 2
    assert Semaphore(max_leases=2, name="two-at-a-time", client=client).get_value() == 0


def hold_a_lease_until(event: str) -> None:
    with Semaphore(max_leases=2, name="held-leases"):
        Queue("entered").put(os.getpid())
        assert Event(event).wait(30)


def test_a_third_task_waits_while_two_hold_the_leases(client: Client) -> None:
    futures = [client.submit(hold_a_lease_until, "leave", pure=False) for _ in range(3)]
    entered = Queue("entered", client=client)
    assert len(entered.get(batch=2, timeout=30)) == 2  # two tasks inside at once
    sem = Semaphore(max_leases=2, name="held-leases", client=client)
    assert sem.get_value() == 2
    with pytest.raises(TimeoutError):
        entered.get(timeout=0.5)  # the third is kept out
    Event("leave", client=client).set()
    assert isinstance(entered.get(timeout=30), int)  # now it gets in
    client.gather(futures)
    assert sem.get_value() == 0


# --------------------------------------------------------------------------- Event


def wait_for(name: str, timeout: float | None) -> bool:
    return bool(Event(name).wait(timeout))


def test_tasks_wait_for_an_event_set_by_the_client_and_see_it_cleared(client: Client) -> None:
    go = Event("go", client=client)
    waiting = [client.submit(wait_for, "go", None, pure=False) for _ in range(3)]
    assert not any(f.done() for f in waiting)
    go.set()
    assert client.gather(waiting) == [True, True, True]
    assert go.is_set()
    go.clear()
    assert not go.is_set()
    assert client.submit(wait_for, "go", 0.2, pure=False).result() is False


def set_event(name: str) -> None:
    Event(name).set()


def test_a_task_sets_an_event_the_client_waits_for(client: Client) -> None:
    client.submit(set_event, "from-task", pure=False)
    assert Event("from-task", client=client).wait(timeout=30)


# --------------------------------------------------------------------------- Pub/Sub


def publish(topic: str, i: int) -> None:
    Pub(topic).put({"task": i, "pid": os.getpid()})


def test_tasks_publish_to_a_client_subscriber(client: Client) -> None:
    sub = Sub("progress", client=client)
    client.gather([client.submit(publish, "progress", i, pure=False) for i in range(10)])
    got = [sub.get(timeout=30) for _ in range(10)]
    assert sorted(m["task"] for m in got) == list(range(10))
    with pytest.raises(TimeoutError, match="nothing was published on 'progress'"):
        sub.get(timeout=0.1)
    sub.close()


def subscribe_then_receive(topic: str, ready: str, n: int) -> list[str]:
    sub = Sub(topic)
    Event(ready).set()
    return [sub.get(timeout=30) for _ in range(n)]


def test_the_client_publishes_to_a_task_subscriber(client: Client) -> None:
    fut = client.submit(subscribe_then_receive, "orders", "subscribed", 3, pure=False)
    assert Event("subscribed", client=client).wait(timeout=30)
    pub = Pub("orders", client=client)
    for word in ("a", "b", "c"):
        pub.put(word)
    assert fut.result() == ["a", "b", "c"]


# --------------------------------------------------------------------------- Variable


def value_of(name: str) -> int:
    return int(Variable(name).get(timeout=30).result())


def test_a_variable_keeps_its_future_alive_after_the_client_drops_it(client: Client) -> None:
    fut = client.submit(pid, pure=False)
    key = fut.key
    Variable("held", client=client).set(fut)
    del fut
    gc.collect()
    time.sleep(0.2)  # the release has reached the scheduler
    assert key in client.who_has()
    # a task in a worker process reads the value through the Variable
    assert isinstance(client.submit(value_of, "held", pure=False).result(), int)
    again = Variable("held", client=client).get()
    assert again.key == key
    del again
    Variable("held", client=client).delete()
    gc.collect()
    deadline = time.monotonic() + 10
    while key in client.who_has() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key not in client.who_has()


# --------------------------------------------------------------------------- as arguments


def use_passed(lock: Lock, queue: Queue, variable: Variable, sem: Semaphore) -> str:
    with lock, sem:
        queue.put(variable.get(timeout=30) * 2)
    return "done"


def test_primitives_passed_to_tasks_reach_the_same_objects(client: Client) -> None:
    lock = Lock("passed-lock", client=client)
    queue = Queue("passed-queue", client=client)
    variable = Variable("passed-variable", client=client)
    sem = Semaphore(max_leases=3, name="passed-sem", client=client)
    variable.set(21)
    assert client.submit(use_passed, lock, queue, variable, sem, pure=False).result() == "done"
    assert queue.get(timeout=5) == 42
    assert not lock.locked()
    assert sem.get_value() == 0
