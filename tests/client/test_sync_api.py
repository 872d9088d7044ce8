"""The synchronous facade: same API, blocking calls."""

from __future__ import annotations

import threading
import time

import pytest

from shoal import as_completed, wait
from shoal.errors import FutureCancelledError


def inc(x: int) -> int:
    return x + 1


def test_result_and_timeout(client) -> None:
    assert client.submit(inc, 1).result(timeout=10) == 2
    slow = client.submit(__import__("time").sleep, 2, pure=False)
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.05)
    deadline = time.monotonic() + 10
    while slow._state.callbacks:  # the timed-out wait leaves no callback behind
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.cancel(slow)
    with pytest.raises(FutureCancelledError):
        slow.result()


def test_exception_and_traceback(client) -> None:
    fut = client.submit(int, "not a number")
    assert isinstance(fut.exception(), ValueError)
    assert fut.traceback() is not None
    with pytest.raises(ValueError, match="invalid literal"):
        fut.result()


def test_as_completed_sync(client) -> None:
    futures = client.map(inc, range(10))
    seen = [f.result() for f in as_completed(futures)]
    assert sorted(seen) == list(range(1, 11))
    pairs = list(as_completed(client.map(inc, range(3)), with_results=True))
    assert sorted(v for _, v in pairs) == [1, 2, 3]
    batches = list(as_completed(client.map(inc, range(5))).batches())
    assert sum(len(b) for b in batches) == 5


def test_wait_return_when(client) -> None:
    import time

    fast = client.submit(inc, 1)
    slow = client.submit(time.sleep, 1, pure=False)
    done, not_done = wait([fast, slow], return_when="FIRST_COMPLETED")
    assert fast in done
    assert slow in not_done


def test_wait_for_all_times_out_then_sees_every_future_done(client) -> None:
    import time

    futures = client.map(inc, range(50))
    wait(futures)
    slow = client.submit(time.sleep, 1, pure=False)
    with pytest.raises(TimeoutError, match=r"1 of 51 futures were not done after 0\.1 s"):
        wait([*futures, slow], timeout=0.1)
    done, not_done = wait([slow, *futures], timeout=10)
    assert done == {slow, *futures} and not not_done
    assert all(f.done() for f in done)


def test_result_with_no_time_left_still_raises_the_tasks_error(client) -> None:
    def fail() -> None:
        raise ValueError("boom")

    fut = client.submit(fail)
    wait([fut])
    with pytest.raises(ValueError, match="boom"):
        fut.result(timeout=0)


def test_done_callback_runs_in_a_thread(client) -> None:
    called = threading.Event()
    fut = client.submit(inc, 10)
    fut.add_done_callback(lambda f: called.set())
    assert called.wait(10)


def test_futures_can_not_be_pickled(client) -> None:
    import pickle

    fut = client.submit(inc, 3)
    with pytest.raises(TypeError, match="can't be pickled"):
        pickle.dumps(fut)


def test_connect_to_nothing_says_where_and_how_long() -> None:
    from shoal import Client
    from shoal.errors import ConnectTimeout
    from shoal.testing.cluster import shoal_threads

    before = set(shoal_threads())
    with pytest.raises(ConnectTimeout, match=r"127\.0\.0\.1:1"):
        Client("tcp://127.0.0.1:1", timeout=0.5)
    assert set(shoal_threads()) <= before
