"""Giving freed heap memory back to the system, where the C library allows it."""

from __future__ import annotations

from typing import Any

_libc: Any = None


def trim_memory() -> bool:
    """Give the heap memory freed so far back to the system (glibc's ``malloc_trim``).

    glibc keeps freed memory for reuse unless ``MALLOC_TRIM_THRESHOLD_`` was set when the
    process started, so the RSS of a process that freed a lot (a worker that spilled its
    values, a scheduler that ran a large graph) may not fall at all. Takes a few
    milliseconds for a heap of a few hundred megabytes. Returns False where there is no
    ``malloc_trim`` (another libc, another system).
    """
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018 - fails here without glibc
        except (OSError, AttributeError):
            _libc = False
    if _libc is False:
        return False
    _libc.malloc_trim(0)
    return True
