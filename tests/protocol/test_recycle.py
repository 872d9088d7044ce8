"""Large receive buffers written again once nothing refers to them (protocol/recycle.py).

The pure part on plain mappings; then two workers in their own processes moving equal
arrays, where the second goes into the first one's memory only once it was freed.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

import numpy as np
import pytest

from shoal import Client, LocalCluster, wait
from shoal.protocol import frames
from shoal.protocol.recycle import Recycler, recycler

MIB = 1 << 20


@pytest.fixture
def on() -> Iterator[Recycler]:
    """This process's recycler, on for the test (off again after)."""
    recycler.enable(64 * MIB, keep_seconds=5.0)
    yield recycler
    recycler.enable(0)


def test_an_idle_buffer_of_the_same_size_is_handed_out_again(on: Recycler) -> None:
    first = frames.allocate(16 * MIB)
    assert isinstance(first, mmap.mmap)
    first_id = id(first)
    del first  # nothing refers to it but the recycler
    assert on.stats() == {"buffers": 1, "idle_bytes": 16 * MIB}
    again = frames.allocate(16 * MIB)
    assert id(again) == first_id
    assert on.stats() == {"buffers": 1, "idle_bytes": 0}
    # another size gets a new mapping
    other = frames.allocate(17 * MIB)
    assert id(other) != first_id
    assert on.stats()["buffers"] == 2


def test_a_buffer_anything_still_refers_to_is_never_handed_out(on: Recycler) -> None:
    buf = frames.allocate(16 * MIB)
    view = memoryview(buf)[8:]  # a slice of a view: the managed buffer still refers
    array = np.frombuffer(memoryview(buf), dtype=np.uint8)
    array_of_view = np.frombuffer(view, dtype=np.uint8)
    first_id = id(buf)
    del buf, view
    assert on.stats()["idle_bytes"] == 0
    second = frames.allocate(16 * MIB)  # a new one: the arrays still read the first
    assert id(second) != first_id
    del array
    assert on.stats()["idle_bytes"] == 0  # the array of the slice still reads it
    del array_of_view
    assert on.stats()["idle_bytes"] == 16 * MIB
    assert id(frames.allocate(16 * MIB)) == first_id
    del second


def test_small_bodies_are_not_followed(on: Recycler) -> None:
    frames.allocate(2 * MIB)
    frames.allocate(1000)
    assert on.stats() == {"buffers": 0, "idle_bytes": 0}


def test_idle_buffers_go_after_a_while_and_beyond_the_budget() -> None:
    r = Recycler()
    r.enable(20 * MIB, keep_seconds=5.0)
    kept = [mmap.mmap(-1, 8 * MIB) for _ in range(3)]
    for buf in kept:
        r.keep(buf)
    del buf
    in_use = kept.pop()
    kept.clear()  # two idle (16 MiB), one in use
    assert r.trim(now=100.0) == 0
    assert r.stats() == {"buffers": 3, "idle_bytes": 16 * MIB}
    r.enable(10 * MIB, keep_seconds=5.0)
    assert r.trim(now=101.0) == 8 * MIB  # over the budget: the oldest idle one goes
    assert r.stats() == {"buffers": 2, "idle_bytes": 8 * MIB}
    assert r.trim(now=106.0) == 8 * MIB  # idle for 6 s
    assert r.stats() == {"buffers": 1, "idle_bytes": 0}
    del in_use
    assert r.drop_idle() == 8 * MIB  # memory is short: every idle one goes at once
    assert r.stats() == {"buffers": 0, "idle_bytes": 0}


def test_turned_off_it_follows_nothing_and_hands_nothing_out() -> None:
    r = Recycler()
    r.enable(64 * MIB)
    buf = mmap.mmap(-1, 8 * MIB)
    r.keep(buf)
    r.enable(0)
    assert r.stats() == {"buffers": 0, "idle_bytes": 0}
    del buf
    assert r.take(8 * MIB) is None
    r.keep(mmap.mmap(-1, 8 * MIB))
    assert r.stats()["buffers"] == 0
    assert not recycler.enabled  # off in a process without a worker


# ---------------------------------------------------------------- between two workers


def filled(nbytes: int, value: float) -> np.ndarray:
    return np.full(nbytes // 8, value)


def first_and_last(arr: np.ndarray) -> tuple[float, float, float]:
    return float(arr[0]), float(arr[-1]), float(arr.sum())


def recycler_stats() -> dict[str, int]:
    from shoal.protocol.recycle import recycler

    return recycler.stats()


@pytest.mark.timeout(120)
def test_workers_receive_equal_arrays_into_freed_memory_only() -> None:
    n = 32 * MIB
    count = n // 8
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as lc,
        Client(lc) as c,
    ):
        a, b = sorted(c.nthreads())

        def move(value: float) -> tuple[object, object]:
            src = c.submit(filled, n, value, workers=[a], pure=False)
            wait([src])
            # an identity task on b: b holds its own copy of the array
            copy = c.submit(np.asarray, src, workers=[b], pure=False)
            wait([copy])
            return src, copy

        src1, copy1 = move(1.0)
        assert c.run(recycler_stats)[b]["buffers"] == 1
        # the first copy is still held: the second array must not go into its memory
        src2, copy2 = move(2.0)
        assert c.run(recycler_stats)[b]["buffers"] == 2
        assert c.submit(first_and_last, copy1, workers=[b]).result() == (1.0, 1.0, count)
        assert c.submit(first_and_last, copy2, workers=[b]).result() == (2.0, 2.0, 2.0 * count)
        del src1, copy1, src2, copy2
        assert _eventually(lambda: c.run(recycler_stats)[b]["idle_bytes"] == 2 * n)
        # freed: the next equal array is written over one of them, whole
        src3, copy3 = move(3.0)
        assert c.run(recycler_stats)[b] == {"buffers": 2, "idle_bytes": n}
        assert c.submit(first_and_last, copy3, workers=[b]).result() == (3.0, 3.0, 3.0 * count)
        del src3, copy3


def _eventually(predicate: object, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
