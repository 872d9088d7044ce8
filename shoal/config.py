"""Configuration: defaults < YAML file < ``SHOAL_*`` environment variables < keywords.

Settings have dotted names (``comm.max-message-bytes``). The YAML file is the one named
by ``SHOAL_CONFIG``, else ``~/.config/shoal/shoal.yaml`` when it exists; nested maps in it
flatten to dotted names. An environment variable ``SHOAL_COMM__MAX_MESSAGE_BYTES=1e9``
sets ``comm.max-message-bytes`` (``__`` separates levels, ``_`` stands for ``-``); its
value is parsed as YAML, so numbers and booleans come out typed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    # Transport limits, checked before allocating (see protocol/frames.py).
    "comm.max-frames": 1_000_000,
    "comm.max-header-bytes": 64 * 2**20,
    "comm.max-message-bytes": 2 * 2**30,
    "comm.timeouts.connect": 30.0,
    # The event loop of the client's loop thread and of the shoal command's processes:
    # auto (uvloop where installed), uvloop, or asyncio. See shoal/_loop.py.
    "event-loop": "auto",
    # Admin messages sent in one event-loop turn go out as one write; with a
    # positive interval, a stream also waits this long (seconds) between writes.
    "comm.batch-interval": 0.0,
    # A tcp:// peer on this host is reached over a Unix socket (comm/same_host.py).
    "comm.same-host-sockets": True,
    # A worker writes a result whose buffers total at least the threshold into a
    # memory file that peers on this host map instead of copying (comm/shared_memory.py).
    # Off by default: every such result then costs a copy into new shared memory.
    "comm.shared-memory": False,
    "comm.shared-memory-threshold": "64 MiB",
    # A same-host asker copies a value whose buffers total at least the threshold
    # straight out of the worker's memory (comm/cross_memory.py), not through a socket.
    "comm.cross-memory": True,
    "comm.cross-memory-threshold": "8 MiB",
    # A worker (with a memory limit) writes a large body it receives into a mapping it
    # received into before and no longer uses, of the same size (protocol/recycle.py):
    # at most this much (and a tenth of the limit) kept idle, 5 s at most (0: off).
    "comm.recycle-bytes": "1 GiB",
    "scheduler.allowed-failures": 3,
    # Events and transitions kept for story() (each log; older entries are dropped);
    # the scheduler's event log also keeps the graphs of at most that many tasks.
    "scheduler.log-size": 10_000,
    "worker.log-size": 10_000,
    # Events kept per topic by Scheduler.log_event, and task-stream records kept.
    "scheduler.events-length": 100_000,
    "scheduler.task-stream-length": 100_000,
    # When no task is left to run after at least this many ran since the last time (or
    # a minute after the last time, if some task stays active), the scheduler's process
    # gives the heap memory it freed back to the system (glibc's malloc_trim; a few ms).
    # 0: never.
    "scheduler.trim-memory-after": 10_000,
    # The journal a restarted scheduler recovers from (None: no journal); fsync each
    # record (survives power loss, not only a killed process); compact past this size;
    # how long a recovered scheduler waits for the workers it knew before moving their work.
    "scheduler.journal.path": None,
    "scheduler.journal.fsync": False,
    "scheduler.journal.compact-bytes": 256 * 2**20,
    "scheduler.journal.recovery-timeout": 20.0,
    # Processes that run a scheduler or a worker raise the garbage collector's first
    # threshold to this (0: leave Python's). Every task makes short-lived containers;
    # at Python's 700 the collector took about half of a scheduler's time; at 50,000,
    # 8% of the scheduler's and 10% of a worker's on no-op tasks, at 200,000 half that
    # (the longest pause, 60-90 ms, was the same).
    "gc.threshold0": 200_000,
    # the cluster's shared secret, or a file holding it (see shoal.security)
    "auth-token": None,
    "auth-token-file": None,
    # TLS files for tls:// addresses: the CA, and this process's certificate and key
    "tls.ca-file": None,
    "tls.cert": None,
    "tls.key": None,
    "scheduler.validate": False,
    # root tasks per worker thread before the rest wait on the scheduler ("inf": no queuing)
    "scheduler.worker-saturation": 1.1,
    # seconds assumed for a task whose kind never ran yet
    "scheduler.unknown-task-duration": 0.5,
    # bytes/s assumed between workers, to weigh moving data against computing
    "scheduler.bandwidth": 100e6,
    "scheduler.work-stealing": True,
    # how often the scheduler balances work and checks its timers, in seconds
    "scheduler.tick-interval": 0.1,
    # seconds a task may wait while workers are connected but none may run it
    # (resources, workers=) before it errs with NoValidWorker; None: forever
    "scheduler.no-workers-timeout": 60.0,
    # seconds without a word from a worker (heartbeats come every second) before it is
    # taken for dead; None: never
    "scheduler.worker-ttl": 300.0,
    # seconds a client whose connection broke has to come back before its keys go
    "scheduler.client-timeout": 30.0,
    # Semaphore/Lock leases: a lease its holder has not refreshed for lease-timeout
    # seconds (the holder died) is given back; checked every lease-validation-interval
    "scheduler.locks.lease-timeout": 30.0,
    "scheduler.locks.lease-validation-interval": 10.0,
    # seconds a client that lost the scheduler keeps trying to connect again
    "client.reconnect-timeout": 30.0,
    "worker.heartbeat-interval": 1.0,
    # Tasks expected to run under 1 ms that may queue on each busy thread, so that a
    # thread goes from one to the next without waiting for the event loop (0: none).
    "worker.prefetch-short-tasks": 16,
    # A result that serializes to at most this many bytes goes to the scheduler with
    # the task's completion, and on to the clients that want it (no gather round trip).
    "worker.inline-result-bytes": 1024,
    # seconds a fetch from a peer may take (plus 1 s per 50 MB) before the peer is
    # taken for unreachable and another holder is asked
    "worker.transfer-timeout": 30.0,
    # seconds a worker that lost the scheduler keeps trying to register again
    "worker.reconnect-timeout": 60.0,
    # fractions of the memory limit (distributed's defaults): spill results to disk
    # above `target` of it held in results, or `spill` of it used by the process; stop
    # starting tasks above `pause`; the nanny restarts the worker above `terminate`
    "worker.memory.target": 0.6,
    "worker.memory.spill": 0.7,
    "worker.memory.pause": 0.8,
    "worker.memory.terminate": 0.95,
    # seconds between two looks at the process's memory
    "worker.memory.monitor-interval": 0.1,
    "client.heartbeat-interval": 5.0,
    # Warn when one task's pickled run spec is this large (data embedded in the graph).
    "client.large-object-warning-bytes": 10 * 2**20,
    # A larger graph goes to the scheduler in pieces of this many tasks, in priority
    # order: workers start on the first piece while the client builds the rest (0: one
    # piece, whatever the size).
    "client.graph-piece-tasks": 4096,
}


def _flatten(prefix: str, obj: Mapping[str, Any], out: dict[str, Any]) -> None:
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            _flatten(name + ".", v, out)
        else:
            out[name] = v


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, raw in env.items():
        if not var.startswith("SHOAL_") or var == "SHOAL_CONFIG":
            continue
        name = ".".join(p.lower().replace("_", "-") for p in var[len("SHOAL_") :].split("__"))
        try:
            out[name] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[name] = raw
    return out


def load(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Return the effective settings as a flat ``{dotted-name: value}`` dict.

    Overrides take dotted names: ``load(**{"comm.max-message-bytes": 10**9})``.
    """
    env = os.environ if env is None else env
    settings = dict(DEFAULTS)
    if path is None:
        path = env.get("SHOAL_CONFIG") or None
        default = Path.home() / ".config" / "shoal" / "shoal.yaml"
        if path is None and default.exists():
            path = default
    if path is not None:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"config file {path} must hold a mapping, not {type(data).__name__}")
        _flatten("", data, settings)
    settings.update(_from_env(env))
    settings.update(overrides)
    return settings


_cached: dict[str, Any] | None = None


def tune_gc() -> None:
    """Raise the garbage collector's thresholds as ``gc.threshold0`` says (never lower)."""
    import gc

    target = int(get("gc.threshold0") or 0)
    g0, g1, g2 = gc.get_threshold()
    if target > g0:
        gc.set_threshold(target, max(g1, 20), max(g2, 20))


def get(name: str, default: Any = None) -> Any:
    """Return one setting from the process-wide configuration (loaded once)."""
    global _cached
    if _cached is None:
        _cached = load()
    return _cached.get(name, default)


def refresh() -> None:
    """Forget the cached configuration (tests, or after changing the environment)."""
    global _cached
    _cached = None


_TIME_UNITS = {
    "ms": 1e-3,
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def parse_seconds(value: str | float) -> float:
    """A duration in seconds from a number or a string such as ``"500ms"`` or ``"2 min"``."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = text[len(number) :].strip() or "s"
    if unit not in _TIME_UNITS:
        raise ValueError(f"cannot read {value!r} as a duration (use e.g. '500ms', '2s', '1min')")
    try:
        return float(number) * _TIME_UNITS[unit]
    except ValueError:
        raise ValueError(f"cannot read {value!r} as a duration") from None
