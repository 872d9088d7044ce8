import dataclasses
from typing import Any

import msgpack
import numpy as np
import pytest

import shoal.coordination.messages
import shoal.protocol.actor_ops
import shoal.protocol.observe
import shoal.protocol.setup_ops
from shoal.errors import LocalProtocolError, RemoteProtocolError
from shoal.protocol.frames import FrameDecoder, encode_frames
from shoal.protocol.messages import (
    OK,
    Broadcast,
    ComputeTask,
    DataReply,
    Heartbeat,
    Message,
    TaskFinished,
    TaskSpec,
    UpdateGraph,
    registered_ops,
)
from shoal.protocol.opaque import Opaque
from shoal.protocol.wire import dumps_messages, loads_messages

KEY = ("x", 0, 1)
# every module that defines ops, so each op is covered whatever was imported before
OP_MODULES = (
    shoal.coordination.messages,
    shoal.protocol.actor_ops,
    shoal.protocol.observe,
    shoal.protocol.setup_ops,
)


def opaque(tag: bytes = b"p") -> Opaque:
    return Opaque([tag + b"-pickle", bytearray(tag * 5000), memoryview(tag * 3)])


# One example value per field annotation of messages.py; a new annotation fails loudly.
EXAMPLES: dict[str, Any] = {
    "Key": KEY,
    "Address": "tcp://127.0.0.1:8786",
    "Address | None": "tcp://10.0.0.1:1234",
    "bytes | None": b"\x80\x05K*.",
    "bytes": b"\x00lease-token\xff",
    "str": "text",
    "str | None": "maybe",
    "int": 42,
    "int | None": 7,
    "float": 1.5,
    "bool": True,
    "Any": {"nested": (1, "two", {"deep": opaque(b"a")}), ("t", 1): None},
    "Opaque": opaque(),
    "Opaque | None": opaque(b"q"),
    "tuple[Key, ...]": (KEY, "y", 3, b"bytes-key"),
    "tuple[Key, ...] | None": (KEY, "z"),
    "tuple[Address, ...] | None": ("tcp://a:1", "inproc://1/2"),
    "tuple[Address, ...]": ("tcp://a:1", "tcp://b:2"),
    "tuple[str, ...] | None": ("a", "b"),
    "tuple[int | float, ...]": (1, -2, 0.5),
    "tuple[Any, ...]": ((1, "a", None), {"k": opaque(b"z")}),
    "dict[str, Any]": {"a": 1, "o": opaque(b"d"), "t": (KEY, {KEY: "v"})},
    "dict[str, float]": {"GPU": 1.0},
    "dict[str, float] | None": {"MEM": 2.5},
    "dict[Key, int]": {KEY: 10, "y": 0},
    "dict[Key, Opaque]": {KEY: opaque(b"1"), "y": opaque(b"2")},
    "dict[Key, tuple[Address, ...]]": {KEY: ("tcp://a:1", "tcp://b:2"), "y": ()},
    # a shared-memory reference: header, pid, descriptor, token, size, buffer spans
    "dict[Key, tuple[Any, ...]]": {KEY: (opaque(b"h"), 4242, 7, b"t" * 16, 128, (64, 64))},
    "float | None": 2.5,
    "bool | int": 3,
    "str | tuple[str, ...]": ("topic-a", "topic-b"),
    "tuple[tuple[Any, str], ...]": (("lease-1", "sem"), (2, "other")),
    "tuple[tuple[Any, Opaque, tuple[Key, ...]], ...]": (("name", opaque(b"ds"), (KEY, "y")),),
}


def example(cls: type[Message]) -> Message:
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        assert isinstance(f.type, str)
        assert f.type in EXAMPLES, f"add an example value for {f.type!r} ({cls.__name__})"
        kwargs[f.name] = EXAMPLES[f.type]
    return cls(**kwargs)


def through_the_wire(frames: list[Any]) -> list[memoryview]:
    dec = FrameDecoder()
    for buf in encode_frames(frames):
        dec.receive_data(buf)
    msg = dec.next_message()
    assert msg is not None
    return msg


@pytest.mark.parametrize("op", sorted(registered_ops()))
def test_round_trip_every_op(op: str) -> None:
    msg = example(registered_ops()[op])
    frames = dumps_messages([msg])
    assert loads_messages(frames) == [msg]
    assert loads_messages(through_the_wire(frames)) == [msg]


def test_batch_round_trip() -> None:
    msgs = [example(cls) for cls in registered_ops().values()]
    frames = dumps_messages(msgs)
    header = msgpack.unpackb(frames[0], strict_map_key=False, use_list=False)
    assert header["op"] == "batch"
    assert len(header["msgs"]) == len(msgs)
    assert loads_messages(through_the_wire(frames)) == msgs


def test_hot_ops_travel_in_batches_as_arrays() -> None:
    task = ComputeTask(KEY, None, {}, {}, (0, 1), None, 0.5)
    finished = TaskFinished("k", 8, "int", 1.0, 2.0, b"v")
    frames = dumps_messages([task, finished, Heartbeat({})])
    header = msgpack.unpackb(frames[0], strict_map_key=False, use_list=False)
    assert header["msgs"][0] == ("compute-task", KEY, None, {}, {}, (0, 1), None, 0.5)
    assert header["msgs"][1][0] == "task-finished"
    assert header["msgs"][2]["op"] == "heartbeat"  # other ops stay maps
    assert loads_messages(frames) == [task, finished, Heartbeat({})]
    as_maps = msgpack.packb([task.to_wire(), finished.to_wire()], use_bin_type=True)
    assert len(frames[0]) < len(as_maps) * 0.8


def test_opaque_frames_are_not_copied() -> None:
    payload = bytearray(1_000_000)
    o = Opaque([b"pickle", payload])
    frames = dumps_messages([DataReply(data={KEY: o})])
    assert len(frames) == 3
    assert frames[2] is payload
    assert len(frames[0]) < 100  # only a reference travels in the header
    (reply,) = loads_messages(frames)
    assert isinstance(reply, DataReply)
    assert reply.data[KEY].frames[1] is payload


def test_tuple_keys_and_nested_opaque_survive() -> None:
    msg = Broadcast(msg={"op": "run", "args": ({KEY: opaque()},)}, workers=None)
    (back,) = loads_messages(dumps_messages([msg]))
    assert back == msg
    assert isinstance(back, Broadcast)
    inner = back.msg["args"][0]
    assert list(inner) == [KEY]
    assert isinstance(inner[KEY], Opaque)


def test_task_specs_travel_as_tuples() -> None:
    spec = TaskSpec(key=KEY, dependencies=("y",), run_spec=opaque(), priority=(0, 1))
    (back,) = loads_messages(dumps_messages([UpdateGraph(tasks=(spec,), keys=(KEY,))]))
    assert isinstance(back, UpdateGraph)
    assert isinstance(back.tasks[0], tuple)
    assert TaskSpec.from_wire(back.tasks[0]) == spec


def test_a_task_spec_made_straight_in_its_wire_form_is_the_same() -> None:
    fields = (KEY, ("y",), opaque(), (0, 1, 2), 3, ("tcp://w:1",), True, {"GPU": 1.0}, True)
    assert TaskSpec.wire(*fields) == TaskSpec(*fields).to_wire()
    assert TaskSpec.from_wire(TaskSpec.wire(*fields[:-1])) == TaskSpec(*fields[:-1])


def test_numpy_integers_are_encoded_as_ints() -> None:
    (back,) = loads_messages(dumps_messages([OK(value={"n": np.int64(7)})]))
    assert back == OK(value={"n": 7})


def test_unencodable_values_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError, match="set"):
        dumps_messages([OK(value={1, 2})])
    with pytest.raises(LocalProtocolError, match="object"):
        dumps_messages([OK(value=object())])
    with pytest.raises(LocalProtocolError, match="'ok'"):
        dumps_messages([OK(value=2**70)])
    with pytest.raises(LocalProtocolError):
        dumps_messages([])


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "no frames"),
        ([b"\xc1"], "invalid message header"),
        ([pack([1, 2])], "must be a map"),
        ([pack({"op": "no-such-op"})], "unknown op"),
        ([pack({"op": "ok", "bogus": 1})], "malformed 'ok'"),
        ([pack({"op": "batch", "msgs": []})], "non-empty"),
        ([pack({"op": "batch", "msgs": [{"op": "batch", "msgs": []}]})], "unknown op"),
        ([pack({"op": "ok", "value": msgpack.ExtType(5, b"")})], "extension 5"),
        ([pack({"op": "ok", "value": msgpack.ExtType(1, b"\x01")})], "Opaque reference"),
        (
            [pack({"op": "ok", "value": msgpack.ExtType(1, b"\x01\0\0\0\x02\0\0\0")}), b""],
            "frames 1..2 of a message with 2",
        ),
        ([pack({"op": "ok", "value": msgpack.ExtType(1, b"\0\0\0\0\x01\0\0\0")})], "frames 0"),
        ([pack({"op": "ok"}) + b"\x00"], "ExtraData"),
        ([pack({(1, 2): {}, "op": "ok"})], "malformed"),
        ([pack({"op": "batch", "msgs": [["free-keys", ["a"]]]})], "no positional op 'free-keys'"),
        ([pack({"op": "batch", "msgs": [["nope"]]})], "no positional op 'nope'"),
        ([pack({"op": "batch", "msgs": [["compute-task", "k"]]})], "malformed 'compute-task'"),
    ],
)
def test_malformed_headers(frames: list[bytes], match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        loads_messages(frames)


def test_compute_task_with_opaque_run_spec() -> None:
    msg = ComputeTask(
        key=KEY,
        run_spec=opaque(),
        who_has={"d": ("tcp://a:1",)},
        nbytes={"d": 8},
        priority=(0,),
    )
    assert loads_messages(through_the_wire(dumps_messages([msg, Heartbeat()]))) == [
        msg,
        Heartbeat(),
    ]


def test_a_frame_shared_by_several_opaques_travels_once() -> None:
    function = b"cloudpickled function" * 100
    # as run specs hold it: a new memoryview of the same bytes each time
    specs = [Opaque([f"args {i}".encode(), memoryview(function)]) for i in range(50)]
    frames = dumps_messages([DataReply(data={("k", i): o for i, o in enumerate(specs)})])
    assert len(frames) == 1 + 50 + 1
    assert sum(bytes(f) == function for f in frames) == 1
    (reply,) = loads_messages(through_the_wire(frames))
    assert isinstance(reply, DataReply)
    assert [reply.data[("k", i)] for i in range(50)] == specs
    shared = {id(o.frames[1]) for o in reply.data.values()}
    assert len(shared) == 1  # one buffer on the receiving side too


@pytest.mark.parametrize("ext", [b"\x01\x00\x00", b"\x00\x00\x00\x00", b"\x09\x00\x00\x00"])
def test_a_bad_frame_list_is_refused(ext: bytes) -> None:
    header = msgpack.packb({"op": "data-reply", "data": {"k": msgpack.ExtType(3, ext)}})
    with pytest.raises(RemoteProtocolError, match="Opaque"):
        loads_messages([header, b"only frame"])
