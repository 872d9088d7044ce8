"""Same-host transfer by copying straight out of the holder's memory (``process_vm_readv``).

Over a socket, a large buffer is copied twice: by the sender into the kernel, and by
the receiver out of it. When the asker runs on the same host, in the same pid
namespace and as the same user (:func:`shoal.comm.same_host.process_identity`), a worker
instead *lends* it the buffers: its reply to ``get-data`` carries, for each value
with at least ``comm.cross-memory-threshold`` bytes of out-of-band buffers, the small
pickle header and the address and length of each buffer in the worker's memory. The
asker copies them into its own memory with ``process_vm_readv`` (one copy, split
over a few threads, which release the GIL), then tells the worker it is done
(``release-data``).

* **Nothing to pay up front**: unlike memory files (:mod:`shoal.comm.shared_memory`),
  a task's result stays where the task put it; only a transfer costs, and less. On a
  2-core VM, 256 MB went from one worker to another at 10-11 GB/s with two threads
  (close to a memcpy into new memory) where the socket did 3.9 GB/s.
* **Pinned while lent**: the worker keeps the buffers alive until the asker says it is
  done, or for :data:`LEASE_SECONDS` at most (an asker that died never will). The
  lease says how long it lasts: it began after the asker sent its request, so an asker
  whose copy was over well within that (by its own clock, from the request) knows the
  buffers were alive throughout, and uses the copy at once while the release goes out.
  Otherwise it waits for the worker's answer to ``release-data`` (whether the lease
  still held) and, when it did not, discards its copy and asks for the bytes.
* **The right process**: the asker puts a fresh random *nonce* in its request; the
  worker keeps it with the lease and replies with its own pid and the nonce's address
  in its memory. Each copying thread first reads the nonce from that pid and address,
  and copies nothing unless it is there: besides the asker, only the process that got
  the request has it, so a peer naming another process of the user (bytes it can
  guess, such as an executable's header, are no use) gets nothing copied from it.
* **Permission**: reading another process's memory takes what ``ptrace`` takes (same
  user, and on systems with Yama's ``ptrace_scope`` 1 an ancestor: a client can read
  its LocalCluster's workers, workers can't read each other). shoal never loosens
  that; where the kernel refuses, the asker gets the bytes over the socket, and stops
  asking that worker to lend for a while (any worker, for good, where the call does
  not exist: ``ENOSYS`` in a sandbox).
* **Within the same limits as a message**: an asker allocates no more for one reply's
  lent buffers than ``max_message_bytes`` would have let through the socket.

``comm.cross-memory: false`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import secrets
import sys
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any, TypeAlias

from shoal.protocol.frames import DEFAULT_LIMITS, allocate
from shoal.protocol.opaque import Frame, Opaque

__all__ = [
    "LEASE_SECONDS",
    "NONCE_BYTES",
    "Lender",
    "available",
    "enabled",
    "lease_seconds",
    "new_nonce",
    "read",
    "unsupported",
]

#: How long a worker keeps lent buffers alive when the asker doesn't release them.
LEASE_SECONDS = 60.0
NONCE_BYTES = 16
#: copying threads alive at most in a process (a copy stuck on a hung mapping never
#: returns): past that, values come over the socket
_MAX_COPYING = 32
_copying = 0
_copying_lock = threading.Lock()
#: iovecs per process_vm_readv call (the kernel's UIO_MAXIOV)
_IOV_MAX = 1024
#: a copy is split over threads in pieces of at least this many bytes
_MIN_PIECE = 4 << 20
_MAX_THREADS = 4


#: (local address, remote address, length) pieces of one copy
_Run: TypeAlias = list[tuple[int, int, int]]


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer``, to read the address of any buffer, read-only ones too."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_PyBUF_SIMPLE = 0


@cache
def _readv() -> Any:
    """libc's ``process_vm_readv``, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # the symbols the interpreter is linked with, libc's among them (no search)
        func = ctypes.CDLL(None, use_errno=True).process_vm_readv
    except (OSError, AttributeError):
        return None
    func.restype = ctypes.c_ssize_t
    func.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.POINTER(_IoVec),
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    return func


def available() -> bool:
    """Whether this process can copy out of another one's memory (Linux, CPython)."""
    return _readv() is not None and sys.implementation.name == "cpython"


def enabled() -> bool:
    """Whether this process lends and borrows buffers (``comm.cross-memory``)."""
    from shoal import config

    return bool(config.get("comm.cross-memory")) and available() and not _unsupported


_unsupported = False


def unsupported() -> None:
    """The kernel has no ``process_vm_readv`` for this process (``ENOSYS``: a sandbox, a
    seccomp filter): stop offering to copy, from any worker."""
    global _unsupported
    _unsupported = True


def _address(buf: Any) -> int:
    """Where the bytes of ``buf`` (a contiguous buffer) start in this process."""
    view = _PyBuffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(buf), ctypes.byref(view), _PyBUF_SIMPLE)
    try:
        return int(view.buf or 0)
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


def new_nonce() -> bytes:
    """A fresh random nonce for a ``get-data`` request that offers to copy."""
    return secrets.token_bytes(NONCE_BYTES)


class Lender:
    """A worker's lent buffers: kept alive until released or :data:`LEASE_SECONDS` old."""

    def __init__(self, lease_seconds: float = LEASE_SECONDS) -> None:
        self.lease_seconds = lease_seconds
        #: the asker's nonce -> (expiry, the nonce and the buffer views it keeps alive)
        self._leases: dict[bytes, tuple[float, list[Any]]] = {}
        #: bytes lent since this lender was made, all leases together
        self.lent_bytes_total = 0

    def __len__(self) -> int:
        return len(self._leases)

    def lend(
        self, buffers: Sequence[Frame], nonce: bytes, now: float
    ) -> tuple[tuple[int, ...], tuple[int, int, float]] | None:
        """Keep ``buffers`` alive under the asker's ``nonce``; return their ``(address,
        length, …)`` spans and the lease ``(pid, nonce address, seconds)`` the asker
        checks, or None for a malformed nonce or one already lent under."""
        self.expire(now)
        if type(nonce) is not bytes or len(nonce) != NONCE_BYTES or nonce in self._leases:
            return None
        # views hold an export of each buffer: a bytearray can't be resized, nor an mmap
        # closed, while lent
        views = [memoryview(b) for b in buffers]
        spans: list[int] = []
        for view in views:
            spans += (_address(view), view.nbytes)
        self.lent_bytes_total += sum(spans[1::2])
        self._leases[nonce] = (now + self.lease_seconds, [nonce, *views])
        return tuple(spans), (os.getpid(), _address(nonce), float(self.lease_seconds))

    def release(self, nonce: bytes, now: float) -> bool:
        """End a lease; whether it still held (else the asker's copy can't be trusted)."""
        held = self._leases.pop(nonce, None) if type(nonce) is bytes else None
        self.expire(now)
        return held is not None and held[0] >= now

    def expire(self, now: float) -> None:
        """Drop the leases past their time."""
        if self._leases:
            for nonce in [t for t, (expiry, _) in self._leases.items() if expiry < now]:
                del self._leases[nonce]


def _copy(pid: int, pieces: Sequence[tuple[int, int, int]]) -> None:
    """Copy ``(local address, remote address, length)`` pieces from process ``pid``."""
    readv = _readv()
    for start in range(0, len(pieces), _IOV_MAX):
        batch = pieces[start : start + _IOV_MAX]
        local = (_IoVec * len(batch))(*(_IoVec(lo, n) for lo, _, n in batch))
        remote = (_IoVec * len(batch))(*(_IoVec(re, n) for _, re, n in batch))
        want = sum(n for _, _, n in batch)
        got = readv(pid, local, len(batch), remote, len(batch), 0)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"process_vm_readv from pid {pid}: {os.strerror(err)}")
        if got != want:
            raise OSError(f"process_vm_readv from pid {pid} copied {got} of {want} bytes")


def _copy_checked(pid: int, nonce_address: int, nonce: bytes, run: _Run) -> None:
    """:func:`_copy` ``run`` from ``pid``, once the asker's ``nonce`` is found there."""
    check = bytearray(NONCE_BYTES)
    _copy(pid, [(_address(check), nonce_address, NONCE_BYTES)])
    if bytes(check) != nonce:
        raise OSError(f"pid {pid} is not the process that lent the data")
    _copy(pid, run)


async def _in_threads(
    pid: int, nonce_address: int, nonce: bytes, runs: list[_Run], keep: Any
) -> None:
    """Run :func:`_copy_checked` for each run in a thread of its own (started per copy:
    nothing lingers between transfers); raise the first error.

    Each thread holds ``keep`` (the destination buffers) until its copy is over, so a
    caller cancelled meanwhile never frees memory a thread still writes into. Past
    :data:`_MAX_COPYING` threads alive (copies stuck on hung mappings), raises
    ``OSError`` instead of starting more.
    """
    global _copying
    with _copying_lock:
        if _copying + len(runs) > _MAX_COPYING:
            raise OSError(f"{_copying} copies still running")
        _copying += len(runs)
    loop = asyncio.get_running_loop()
    done: list[asyncio.Future[None]] = []

    def settle(future: asyncio.Future[None], error: BaseException | None) -> None:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def work(run: _Run, future: asyncio.Future[None], keep: Any) -> None:
        global _copying
        error: BaseException | None = None
        try:
            _copy_checked(pid, nonce_address, nonce, run)
        except BaseException as e:
            error = e
        finally:
            with _copying_lock:
                _copying -= 1
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, future, error)

    started = 0
    try:
        for run in runs:
            future = loop.create_future()
            threading.Thread(
                target=work, args=(run, future, keep), name="shoal-copy", daemon=True
            ).start()
            done.append(future)
            started += 1
    except BaseException:  # no thread to be had: the runs never started don't count
        with _copying_lock:
            _copying -= len(runs) - started
        raise
    await asyncio.gather(*done)


def _split(pieces: _Run, parts: int) -> list[_Run]:
    """Cut ``pieces`` into ``parts`` runs of about equal bytes (splitting pieces)."""
    total = sum(n for _, _, n in pieces)
    share = math.ceil(total / parts)
    runs: list[_Run] = [[]]
    room = share
    for lo, re, n in pieces:
        while n:
            take = min(n, room)
            runs[-1].append((lo, re, take))
            lo, re, n, room = lo + take, re + take, n - take, room - take
            if not room:
                runs.append([])
                room = share
    return [r for r in runs if r]


def lease_seconds(lease: Any) -> float | None:
    """How long a well-formed lease ``(pid, nonce address, seconds)`` lasts; None for
    anything else."""
    try:
        pid, nonce_address, seconds = lease
    except (TypeError, ValueError):
        return None
    valid = type(pid) is int and pid > 0 and type(nonce_address) is int
    return float(seconds) if valid and type(seconds) in (int, float) else None


async def read(
    lease: Sequence[Any],
    lent: dict[Any, Any],
    nonce: bytes,
    max_bytes: int = DEFAULT_LIMITS.max_message_bytes,
) -> dict[Any, Opaque]:
    """Copy the values a worker lent (``DataReply.lent``, under ``lease``, in answer to a
    request with ``nonce``) into memory of this process: their frames, by key.

    Raises ``OSError`` when the lease or the spans are malformed, they add up to more
    than ``max_bytes`` (the limit a message over the socket would have had), ``nonce``
    isn't at the address the lease says (not the lender's pid), or the kernel refuses
    the copy (with its errno: ``PermissionError`` for ptrace rules).
    """
    if lease_seconds(lease) is None:
        raise OSError("malformed lease")
    pid, nonce_address, _ = lease
    total = 0
    for key, entry in lent.items():
        try:
            header_opaque, spans = entry
            (header,) = header_opaque.frames
            ok = isinstance(spans, tuple) and len(spans) % 2 == 0
            ok = ok and all(type(x) is int and x >= 0 for x in spans)
        except (TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise OSError(f"malformed lent value for {key!r}")
        total += sum(spans[1::2])
    if total > max_bytes:
        raise OSError(f"{total} bytes lent, over the limit of {max_bytes} for one message")
    frames: dict[Any, list[Frame]] = {}
    pieces: _Run = []
    for key, (header_opaque, spans) in lent.items():
        (header,) = header_opaque.frames
        out: list[Frame] = [bytes(header)]
        for i in range(0, len(spans), 2):
            remote, n = spans[i], spans[i + 1]
            buf = allocate(n)
            if n:
                pieces.append((_address(buf), remote, n))
            out.append(memoryview(buf))
        frames[key] = out
    # In threads (the copies release the GIL): the event loop goes on meanwhile, and
    # a large copy is split so that page faults and copying use several cores.
    parts = max(1, min(_MAX_THREADS, os.cpu_count() or 1, total // _MIN_PIECE))
    await _in_threads(pid, nonce_address, nonce, _split(pieces, parts), keep=frames)
    return {key: Opaque(f) for key, f in frames.items()}
