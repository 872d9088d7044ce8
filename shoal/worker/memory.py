"""Memory limits: parsing ``--memory-limit`` values (enforcement arrives with the nanny)."""

from __future__ import annotations

import math
import os
import re

import psutil

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
}


def parse_bytes(text: str | int | float) -> int:
    """Parse ``"4GB"``, ``"512 MiB"``, ``"1e9"`` or a number into bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"could not parse {text!r} as a size; use e.g. '4GB', '512MiB', 2e9")
    try:
        number = float(m.group(1))
    except ValueError:
        raise ValueError(f"could not parse {text!r} as a size") from None
    return int(number * _UNITS[m.group(2).lower()])


def system_memory() -> int:
    """Memory available to this process: physical memory, capped by cgroup limits."""
    limit = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit() and 0 < int(value) < limit:
            limit = int(value)
    return limit


def parse_memory_limit(
    limit: str | int | float | None, nthreads: int, total_cores: int | None = None
) -> int:
    """The memory limit in bytes, as ``dask worker --memory-limit`` understands it.

    ``"auto"`` gives this worker its share of the machine by threads; a number ≤ 1 is a
    fraction of the machine's memory; ``0``/``None`` means no limit (returns 0).
    """
    if limit is None:
        return 0
    total = system_memory()
    if isinstance(limit, str) and limit.strip().lower() == "auto":
        cores = total_cores or os.cpu_count() or 1
        return int(total * min(1.0, nthreads / cores))
    if isinstance(limit, str):
        try:
            as_float = float(limit)
        except ValueError:
            return min(parse_bytes(limit), total)
        limit = as_float
    if limit <= 0 or math.isnan(limit):
        return 0
    if limit <= 1:
        return int(total * limit)
    return int(limit)
