"""Arrays shared through sealed memory files (shoal/comm/shared_memory.py), in one process:
``/proc/<pid>/fd/<n>`` works the same for the process itself as for a peer."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shoal.comm import shared_memory
from shoal.protocol.serialize import loads

pytestmark = pytest.mark.skipif(
    not shared_memory.supported(), reason="no memory files on this system"
)

MiB = 2**20


def shared(value: object, least: int = MiB) -> tuple[np.ndarray, shared_memory.SharedValue]:
    out = shared_memory.share(value, least)
    assert out is not None
    return out


def test_an_array_is_shared_read_only_and_mapped_back_writable() -> None:
    original = np.arange(MiB, dtype="int64").reshape(1024, 1024)  # 8 MiB
    value, file = shared(original)
    np.testing.assert_array_equal(value, original)
    assert not value.flags.writeable  # where it was made: a write would diverge from peers
    with pytest.raises(ValueError, match="read-only"):
        value[0, 0] = 1
    received = loads(shared_memory.attach(file.reference()))
    np.testing.assert_array_equal(received, original)
    assert received.flags.writeable and received.dtype == original.dtype
    received[:10] = -1  # the receiver's own copy of those pages
    np.testing.assert_array_equal(loads(shared_memory.attach(file.reference())), original)
    with pytest.raises(PermissionError):  # sealed: not even its writer can change it
        os.pwrite(file.fd, b"x", 100)
    file.close()


def test_fortran_ordered_arrays_keep_their_order() -> None:
    original = np.asfortranarray(np.arange(MiB, dtype="float64").reshape(512, 2048))
    value, file = shared(original)
    received = loads(shared_memory.attach(file.reference()))
    assert value.flags.f_contiguous and received.flags.f_contiguous
    np.testing.assert_array_equal(received, original)
    file.close()


def test_only_plain_contiguous_arrays_of_the_threshold_are_shared() -> None:
    pd = pytest.importorskip("pandas")
    big = np.ones(MiB)
    assert shared_memory.share(np.zeros(10), MiB) is None  # too small
    assert shared_memory.share(big[::2], MiB // 2) is None  # strided: pickling would copy
    assert shared_memory.share(np.array([object()] * MiB), 1) is None  # object items
    assert shared_memory.share(pd.DataFrame({"a": big}), 1) is None  # not an ndarray
    assert shared_memory.share([big], 1) is None
    assert shared_memory.share(b"x" * (2 * MiB), 1) is None


@pytest.fixture
def files() -> Iterator[list[shared_memory.SharedValue]]:
    """Files a test keeps open, closed after it."""
    opened: list[shared_memory.SharedValue] = []
    yield opened
    for f in opened:
        f.close()


def _reference(files: list[shared_memory.SharedValue], **changes: object) -> tuple:
    _, file = shared(np.ones(MiB))
    files.append(file)
    fields = ("header", "pid", "fd", "token", "size", "spans")
    ref = dict(zip(fields, file.reference(), strict=True))
    ref.update(changes)
    return tuple(ref.values())


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
        {"pid": 0},
        {"fd": True},
        {"header": b"not an Opaque"},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r}"[:30],
)
def test_a_reference_that_does_not_match_its_file_is_refused(
    files: list[shared_memory.SharedValue], changes: dict
) -> None:
    with pytest.raises(OSError):
        shared_memory.attach(_reference(files, **changes))


def test_a_closed_or_reused_descriptor_is_refused(files: list[shared_memory.SharedValue]) -> None:
    ref = _reference(files)
    files[0].close()
    with pytest.raises(OSError):
        shared_memory.attach(ref)  # the writer let go of it
    # the number now names another shoal file: its token differs
    other = _reference(files)
    os.dup2(files[1].fd, ref[2])
    try:
        with pytest.raises(OSError, match="not the file referred to"):
            shared_memory.attach(ref)
    finally:
        os.close(ref[2])
    del other


def test_files_of_other_kinds_are_never_opened(
    files: list[shared_memory.SharedValue], tmp_path: Path
) -> None:
    ref = _reference(files)
    # a plain file starting with the right token
    with tempfile.TemporaryFile() as f:
        f.write(ref[3] + b"\0" * (ref[4] - 16))
        f.flush()
        with pytest.raises(OSError, match="not a shoal memory file"):
            shared_memory.attach((ref[0], os.getpid(), f.fileno(), *ref[3:]))
    # a FIFO nobody writes to: opening it would block the event loop
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        start = time.monotonic()
        with pytest.raises(OSError, match="not a shoal memory file"):
            shared_memory.attach((ref[0], os.getpid(), fd, *ref[3:]))
        assert time.monotonic() - start < 1
    finally:
        os.close(fd)


def test_unmapped_bytes_counts_what_the_process_has_not_read() -> None:
    value, file = shared(np.ones(8 * MiB))  # 64 MiB
    assert shared_memory.unmapped_bytes(0) == 0
    before = shared_memory._resident_shared()
    value.sum()  # reading the pages maps them into this process (RssShmem)
    after = shared_memory._resident_shared()
    assert after - before >= file.size // 2
    assert shared_memory.unmapped_bytes(file.size) == max(0, file.size - after)
    file.close()
