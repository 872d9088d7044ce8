"""Large values shared between the processes of one host, without copying them again.

A value whose out-of-band buffers (numpy arrays, pandas blocks) are large is written
once into a *memory file* (``memfd_create``), which is then sealed: nobody, the writer
included, can change it any more. The process that wrote it keeps the file open and
holds the value as views of a private, copy-on-write mapping of it. A peer on the
same host that asks for the value gets a reference instead of the bytes (the
writer's pid, the file's descriptor number, a random token written at the start of
the file, the buffers' offsets, and the small pickle header) and maps the same file
through ``/proc/<pid>/fd/<n>``. Moving 256 MB between two workers then costs a
mapping, not two copies through a socket.

* **The copy happens before anyone asks**, as in Ray's object store: the worker
  writes a large result into its file in the background when the task finishes, then
  holds the file's version instead of the original (the memory used does not double).
* **Mappings are private** (``MAP_PRIVATE``): a task that writes into an array it
  received gets its own copy of the pages it writes; the file never changes.
* **Nothing leaks**: the kernel frees a memory file when its last descriptor and its
  last mapping are gone, so a process that dies takes its files with it.
* **Checked, and optional**: the receiver opens the file only if the reference names
  a sealed memory file starting with the expected token; anything else (another host,
  another pid namespace or user, the key freed meanwhile, no ``/proc``) makes it ask
  for the bytes over the socket instead.
* **Off by default** (``comm.shared-memory: true`` turns it on;
  ``comm.shared-memory-threshold`` is the smallest value shared): the copy into new
  shared memory is paid by every large result, moved or not. Measured on a 2-core VM,
  writing 128 MB into a new memory file took 60 ms (fresh shared pages come 4 KiB at a
  time), up to 0.9 s with two workers doing it at once, and persisting 16 chunks of
  128 MB took 2.5x as long; moving a 256 MB array then took 2 ms instead of 60.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import secrets
import sys
from collections.abc import Sequence
from functools import cache
from typing import Any

from shoal._types import Key
from shoal.comm.rpc import ConnectionPool
from shoal.errors import RemoteProtocolError, SerializeError
from shoal.protocol.frames import frame_nbytes
from shoal.protocol.messages import DataReply, GetData
from shoal.protocol.opaque import Frame, Opaque
from shoal.protocol.serialize import dumps, loads

__all__ = [
    "SharedValue",
    "attach",
    "enabled",
    "identity",
    "request_data",
    "share",
    "unmapped_bytes",
]

logger = logging.getLogger("shoal.comm.shared_memory")

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


@cache
def identity() -> str | None:
    """Who can map this process's memory files: this kernel boot, pid namespace and
    user (``/proc/<pid>`` means the same process to both sides only within one pid
    namespace, and opening another process's descriptors needs the same user). None
    where memory files can't be shared."""
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create"):
        return None
    if not hasattr(fcntl, "F_ADD_SEALS"):
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        pidns = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{pidns.st_ino}/{os.getuid()}"


def enabled() -> bool:
    """Whether this process shares large values through memory (``comm.shared-memory``)."""
    from shoal import config

    return bool(config.get("comm.shared-memory")) and identity() is not None


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

    def frames(self, mapping: mmap.mmap) -> list[Frame]:
        """The value's frames: its header, then views of its buffers in ``mapping``."""
        view = memoryview(mapping)
        s = self.spans
        return [self.header, *(view[s[i] : s[i] + s[i + 1]] for i in range(0, len(s), 2))]


def _map_private(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)


def _write_all(fd: int, data: Frame, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _publish(header: bytes, buffers: Sequence[Frame]) -> tuple[SharedValue, mmap.mmap]:
    """Write ``buffers`` into a new sealed memory file; map it privately."""
    spans: list[int] = []
    offset = _FIRST
    for buf in buffers:
        n = frame_nbytes(buf)
        spans += (offset, n)
        offset += n + (-n % _ALIGN)
    size = offset
    token = secrets.token_bytes(_TOKEN_BYTES)
    fd = os.memfd_create("shoal-value", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        _write_all(fd, token, 0)
        for buf, start in zip(buffers, spans[::2], strict=True):
            _write_all(fd, buf, start)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        mapping = _map_private(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return SharedValue(fd, token, header, tuple(spans), size), mapping


def share(value: Any, min_bytes: int) -> tuple[Any, SharedValue] | None:
    """``value`` rebuilt on a sealed memory file, and that file; None when its
    out-of-band buffers total less than ``min_bytes`` or it can't be pickled.

    Runs in a worker's background thread: the writes release the GIL.
    """
    try:
        frames = dumps(value).frames
    except SerializeError:
        return None
    header, buffers = frames[0], frames[1:]
    if sum(frame_nbytes(b) for b in buffers) < min_bytes:
        return None
    try:
        shared, mapping = _publish(bytes(header), buffers)
    except OSError:  # no memory files here, out of descriptors or of memory
        return None
    try:
        return loads(Opaque(shared.frames(mapping))), shared
    except SerializeError:
        shared.close()
        return None


def attach(reference: Any) -> tuple[Opaque, SharedValue]:
    """Map the memory file a peer on this host refers to; return the value's frames
    and the file, open (the caller closes it, or keeps it to share the value on).

    Raises ``OSError`` when the file can't be opened or isn't what the reference says
    (the peer freed the key meanwhile, another pid namespace): ask for the bytes then.
    """
    try:
        header_opaque, pid, number, token, size, spans = reference
        (header,) = header_opaque.frames
        valid = (
            isinstance(pid, int)
            and isinstance(number, int)
            and isinstance(token, bytes)
            and len(token) == _TOKEN_BYTES
            and isinstance(size, int)
            and isinstance(spans, tuple)
            and len(spans) % 2 == 0
            and all(
                isinstance(spans[i], int)
                and isinstance(spans[i + 1], int)
                and spans[i] >= _FIRST
                and 0 <= spans[i + 1] <= size - spans[i]
                for i in range(0, len(spans), 2)
            )
        )
    except (TypeError, ValueError, AttributeError):
        valid = False
    if not valid:
        raise OSError("malformed shared-memory reference")
    fd = os.open(f"/proc/{pid}/fd/{number}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Only a memory file can carry these seals: nothing else is mapped, and its
        # content can't change under the mapping.
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
            raise OSError(f"/proc/{pid}/fd/{number} is not a sealed memory file")
        if os.fstat(fd).st_size != size or os.pread(fd, _TOKEN_BYTES, 0) != token:
            raise OSError(f"/proc/{pid}/fd/{number} is not the file referred to")
        mapping = _map_private(fd, size)
    except BaseException:
        os.close(fd)
        raise
    shared = SharedValue(fd, token, bytes(header), spans, size)
    return Opaque(shared.frames(mapping)), shared


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


async def request_data(
    pool: ConnectionPool, address: str, keys: Sequence[Key], who: str | None = None
) -> tuple[dict[Key, Opaque], tuple[Key, ...], dict[Key, SharedValue]]:
    """Ask the server at ``address`` for ``keys`` (``get-data``): the serialized values
    it sent, the keys it lacked, and the open memory files of the values mapped here.

    Values the server shares through memory files of this host are mapped, not
    copied; a file that can't be mapped (the server freed the key meanwhile) is asked
    for again as bytes. Raises what ``pool.request`` raises.
    """
    mine = identity() if enabled() else None
    reply = await _request(pool, address, GetData(keys=tuple(keys), who=who, shared_memory=mine))
    opaques = dict(reply.data)
    missing = list(reply.missing)
    files: dict[Key, SharedValue] = {}
    again = []
    for key, ref in reply.shared.items():
        try:
            opaques[key], files[key] = attach(ref)
        except OSError as e:
            logger.debug("could not map %r from %s (%s); asking for its bytes", key, address, e)
            again.append(key)
    if again:
        retry = await _request(pool, address, GetData(keys=tuple(again), who=who))
        opaques.update(retry.data)
        missing += retry.missing
    return opaques, tuple(missing), files


async def _request(pool: ConnectionPool, address: str, msg: GetData) -> DataReply:
    reply = await pool.request(address, msg)
    if not isinstance(reply, DataReply):
        raise RemoteProtocolError(f"expected a 'data' reply from {address}, got {reply.op!r}")
    if not isinstance(reply.data, dict) or not isinstance(reply.shared, dict):
        raise RemoteProtocolError(f"malformed 'data' reply from {address}")
    return reply
