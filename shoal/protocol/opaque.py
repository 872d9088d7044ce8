"""``Opaque``: serialized user data that the scheduler carries but never opens."""

from __future__ import annotations

from collections.abc import Sequence

Frame = bytes | bytearray | memoryview


class Opaque:
    """Serialized bytes of a user object (run spec, result, exception).

    ``frames[0]`` is the pickle stream; further frames are its out-of-band buffers.
    Only :mod:`shoal.protocol.serialize` turns an ``Opaque`` back into an object; the
    scheduler forwards it untouched, so a bad pickle can never run code there.
    """

    __slots__ = ("frames",)

    def __init__(self, frames: Sequence[Frame]) -> None:
        self.frames: list[Frame] = list(frames)

    @property
    def nbytes(self) -> int:
        """Total size of all frames in bytes."""
        total = 0
        for f in self.frames:
            total += len(f) if type(f) is bytes else memoryview(f).nbytes
        return total

    def __repr__(self) -> str:
        return f"<Opaque {len(self.frames)} frames, {self.nbytes} bytes>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Opaque):
            return NotImplemented
        return [bytes(f) for f in self.frames] == [bytes(f) for f in other.frames]

    __hash__ = None  # type: ignore[assignment]
