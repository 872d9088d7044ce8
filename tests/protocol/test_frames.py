import mmap
import struct
from array import array

import pytest

from shoal.errors import LocalProtocolError, MessageTooLarge, RemoteProtocolError
from shoal.protocol.frames import FrameDecoder, Limits, encode_frames


def stream_of(*messages: list[bytes]) -> bytes:
    return b"".join(b"".join(bytes(b) for b in encode_frames(m)) for m in messages)


def decode_all(dec: FrameDecoder) -> list[list[bytes]]:
    out = []
    while (msg := dec.next_message()) is not None:
        out.append([bytes(f) for f in msg])
    return out


def test_wire_format() -> None:
    data = stream_of([b"ab", b"", b"cde"])
    assert data == struct.pack("<4Q", 3, 2, 0, 3) + b"abcde"


def test_round_trip_several_messages_in_one_chunk() -> None:
    msgs = [[b"header"], [b"h", b"x" * 100_000, b""], [b"", b""]]
    dec = FrameDecoder()
    dec.receive_data(stream_of(*msgs))
    assert decode_all(dec) == msgs
    assert dec.next_message() is None
    assert not dec.in_progress


def test_split_at_every_byte_boundary() -> None:
    msgs = [[b"hdr", b"", b"payload" * 3], [b"x"]]
    data = stream_of(*msgs)
    for i in range(len(data) + 1):
        dec = FrameDecoder()
        dec.receive_data(data[:i])
        dec.receive_data(data[i:])
        assert decode_all(dec) == msgs, i


def test_byte_by_byte() -> None:
    msgs = [[b"hdr", b"abc"], [b"more", b"", b"z" * 70]]
    data = stream_of(*msgs)
    dec = FrameDecoder()
    for i in range(len(data)):
        assert dec.in_progress == (i not in (0, len(stream_of(msgs[0]))))
        dec.receive_data(data[i : i + 1])
    assert decode_all(dec) == msgs


def test_big_frames_are_received_in_place() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    data = stream_of([b"header", big])
    dec = FrameDecoder()
    dec.receive_data(data[:100])
    buf = dec.get_buffer()
    body = buf.obj
    assert isinstance(body, (bytearray, mmap.mmap))  # one buffer per message body
    assert len(body) == len(b"header") + len(big)
    rest = memoryview(data)[100:]
    assert len(buf) == len(rest)  # exactly the missing part of the body, nothing more
    buf[:] = rest
    dec.buffer_updated(len(rest))
    frames = dec.next_message()
    assert frames is not None
    assert all(f.obj is body for f in frames)
    assert bytes(frames[1]) == big
    assert not frames[1].readonly


def test_small_reads_use_the_scratch_buffer() -> None:
    dec = FrameDecoder()
    buf = dec.get_buffer()
    assert len(buf) == 64 * 1024
    data = stream_of([b"a"], [b"b"])
    buf[: len(data)] = data
    dec.buffer_updated(len(data))
    assert decode_all(dec) == [[b"a"], [b"b"]]


def test_buffer_updated_checks_its_argument() -> None:
    dec = FrameDecoder()
    with pytest.raises(ValueError, match="get_buffer"):
        dec.buffer_updated(1)
    buf = dec.get_buffer()
    with pytest.raises(ValueError, match="get_buffer"):
        dec.buffer_updated(len(buf) + 1)


def test_zero_frames_is_invalid() -> None:
    dec = FrameDecoder()
    with pytest.raises(RemoteProtocolError, match="0 frames"):
        dec.receive_data(struct.pack("<Q", 0))


def test_too_many_frames_refused_before_reading_lengths() -> None:
    dec = FrameDecoder(Limits(max_frames=3))
    with pytest.raises(MessageTooLarge, match=r"4 frames, more than the limit of 3"):
        dec.receive_data(struct.pack("<Q", 4))


def test_absurd_frame_count_refused() -> None:
    dec = FrameDecoder()
    with pytest.raises(MessageTooLarge, match="frames"):
        dec.receive_data(struct.pack("<Q", 2**63))


def test_huge_total_refused_without_allocating() -> None:
    dec = FrameDecoder()
    with pytest.raises(MessageTooLarge) as info:
        dec.receive_data(struct.pack("<3Q", 2, 10, 2**60))
    msg = str(info.value)
    assert f"{2**60 + 10:,} bytes" in msg
    assert f"{2 * 2**30:,} bytes" in msg
    assert "max_message_bytes" in msg


def test_max_u64_lengths_refused() -> None:
    dec = FrameDecoder()
    with pytest.raises(MessageTooLarge):
        dec.receive_data(struct.pack("<3Q", 2, 2**64 - 1, 2**64 - 1))


def test_header_limit() -> None:
    dec = FrameDecoder(Limits(max_header_bytes=10))
    dec.receive_data(stream_of([b"x" * 10, b"y" * 100]))
    assert decode_all(dec) == [[b"x" * 10, b"y" * 100]]
    with pytest.raises(MessageTooLarge, match="header frame announces 11 bytes"):
        dec.receive_data(stream_of([b"x" * 11]))


def test_total_limit_is_inclusive() -> None:
    dec = FrameDecoder(Limits(max_message_bytes=20))
    dec.receive_data(stream_of([b"x" * 10, b"y" * 10]))
    assert len(decode_all(dec)) == 1
    with pytest.raises(MessageTooLarge, match="21 bytes"):
        dec.receive_data(stream_of([b"x" * 10, b"y" * 11]))


def test_error_is_sticky_but_earlier_messages_are_delivered() -> None:
    dec = FrameDecoder()
    with pytest.raises(RemoteProtocolError) as info:
        dec.receive_data(stream_of([b"ok"]) + struct.pack("<Q", 0) + stream_of([b"later"]))
    err = info.value
    assert dec.error is err
    assert dec.next_message() is not None  # completed before the error
    for call in (dec.next_message, dec.get_buffer, lambda: dec.receive_data(b"x")):
        with pytest.raises(RemoteProtocolError) as again:
            call()
        assert again.value is err
    with pytest.raises(RemoteProtocolError):
        dec.buffer_updated(0)


def test_encode_frames_refuses_empty_and_too_many() -> None:
    with pytest.raises(LocalProtocolError, match="no frames"):
        encode_frames([])
    with pytest.raises(LocalProtocolError, match="limit"):
        encode_frames([b""] * 4, Limits(max_frames=3))


def test_encode_frames_does_not_copy_big_frames() -> None:
    big = bytearray(1_000_000)
    view = memoryview(b"y" * 100_000)
    out = encode_frames([b"header", big, b"tiny", view])
    assert isinstance(out[0], bytes)
    assert out[0].endswith(b"header")  # tiny frames joined into the prefix
    assert isinstance(out[1], memoryview)
    assert out[1].obj is big
    assert out[2] == b"tiny"
    assert isinstance(out[3], memoryview)
    assert out[3].obj is view.obj


def test_encode_frames_counts_bytes_of_typed_views() -> None:
    a = array("d", [1.0, 2.0, 3.0] * 1000)
    out = encode_frames([b"h", memoryview(a)])
    dec = FrameDecoder()
    for b in out:
        dec.receive_data(b)
    frames = dec.next_message()
    assert frames is not None
    assert bytes(frames[1]) == a.tobytes()


def test_encode_frames_refuses_non_contiguous() -> None:
    a = memoryview(bytes(range(100))).cast("B", (10, 10))[::2]
    with pytest.raises(LocalProtocolError, match="non-contiguous"):
        encode_frames([a])
