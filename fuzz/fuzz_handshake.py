"""atheris harness: a peer's hello and authentication answer (see fuzz/README.md)."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from shoal.errors import HandshakeError
    from shoal.protocol.handshake import handshake_flow

SECRET = b"fuzzing secret"


def test_one_input(data: bytes) -> None:
    """One fuzzing input: must decode or raise a protocol error, nothing else."""
    fdp = atheris.FuzzedDataProvider(data)
    hello = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    answer = fdp.ConsumeBytes(512)
    flow = handshake_flow("scheduler", {}, secret=SECRET, initiator=False)
    next(flow)
    try:
        flow.send(hello)
        flow.send(answer)
    except (StopIteration, HandshakeError):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
