"""The task stream's ring of columns, on plain data."""

from __future__ import annotations

import pytest

from shoal.scheduler.task_stream import TaskStream


def _fill(stream: TaskStream, n: int) -> None:
    for i in range(n):
        status = "error" if i % 3 == 0 else "OK"
        stream.add(f"inc-{i}", f"tcp://w{i % 2}", float(i), i + 0.5, status, 8 * i)


def test_records_come_back_as_added_until_the_ring_is_full() -> None:
    stream = TaskStream(5)
    _fill(stream, 3)
    count, records = stream.since(0)
    assert count == 3
    assert records[1] == {
        "key": "inc-1",
        "name": "inc",
        "worker": "tcp://w1",
        "start": 1.0,
        "stop": 1.5,
        "status": "OK",
        "nbytes": 8,
    }
    assert [r["status"] for r in records] == ["error", "OK", "OK"]


def test_a_full_ring_keeps_the_newest_runs_in_order() -> None:
    stream = TaskStream(4)
    _fill(stream, 11)
    count, records = stream.since(0)
    assert count == 11
    assert [r["key"] for r in records] == ["inc-7", "inc-8", "inc-9", "inc-10"]
    assert [r["key"] for r in stream.since(9)[1]] == ["inc-9", "inc-10"]
    assert stream.since(11) == (11, [])
    assert [r["key"] for r in stream.between(8.0, 9.0)] == ["inc-8"]
    assert [r["key"] for r in stream.between(9.0)] == ["inc-9", "inc-10"]
    assert stream.ended_since(8.0) == 3
    assert stream.ended_since(100.0) == 0


def test_a_zero_length_stream_only_counts() -> None:
    stream = TaskStream(0)
    _fill(stream, 3)
    assert stream.since(0) == (3, [])
    assert stream.ended_since(0.0) == 0


def test_a_bad_run_leaves_the_columns_aligned() -> None:
    stream = TaskStream(3)
    stream.add("huge-1", "tcp://w0", 0.0, 1.0, "OK", 2**70)  # clamped to the column's range
    with pytest.raises((TypeError, ValueError)):
        stream.add("bad-1", "tcp://w0", "not a time", 1.0, "OK")  # type: ignore[arg-type]
    stream.add("inc-2", "tcp://w1", 1.0, 2.0, "OK", 8)
    count, records = stream.since(0)
    assert count == 2
    assert [(r["key"], r["nbytes"]) for r in records] == [("huge-1", 2**63 - 1), ("inc-2", 8)]
