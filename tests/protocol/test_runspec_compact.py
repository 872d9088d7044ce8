"""Compact run specs: a call with plain scalar arguments travels as msgpack, not pickle."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.errors import SerializeError
from shoal.protocol.opaque import Opaque
from shoal.protocol.runspec import (
    KeyRef,
    RunSpec,
    dumps_call,
    dumps_packed_call,
    loads_run_spec,
    packed_ref,
)
from shoal.protocol.serialize import function_bytes


def describe(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
    return tuple((type(a).__name__, a) for a in args) + tuple(sorted(kwargs.items()))


PLAIN = (0, -(2**63), 2**64 - 1, 1.5, float("inf"), "é", "", b"\x00\xff", True, False, None)


def compact(spec: Opaque) -> bool:
    return bytes(spec.frames[0][:1]) == b"\x01"


def test_plain_arguments_travel_compact_and_come_back_with_their_types() -> None:
    spec = dumps_call(describe, PLAIN, {})
    assert compact(spec)
    run = loads_run_spec(spec)
    assert isinstance(run, RunSpec)
    assert run({}) == describe(*PLAIN)  # bool stays bool, bytes stay bytes, str stays str


def test_no_arguments() -> None:
    assert loads_run_spec(dumps_call(describe, (), {}))({}) == ()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((2**64,), {}),  # beyond msgpack's integers
        ((-(2**63) - 1,), {}),
        (("\ud800",), {}),  # a lone surrogate: not UTF-8
        (([1, 2],), {}),  # a container (may hold futures)
        ((KeyRef(object()),), {}),  # a key msgpack can't carry
        ((KeyRef("\ud800"),), {}),  # a str key that is not UTF-8
        ((1,), {"b": 2}),  # keywords
        ((True, 1.0, (1,)), {}),
    ],
)
def test_anything_else_is_pickled(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    spec = dumps_call(describe, args, kwargs)
    assert not compact(spec)
    run = loads_run_spec(spec)
    assert len(run.args) == len(args) and run.kwargs == kwargs


def test_references_to_other_tasks_travel_compact() -> None:
    spec = dumps_call(describe, (KeyRef("a"), 2, KeyRef(("x", 0, 1))), {})
    assert compact(spec)
    run = loads_run_spec(spec)
    assert run.args == (KeyRef("a"), 2, KeyRef(("x", 0, 1)))
    assert run({"a": 1.5, ("x", 0, 1): b"z"}) == (("float", 1.5), ("int", 2), ("bytes", b"z"))


def test_a_call_msgpack_refused_leaves_nothing_behind() -> None:
    """The packer is reused per thread: a call it refuses half-way must not leak bytes
    into the next one."""
    for args in [(1, 2**64), (KeyRef("a"), KeyRef(object())), (KeyRef("\ud800"), 2)]:
        assert not compact(dumps_call(describe, args, {}))
        spec = dumps_call(describe, (KeyRef("b"), 3), {})
        assert compact(spec)
        assert loads_run_spec(spec).args == (KeyRef("b"), 3)


def test_a_scalar_subclass_is_pickled_as_itself() -> None:
    class Tagged(int):
        pass

    spec = dumps_call(describe, (Tagged(3),), {})
    assert not compact(spec)
    assert type(loads_run_spec(spec).args[0]) is Tagged


@pytest.mark.parametrize(
    "header",
    [
        b"\x01",
        b"\x01\xc1",
        b"\x01\x05",
        b"\x01\x91\xc1",
        b"\x01\xdd\xff\xff\xff\xff",
        b"\x01\x91\xd4\x07\x00",  # an unknown extension
        b"\x01\x91\xd4\x01\xc1",  # a reference whose key is not msgpack
        b"\x01\x91\xd4\x02\xff",  # a reference whose str key is not UTF-8
    ],
)
def test_malformed_compact_run_specs_raise_serialize_error(header: bytes) -> None:
    function = dumps_call(describe, (1,), {}).frames[1]
    with pytest.raises(SerializeError):
        loads_run_spec(Opaque([header, function]))


def test_a_broken_function_frame_raises_serialize_error() -> None:
    with pytest.raises(SerializeError, match="function"):
        loads_run_spec(Opaque([b"\x01\x90", b"not a pickle"]))


def test_an_unpicklable_function_is_named_in_the_error() -> None:
    import threading

    lock = threading.Lock()

    def holds_a_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(SerializeError, match=r"function .*holds_a_lock: TypeError"):
        dumps_call(holds_a_lock, (1,), {})


def test_a_call_packed_with_its_references_made_already_is_what_dumps_call_makes() -> None:
    frame = function_bytes(describe)
    args = (1, KeyRef("x"), KeyRef(("y", 2)), "s", None)
    made = dumps_call(describe, args, {}, frame)
    packed = tuple(packed_ref(a.key) if type(a) is KeyRef else a for a in args)
    same = dumps_packed_call(packed, frame)
    assert same is not None and compact(same)
    assert [bytes(f) for f in same.frames] == [bytes(f) for f in made.frames]
    assert loads_run_spec(same)({"x": 10, ("y", 2): 20}) == describe(1, 10, 20, "s", None)
    assert dumps_packed_call((2**64,), frame) is None, "msgpack can't carry it: the caller pickles"
