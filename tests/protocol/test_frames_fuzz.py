"""Fuzz the decoders: any input yields messages or a ProtocolError, nothing else."""

import itertools
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.errors import ProtocolError, RemoteProtocolError
from shoal.protocol.frames import FrameDecoder, Limits, encode_frames
from shoal.protocol.messages import Message, registered_ops
from shoal.protocol.wire import loads_messages

SMALL = Limits(max_frames=16, max_header_bytes=512, max_message_bytes=4096)
fuzz_settings = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def feed(dec: FrameDecoder, data: bytes, splits: list[int]) -> list[list[memoryview]]:
    cuts = sorted({min(s, len(data)) for s in splits} | {0, len(data)})
    out = []
    for a, b in itertools.pairwise(cuts):
        dec.receive_data(data[a:b])
        while (m := dec.next_message()) is not None:
            out.append(m)
    return out


def check_decoder(data: bytes, splits: list[int], limits: Limits) -> None:
    dec = FrameDecoder(limits)
    error: ProtocolError | None = None
    messages: list[list[memoryview]] = []
    try:
        messages = feed(dec, data, splits)
    except ProtocolError as e:
        error = e
    if error is not None:
        with pytest.raises(ProtocolError) as again:
            dec.receive_data(b"\x00")
        assert again.value is error  # the decoder stays in its error state
        return
    for frames in messages:
        assert 1 <= len(frames) <= limits.max_frames
        assert sum(f.nbytes for f in frames) <= limits.max_message_bytes


@fuzz_settings
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=8))
def test_any_bytes_small_limits(data: bytes, splits: list[int]) -> None:
    check_decoder(data, splits, SMALL)


@fuzz_settings
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=8))
def test_any_bytes_default_limits(data: bytes, splits: list[int]) -> None:
    check_decoder(data, splits, Limits())


frame_lists = st.lists(st.binary(max_size=64), min_size=1, max_size=5)


@fuzz_settings
@given(
    st.lists(frame_lists, min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=4),
    st.integers(0, 40) | st.just(0),
    st.lists(st.integers(0, 600), max_size=6),
)
def test_corrupted_valid_streams(
    messages: list[list[bytes]],
    flips: list[tuple[int, int]],
    truncate: int,
    splits: list[int],
) -> None:
    data = bytearray(b"".join(b"".join(bytes(b) for b in encode_frames(m)) for m in messages))
    clean = bytes(data)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    del data[len(data) - min(truncate, len(data)) :]  # drop the last `truncate` bytes
    check_decoder(bytes(data), splits, SMALL)
    if not flips and len(data) == len(clean):
        dec = FrameDecoder(SMALL)
        got = feed(dec, clean, splits)
        assert [[bytes(f) for f in m] for m in got] == messages


# --------------------------------------------------------------------------- wire

OPS = sorted(registered_ops())
FIELDS: list[str] = sorted(
    {str(f) for cls in registered_ops().values() for f in cls.__slots__}  # type: ignore[misc, var-annotated]
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1))
)
exts = st.builds(
    msgpack.ExtType,
    st.sampled_from([1, 1, 1, 2, 0, 127]),
    st.one_of(
        st.binary(max_size=10),
        st.tuples(st.integers(0, 6), st.integers(0, 6)).map(lambda t: struct.pack("<II", *t)),
    ),
)
values = st.recursive(
    scalars | exts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(scalars, inner, max_size=4),
    max_leaves=12,
)
maps: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"op": st.sampled_from([*OPS, "batch", "nope"]) | values},  # type: ignore[dict-item]
    optional={f: values for f in FIELDS},
)
headers = (
    maps
    | st.fixed_dictionaries({"op": st.just("batch"), "msgs": st.lists(maps | values, max_size=3)})
    | values
)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@fuzz_settings
@given(headers, st.lists(st.binary(max_size=16), max_size=4))
def test_loads_messages_structured(header: object, extra: list[bytes]) -> None:
    try:
        msgs = loads_messages([pack(header), *extra])
    except RemoteProtocolError:
        return
    assert msgs
    assert all(isinstance(m, Message) for m in msgs)


@fuzz_settings
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_loads_messages_any_frames(frames: list[bytes]) -> None:
    try:
        msgs = loads_messages(frames)
    except RemoteProtocolError:
        return
    assert all(isinstance(m, Message) for m in msgs)
