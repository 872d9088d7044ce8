"""Values shared through sealed memory files (shoal/comm/shared_memory.py), in one process:
``/proc/<pid>/fd/<n>`` works the same for the process itself as for a peer."""

from __future__ import annotations

import gc
import os
import tempfile

import numpy as np
import pytest

from shoal.comm import shared_memory
from shoal.protocol.serialize import loads

pytestmark = pytest.mark.skipif(
    shared_memory.identity() is None, reason="no memory files on this system"
)

MiB = 2**20


def test_a_large_value_is_shared_and_mapped_back() -> None:
    original = np.arange(MiB, dtype="int64")  # 8 MiB
    shared = shared_memory.share(original, MiB)
    assert shared is not None
    value, file = shared
    np.testing.assert_array_equal(value, original)
    assert value.flags.writeable
    assert file.size >= original.nbytes

    frames, mapped_file = shared_memory.attach(file.reference())
    try:
        received = loads(frames)
        np.testing.assert_array_equal(received, original)
        assert received.flags.writeable
    finally:
        mapped_file.close()
    file.close()


def test_mappings_are_private_and_the_file_is_sealed() -> None:
    value, file = shared_memory.share(np.zeros(MiB), MiB)  # type: ignore[misc]
    frames, other = shared_memory.attach(file.reference())
    received = loads(frames)
    received[:10] = 7.0  # the receiver's own copy of these pages
    value[-10:] = 3.0  # and the writer's
    assert value[:10].sum() == 0 and received[-10:].sum() == 0
    again = loads(shared_memory.attach(file.reference())[0])
    assert again.sum() == 0  # the file never changed
    with pytest.raises(PermissionError):
        os.pwrite(file.fd, b"x", 100)
    other.close()
    file.close()


def test_small_and_unpicklable_values_are_not_shared() -> None:
    assert shared_memory.share(np.zeros(10), MiB) is None
    assert shared_memory.share(b"x" * (2 * MiB), MiB) is None  # in-band: nothing to share
    with open(os.devnull) as f:
        assert shared_memory.share(f, 1) is None


def test_pandas_frames_share_all_their_buffers() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": np.arange(MiB), "b": np.ones(MiB)})
    value, file = shared_memory.share(df, MiB)  # type: ignore[misc]
    pd.testing.assert_frame_equal(value, df)
    pd.testing.assert_frame_equal(loads(shared_memory.attach(file.reference())[0]), df)
    file.close()


def _reference(**changes: object) -> tuple[object, ...]:
    _, file = shared_memory.share(np.ones(MiB), MiB)  # type: ignore[misc]
    fields = ("header", "pid", "fd", "token", "size", "spans")
    ref = dict(zip(fields, file.reference(), strict=True))
    ref.update(changes)
    _references.append(file)  # keep the file open
    return tuple(ref.values())


_references: list[shared_memory.SharedValue] = []


@pytest.fixture(autouse=True)
def _close_references() -> object:
    yield
    for f in _references:
        f.close()
    _references.clear()
    gc.collect()


@pytest.mark.parametrize(
    "changes",
    [
        {"token": b"\0" * 16},
        {"token": b"short"},
        {"size": 12},
        {"spans": (0, 8)},  # over the token
        {"spans": (64, 2**40)},  # past the end
        {"spans": (64,)},
        {"pid": "self"},
        {"header": b"not an Opaque"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_reference_that_does_not_match_its_file_is_refused(changes: dict) -> None:
    with pytest.raises(OSError):
        shared_memory.attach(_reference(**changes))


def test_a_closed_file_or_another_kind_of_file_is_refused() -> None:
    value, file = shared_memory.share(np.ones(MiB), MiB)  # type: ignore[misc]
    ref = file.reference()
    file.close()
    with pytest.raises(OSError):
        shared_memory.attach(ref)  # the writer let go of it (the number may be reused)
    # a plain file starting with the right token: not sealed, so never mapped
    with tempfile.TemporaryFile() as f:
        f.write(ref[3] + b"\0" * (ref[4] - 16))
        f.flush()
        forged = (ref[0], os.getpid(), f.fileno(), ref[3], ref[4], ref[5])
        with pytest.raises(OSError):  # EINVAL: files of other kinds have no seals
            shared_memory.attach(forged)
    del value


def test_unmapped_bytes_counts_what_the_process_has_not_read() -> None:
    value, file = shared_memory.share(np.ones(8 * MiB), MiB)  # type: ignore[misc]
    assert shared_memory.unmapped_bytes(0) == 0
    before = shared_memory.unmapped_bytes(file.size)
    assert before > 0
    value.sum()  # reading the pages maps them into this process (RssShmem)
    assert shared_memory.unmapped_bytes(file.size) < before
    file.close()
