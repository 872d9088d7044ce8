"""Large arrays shared between the processes of one host, without copying them again.

With ``comm.shared-memory: true``, a worker writes a task result that is a large numpy
array (``comm.shared-memory-threshold``) into a *memory file* (``memfd_create``) as
the task finishes, then seals it: nobody, the writer included, can change it any
more. The worker keeps the file open and holds the array as a read-only view of it. A
peer or client on the same host that asks for the value gets a reference instead of
the bytes (the writer's pid, the file's descriptor number, a random token written at
the start of the file, the array's offset in it, and the small pickle header), and
maps the same file through ``/proc/<pid>/fd/<n>``. Moving 256 MB between two workers
then costs a mapping, not two copies through a socket.

* **The copy happens before anyone asks**, as in Ray's object store: in the task's
  thread, before the task is reported done. The worker then holds the file's version
  instead of the original, so the memory used does not double.
* **Only plain numpy arrays** (no object items, contiguous): they come back from the
  file exactly as they were, without a copy. Other values travel over the socket.
* **Read-only where it was made**, like Ray's: a task on the same worker that writes
  into the array gets an error instead of silently diverging from the copies that
  peers map. A receiver's mapping is private and writable (copy on write: writing
  changes its own pages, never the file).
* **Nothing leaks**: the kernel frees a memory file when its last descriptor and its
  last mapping are gone, so a process that dies takes its files with it.
* **Checked**: the receiver opens only what ``/proc`` names as a shoal memory file,
  sealed, of the announced size and starting with the token; anything else (another
  host, another pid namespace or user, the key freed meanwhile, no ``/proc``) makes it
  ask for the bytes over the socket instead. Any process that can map files offers to
  (``get-data`` carries its :func:`identity`); the setting decides whether a worker
  writes them.
* **Off by default**: every large result pays for the copy into new shared memory,
  moved or not. Measured on a 2-core VM, writing 128 MB into a new memory file took
  60 ms (fresh shared pages come 4 KiB at a time), up to 0.9 s with two workers doing
  it at once, and persisting 16 chunks of 128 MB took 2.5x as long; moving a 256 MB
  array then took 2 ms instead of 60 over the socket (or about 26 copying it out of the
  holder's memory, :mod:`shoal.comm.cross_memory`, which costs nothing up front).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import secrets
import stat
import sys
from collections.abc import Sequence
from typing import Any

from shoal.comm.same_host import process_identity
from shoal.errors import SerializeError
from shoal.protocol.frames import frame_nbytes
from shoal.protocol.opaque import Frame, Opaque
from shoal.protocol.serialize import dumps, loads

__all__ = [
    "SharedValue",
    "attach",
    "enabled",
    "share",
    "supported",
    "unmapped_bytes",
]

logger = logging.getLogger("shoal.comm.shared_memory")

#: the name of shoal's memory files (``/proc`` shows ``/memfd:<name> (deleted)``)
_NAME = "shoal-value"
_TOKEN_BYTES = 16
#: buffers start this far into the file, each on a multiple of _ALIGN
_FIRST = 64
_ALIGN = 64
_SEALS = (
    getattr(fcntl, "F_SEAL_SEAL", 0)
    | getattr(fcntl, "F_SEAL_SHRINK", 0)
    | getattr(fcntl, "F_SEAL_GROW", 0)
    | getattr(fcntl, "F_SEAL_WRITE", 0)
)


def supported() -> bool:
    """Whether this system has sealed memory files, and peers on this host can name them
    (:func:`shoal.comm.same_host.process_identity`)."""
    return (
        hasattr(os, "memfd_create")
        and hasattr(fcntl, "F_ADD_SEALS")
        and process_identity() is not None
    )


def enabled() -> bool:
    """Whether this process shares large values through memory (``comm.shared-memory``)."""
    from shoal import config

    return bool(config.get("comm.shared-memory")) and supported()


class SharedValue:
    """An open, sealed memory file holding the buffers of one value.

    ``header`` is the value's pickle stream; ``spans`` the (offset, length) of each
    out-of-band buffer in the file. :meth:`close` closes the descriptor (the memory is
    freed once the mappings are gone too).
    """

    __slots__ = ("fd", "header", "size", "spans", "token")

    def __init__(
        self, fd: int, token: bytes, header: bytes, spans: tuple[int, ...], size: int
    ) -> None:
        self.fd = fd
        self.token = token
        self.header = header
        self.spans = spans
        self.size = size

    def reference(self) -> tuple[Any, ...]:
        """What a peer needs to map the file: ``(header, pid, fd, token, size, spans)``."""
        return (Opaque([self.header]), os.getpid(), self.fd, self.token, self.size, self.spans)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def _frames(header: bytes, spans: tuple[int, ...], mapping: mmap.mmap) -> Opaque:
    """A value's frames: its header, then views of its buffers in ``mapping``."""
    view = memoryview(mapping)
    buffers = (view[spans[i] : spans[i] + spans[i + 1]] for i in range(0, len(spans), 2))
    return Opaque([header, *buffers])


def _map(fd: int, size: int, *, writable: bool) -> mmap.mmap:
    if writable:  # copy on write: the file never changes
        return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)


def _write_all(fd: int, data: Frame, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _publish(header: bytes, buffers: Sequence[Frame]) -> tuple[SharedValue, mmap.mmap]:
    """Write ``buffers`` into a new sealed memory file; map it read-only."""
    spans: list[int] = []
    offset = _FIRST
    for buf in buffers:
        n = frame_nbytes(buf)
        spans += (offset, n)
        offset += n + (-n % _ALIGN)
    size = offset
    token = secrets.token_bytes(_TOKEN_BYTES)
    fd = os.memfd_create(_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        _write_all(fd, token, 0)
        for buf, start in zip(buffers, spans[::2], strict=True):
            _write_all(fd, buf, start)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        mapping = _map(fd, size, writable=False)
    except BaseException:
        os.close(fd)
        raise
    return SharedValue(fd, token, header, tuple(spans), size), mapping


def share(value: Any, min_bytes: int) -> tuple[Any, SharedValue] | None:
    """``value`` as a read-only view of a new sealed memory file, and that file; None
    unless ``value`` is a contiguous numpy array of plain items of ``min_bytes`` or more.

    The calling thread makes the copy (a worker's task thread; the writes release the
    GIL). Other values are never shared: a round trip through pickle could change them
    (state a ``__getstate__`` leaves out) or copy them (object items, strided views).
    """
    np = sys.modules.get("numpy")  # an array can only exist if numpy is imported
    if (
        np is None
        or type(value) is not np.ndarray
        or value.dtype.hasobject
        or value.nbytes < min_bytes
        or not (value.flags.c_contiguous or value.flags.f_contiguous)
    ):
        return None
    try:
        header, *buffers = dumps(value).frames
    except SerializeError:
        return None
    try:
        shared, mapping = _publish(bytes(header), buffers)
    except OSError:  # no memory files here, out of descriptors or of memory
        return None
    try:
        return loads(_frames(shared.header, shared.spans, mapping)), shared
    except SerializeError:
        shared.close()
        return None


def attach(reference: Any) -> Opaque:
    """The frames of a value on the memory file a peer on this host refers to, as views
    of a private mapping of that file (writable, copy on write).

    Raises ``OSError`` when the file can't be opened or isn't what the reference says
    (the peer freed the key meanwhile, another pid namespace): ask for the bytes then.
    """
    try:
        header_opaque, pid, number, token, size, spans = reference
        (header,) = header_opaque.frames
        valid = (
            type(pid) is int
            and type(number) is int
            and pid > 0
            and number >= 0
            and isinstance(token, bytes)
            and len(token) == _TOKEN_BYTES
            and type(size) is int
            and isinstance(spans, tuple)
            and len(spans) % 2 == 0
            and all(
                type(spans[i]) is int
                and type(spans[i + 1]) is int
                and spans[i] >= _FIRST
                and 0 <= spans[i + 1] <= size - spans[i]
                for i in range(0, len(spans), 2)
            )
        )
    except (TypeError, ValueError, AttributeError):
        valid = False
    if not valid:
        raise OSError("malformed shared-memory reference")
    path = f"/proc/{pid}/fd/{number}"
    # Open nothing but a memory file of shoal's: a FIFO would block, a device would
    # be opened. Seals, size and token then make sure it is the file referred to.
    if not os.readlink(path).startswith(f"/memfd:{_NAME} "):
        raise OSError(f"{path} is not a shoal memory file")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
            raise OSError(f"{path} is not a sealed memory file")
        if st.st_size != size or os.pread(fd, _TOKEN_BYTES, 0) != token:
            raise OSError(f"{path} is not the file referred to")
        mapping = _map(fd, size, writable=True)
    finally:
        os.close(fd)  # the mapping keeps the file alive
    return _frames(bytes(header), spans, mapping)


def _resident_shared() -> int:
    """Bytes of shared memory resident in this process's mappings (``RssShmem``)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"RssShmem:"):
                return int(line.split()[1]) * 1024
    return 0


def unmapped_bytes(held: int) -> int:
    """How much of the ``held`` bytes of memory files this process keeps open its
    resident memory does not show: a file's pages count in a process's RSS only once it
    reads them, but stay in memory as long as the file is open."""
    return max(0, held - _resident_shared()) if held else 0
