"""Messages ⇄ frames: msgpack headers with :class:`Opaque` payloads as extra frames.

Frame 0 of a message is msgpack: the map of one message (``msg.to_wire()``) or, for
several, ``{"op": "batch", "msgs": [map, …]}``.  Every :class:`Opaque` found anywhere in
it (fields, nested dicts, tuples, dict keys excepted) is replaced by the msgpack
extension ``ExtType(1, <u32 LE first frame index><u32 LE number of frames>)`` and its
frames are appended after the header, untouched: payload bytes are never copied into
the header and, on the receiving side, become slices of the received buffer (those of
at most 16 KiB are copied out of it).
A frame that several ``Opaque`` values share (the same buffer object: one task function
cloudpickled once for a whole ``map``) travels once; an ``Opaque`` that refers to such a
frame becomes ``ExtType(3, <u32 LE frame index>…)``.

:class:`TaskSpec` values are written as their ``to_wire()`` tuple; the receiver calls
``TaskSpec.from_wire`` itself (the header carries no type tags besides Opaque).

Decoding is defensive: whatever the bytes, :func:`loads_messages` returns messages or
raises :class:`RemoteProtocolError` (a fuzz test holds it to that).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from typing import Any

import msgpack

from shoal.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from shoal.protocol.messages import Message, TaskSpec
from shoal.protocol.opaque import Frame, Opaque

__all__ = [
    "BATCH_OP",
    "OPAQUE_EXT_CODE",
    "dumps_messages",
    "first_unencodable",
    "loads_messages",
]

#: msgpack extension code of an Opaque reference: its frames are consecutive.
OPAQUE_EXT_CODE = 1
#: msgpack extension code of an Opaque whose frames are listed by index (some of them
#: shared with earlier Opaque values of the message, e.g. one task function for a map).
OPAQUE_LIST_EXT_CODE = 3
#: The op of a header carrying several messages.
BATCH_OP = "batch"

_EXT = struct.Struct("<II")
#: Opaque frames up to this size are copied out of the received buffer: a memoryview
#: costs more than a small copy (184 bytes per object), and a view keeps the whole
#: message's buffer alive (a graph's run specs: one view per task, for as long as the
#: scheduler keeps the task). Buffers become ``bytearray``, writable like the views.
_COPY_LIMIT = 16 * 1024


def frame_identity(frame: Frame) -> int:
    """What makes two frames the same buffer: the object itself, or for a memoryview of
    a whole ``bytes`` object (a pickled function shared by many run specs) that object."""
    if isinstance(frame, memoryview):
        base = frame.obj
        if isinstance(base, bytes) and frame.nbytes == len(base):
            return id(base)
    return id(frame)


def _plain(obj: Any) -> Any:
    """msgpack's fallback for plain values: numpy integers and the like become ints."""
    if hasattr(type(obj), "__index__"):
        return operator.index(obj)
    raise TypeError(f"cannot encode an object of type {type(obj).__qualname__!r}")


def first_unencodable(values: Sequence[Any]) -> tuple[int, str] | None:
    """The index of the first of ``values`` (plain data: keys, names) that a message
    can't carry, with msgpack's reason; None when it can carry them all. An int needs
    64 bits at most, a str must be valid Unicode (no lone surrogate).

    All of them are tried in one msgpack call first (a 100,000-key graph: a few ms),
    then one by one only when that call fails.
    """
    errors = (TypeError, ValueError, OverflowError)
    try:
        msgpack.packb(values, use_bin_type=True, default=_plain)
        return None
    except errors:
        pass
    for i, value in enumerate(values):
        try:
            msgpack.packb(value, use_bin_type=True, default=_plain)
        except errors as e:
            return i, str(e)
    return None


def dumps_messages(msgs: Sequence[Message]) -> list[Frame]:
    """Encode one or several messages as the frames of one wire message.

    Raise :class:`LocalProtocolError` when there is no message or a value msgpack
    can't encode (the error names its type).
    """
    if not msgs:
        raise LocalProtocolError("no messages to encode")
    frames: list[Frame] = [b""]  # frame 0, the header, is filled in below
    seen: dict[int, int] = {}  # id(frame) -> its index: a shared buffer travels once

    def default(obj: Any) -> Any:
        if isinstance(obj, Opaque):
            start = len(frames)
            indices = []
            for frame in obj.frames:
                ident = frame_identity(frame)
                i = seen.get(ident)
                if i is None:
                    i = seen[ident] = len(frames)
                    frames.append(frame)
                indices.append(i)
            if len(frames) - start == len(indices):  # all new: consecutive frames
                return msgpack.ExtType(OPAQUE_EXT_CODE, _EXT.pack(start, len(indices)))
            return msgpack.ExtType(OPAQUE_LIST_EXT_CODE, struct.pack(f"<{len(indices)}I", *indices))
        if isinstance(obj, TaskSpec):
            return obj.to_wire()
        if isinstance(obj, Message):
            return obj.to_wire()
        return _plain(obj)

    payload: Any
    if len(msgs) == 1:
        payload = msgs[0].to_wire()
    else:
        payload = {
            "op": BATCH_OP,
            "msgs": [m.to_array() if m.positional else m.to_wire() for m in msgs],
        }
    try:
        frames[0] = msgpack.packb(payload, use_bin_type=True, default=default)
    except (TypeError, ValueError, OverflowError) as e:
        ops = ", ".join(sorted({repr(m.op) for m in msgs}))
        raise LocalProtocolError(f"cannot encode message {ops}: {e}") from e
    return frames


def loads_messages(frames: Sequence[Frame]) -> list[Message]:
    """Decode the frames of one wire message into its messages (several for a batch).

    Raise :class:`RemoteProtocolError` for anything malformed, never another type.
    """
    if not frames:
        raise RemoteProtocolError("invalid message: no frames")
    n = len(frames)
    owned: dict[int, Frame] = {}

    def frame(i: int, first: bool) -> Frame:
        f = owned.get(i)
        if f is None:
            f = frames[i]
            if (f.nbytes if isinstance(f, memoryview) else len(f)) <= _COPY_LIMIT:
                f = bytes(f) if first else bytearray(f)
            owned[i] = f
        return f

    def ext_hook(code: int, data: bytes) -> Opaque:
        if code == OPAQUE_LIST_EXT_CODE:
            if len(data) % 4:
                raise RemoteProtocolError(
                    f"invalid message: Opaque frame list of {len(data)} bytes"
                )
            indices = struct.unpack(f"<{len(data) // 4}I", data)
            if any(i < 1 or i >= n for i in indices):
                raise RemoteProtocolError(
                    f"invalid message: Opaque reference to a frame outside 1..{n - 1}"
                )
            return Opaque([frame(i, j == 0) for j, i in enumerate(indices)])
        if code != OPAQUE_EXT_CODE:
            raise RemoteProtocolError(f"invalid message: unknown msgpack extension {code}")
        if len(data) != _EXT.size:
            raise RemoteProtocolError(
                f"invalid message: Opaque reference of {len(data)} bytes, not {_EXT.size}"
            )
        start, count = _EXT.unpack(data)
        if start < 1 or start + count > n:
            raise RemoteProtocolError(
                f"invalid message: Opaque reference to frames {start}..{start + count - 1} "
                f"of a message with {n} frames"
            )
        return Opaque([frame(i, i == start) for i in range(start, start + count)])

    try:
        obj = msgpack.unpackb(
            frames[0], raw=False, use_list=False, strict_map_key=False, ext_hook=ext_hook
        )
        if isinstance(obj, dict) and obj.get("op") == BATCH_OP:
            maps = obj.get("msgs")
            if not isinstance(maps, tuple) or not maps:
                raise RemoteProtocolError("invalid batch: 'msgs' must be a non-empty array")
            return [Message.from_wire(m) for m in maps]
        return [Message.from_wire(obj)]
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises many types; the contract is one
        raise RemoteProtocolError(f"invalid message header: {type(e).__name__}: {e}") from e
