import mmap
import pickle
import sys
import threading
import tracemalloc
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from shoal.errors import SerializeError
from shoal.protocol.frames import FrameDecoder, encode_frames
from shoal.protocol.messages import DataReply
from shoal.protocol.opaque import Opaque
from shoal.protocol.serialize import dumps, dumps_run_spec, dumps_small, loads, nbytes_of
from shoal.protocol.wire import dumps_messages, loads_messages


def round_trip(obj: Any) -> Any:
    return loads(dumps(obj))


@pytest.mark.parametrize(
    "obj", [1, "s", b"b", None, {"a": (1, 2.5)}, [1, [2, [3]]], ("x", 0), {1, 2}, 10**30]
)
def test_plain_objects(obj: Any) -> None:
    assert round_trip(obj) == obj


def test_numpy_arrays() -> None:
    for arr in [
        np.arange(100_000, dtype="f8"),
        np.asfortranarray(np.arange(12).reshape(3, 4)),
        np.arange(100)[::3],
        np.array(["a", None, 3], dtype=object),
        np.zeros((0, 5)),
    ]:
        back = round_trip(arr)
        assert back.dtype == arr.dtype
        np.testing.assert_array_equal(back, arr)


def test_contiguous_arrays_travel_out_of_band_without_copy() -> None:
    arr = np.arange(1000, dtype="i8")
    data = dumps(arr)
    assert len(data.frames) == 2
    assert len(data.frames[0]) < 500
    assert np.shares_memory(np.frombuffer(data.frames[1], dtype="i8"), arr)


def test_pandas() -> None:
    df = pd.DataFrame({"a": np.arange(1000), "b": np.linspace(0, 1, 1000), "c": ["x"] * 1000})
    pd.testing.assert_frame_equal(round_trip(df), df)
    s = pd.Series([1.5, 2.5], index=["p", "q"], name="s")
    pd.testing.assert_series_equal(round_trip(s), s)


def test_lambda_and_closure() -> None:
    y = 10
    f: Callable[[int], int] = lambda x: x + y  # noqa: E731

    def g(x: int) -> int:
        return f(x) * 2

    assert round_trip(f)(1) == 11
    assert round_trip(g)(1) == 22


def test_main_functions_are_pickled_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    main = sys.modules["__main__"]
    f = types.FunctionType((lambda x: x * 3).__code__, {"__name__": "__main__"}, "tripler")
    f.__module__ = "__main__"
    f.__qualname__ = "tripler"
    monkeypatch.setattr(main, "tripler", f, raising=False)
    assert b"__main__" in pickle.dumps(f)  # plain pickle "succeeds" by reference...
    data = dumps(f)
    monkeypatch.delattr(main, "tripler")  # ...which the receiving process could not load
    assert loads(data)(2) == 6


def test_run_spec_uses_cloudpickle() -> None:
    def task(a: int, b: int = 0) -> int:
        return a + b

    func, args, kwargs = loads(dumps_run_spec((task, (1,), {"b": 2})))
    assert func(*args, **kwargs) == 3


@pytest.mark.parametrize(
    ("obj", "name"),
    [(threading.Lock(), "lock"), ((i for i in range(3)), "generator")],
)
def test_unpicklable_objects(obj: Any, name: str) -> None:
    with pytest.raises(SerializeError, match=name) as info:
        dumps(obj)
    assert info.value.__cause__ is not None
    with pytest.raises(SerializeError, match=name):
        dumps_run_spec(obj)


def test_missing_module_on_load() -> None:
    data = Opaque([b"cshoal_no_such_module\nthing\n."])
    with pytest.raises(
        SerializeError,
        match="could not unpickle: ModuleNotFoundError: No module named 'shoal_no_such_module'",
    ) as info:
        loads(data)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize("frames", [[], [b"garbage"], [b""]])
def test_garbage_on_load(frames: list[bytes]) -> None:
    with pytest.raises(SerializeError, match="could not unpickle"):
        loads(Opaque(frames))


def test_nbytes_of() -> None:
    assert nbytes_of(np.zeros(1000)) == 8000
    assert nbytes_of(b"x" * 100) == 100
    assert nbytes_of(bytearray(7)) == 7
    assert nbytes_of(memoryview(np.zeros(10).data)) == 80
    df = pd.DataFrame({"a": np.zeros(1000), "b": np.zeros(1000, dtype="i4")})
    assert 12_000 <= nbytes_of(df) < 13_000
    assert nbytes_of(pd.Series(np.zeros(100))) >= 800
    assert nbytes_of(pd.Index([1, 2, 3])) > 0
    assert nbytes_of([1, 2, 3]) > 0


def test_nbytes_of_pandas_is_memory_usage() -> None:
    df = pd.DataFrame(
        {"f": np.zeros(500), "s": pd.array(["ab"] * 500, dtype="string"), "o": ["x"] * 500},
        index=pd.date_range("2000", periods=500, freq="s"),
    )
    for obj in (df, df["f"], df["s"], df.iloc[10:20]):
        usage = obj.memory_usage(index=True, deep=False)
        assert nbytes_of(obj) == int(usage.sum() if hasattr(usage, "sum") else usage)
    assert nbytes_of(df.index) == df.index.memory_usage(deep=False)


def test_nbytes_of_containers_counts_their_items() -> None:
    parts = {i: np.zeros(1000) for i in range(8)}  # a shuffle's groups, say
    assert 64_000 <= nbytes_of(parts) < 66_000
    many = [np.zeros(100)] * 1000  # sampled, then extrapolated
    assert 800_000 <= nbytes_of(many) < 820_000
    assert nbytes_of((b"ab", b"cd")) == sys.getsizeof((b"ab", b"cd")) + 4
    deep: list[object] = []
    for _ in range(100_000):  # no recursion error however deep
        deep = [deep]
    assert nbytes_of(deep) > 0


def test_zero_copy_from_array_to_array() -> None:
    """A 100 MB array goes out as a view and comes in as a view of the receive buffer."""
    arr = np.arange(100 * 2**20 // 8, dtype="f8")
    data = dumps(arr)
    assert np.shares_memory(np.frombuffer(data.frames[1], dtype="f8"), arr)
    buffers = encode_frames(dumps_messages([DataReply(data={"x": data})]))
    # the array's memory itself goes to the socket
    assert any(
        isinstance(b, memoryview) and np.shares_memory(np.frombuffer(b, dtype="f8"), arr)
        for b in buffers
    )

    tracemalloc.start()
    try:
        dec = FrameDecoder()
        for buf in buffers:  # what the transport does: recv_into(get_buffer())
            src = memoryview(buf).cast("B")
            offset = 0
            while offset < len(src):
                dst = dec.get_buffer()
                k = min(len(dst), len(src) - offset)
                dst[:k] = src[offset : offset + k]
                offset += k
                dec.buffer_updated(k)
        frames = dec.next_message()
        assert frames is not None
        (reply,) = loads_messages(frames)
        assert isinstance(reply, DataReply)
        out = loads(reply.data["x"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    body = frames[0].obj
    assert isinstance(body, (bytearray, mmap.mmap))  # one buffer per message body
    assert all(f.obj is body for f in frames)
    assert np.shares_memory(out, np.frombuffer(body, dtype="u1"))
    assert out.flags.writeable
    assert peak < 1.1 * arr.nbytes  # one receive buffer, no second copy
    np.testing.assert_array_equal(out, arr)


class Hides:
    """Looks small to sys.getsizeof, pickles large."""

    def __init__(self, n: int) -> None:
        self.items = list(range(n))


def test_dumps_small_gives_one_buffer_or_nothing() -> None:
    small = dumps_small({"a": 1, "b": (2.0, "x")}, 1024)
    assert small is not None and pickle.loads(small) == {"a": 1, "b": (2.0, "x")}
    assert dumps_small(b"x" * 2000, 1024) is None  # over the limit
    assert dumps_small(np.arange(1000), 100_000) is None  # its buffer would travel alone
    assert dumps_small(threading.Lock(), 1024) is None  # plain pickle can't


def test_dumps_small_stops_at_the_limit() -> None:
    big = Hides(2_000_000)
    tracemalloc.start()
    try:
        assert dumps_small(big, 1024) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # it gave up long before pickling 2 million ints
