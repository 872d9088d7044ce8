"""atheris harness: bytes off the wire → frames → messages (see fuzz/README.md)."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from shoal.errors import ProtocolError
    from shoal.protocol.frames import FrameDecoder, Limits
    from shoal.protocol.wire import loads_messages

LIMITS = Limits(max_frames=64, max_header_bytes=1 << 16, max_message_bytes=1 << 20)


def test_one_input(data: bytes) -> None:
    """One fuzzing input: must decode or raise a protocol error, nothing else."""
    decoder = FrameDecoder(LIMITS)
    try:
        decoder.receive_data(data)
        while (frames := decoder.next_message()) is not None:
            loads_messages(frames)
    except ProtocolError:
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
