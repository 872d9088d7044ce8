"""Memory thresholds (pure) and the memory monitor, with a fake process memory."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from shoal import config
from shoal.worker import memory
from shoal.worker.memory import MemoryFractions, MemoryMonitor, format_bytes
from shoal.worker.store import SpillStore

MB = 10**6


def test_fractions_default_to_distributeds(fresh_config: pytest.MonkeyPatch) -> None:
    assert MemoryFractions.from_config() == MemoryFractions(0.6, 0.7, 0.8, 0.95)


@pytest.mark.parametrize("off", ["False", "false", "0", "null", "0.0"])
def test_a_fraction_is_turned_off_by_false_none_or_zero(
    fresh_config: pytest.MonkeyPatch, off: str
) -> None:
    fresh_config.setenv("SHOAL_WORKER__MEMORY__PAUSE", off)
    config.refresh()
    f = MemoryFractions.from_config()
    assert f.pause is None
    assert f.spill == 0.7
    assert not f.should_pause(10**12, 100)


def test_a_bad_fraction_is_refused(fresh_config: pytest.MonkeyPatch) -> None:
    fresh_config.setenv("SHOAL_WORKER__MEMORY__SPILL", "-1")
    config.refresh()
    with pytest.raises(ValueError, match=r"worker\.memory\.spill"):
        MemoryFractions.from_config()


def test_thresholds() -> None:
    f = MemoryFractions()
    assert f.store_target(1000) == 600
    assert f.store_target(0) is None  # no limit: no spilling
    assert f.spill_goal(700, 1000) is None
    assert f.spill_goal(701, 1000) == 600
    assert f.spill_goal(10**9, 0) is None
    assert not f.should_pause(800, 1000)
    assert f.should_pause(801, 1000)
    assert not f.should_pause(801, 0)
    # without target, spilling stops at the spill threshold (no hysteresis)
    no_target = MemoryFractions(target=None)
    assert no_target.store_target(1000) is None
    assert no_target.spill_goal(701, 1000) == 700
    assert not MemoryFractions(spill=None, pause=None).monitors_process


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1_500_000) == "1.43 MiB"


class FakeProcess:
    """Process memory: ``base`` plus the values the store holds in memory."""

    def __init__(self, store: SpillStore, base: int) -> None:
        self.store = store
        self.base = base
        self.readings = 0

    def __call__(self) -> int:
        self.readings += 1
        return self.base + self.store.fast_nbytes


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpillStore]:
    s = SpillStore(target=None, local_directory=str(tmp_path))
    yield s
    s.close()


def fill(store: SpillStore, n: int, size: int) -> None:
    for i in range(n):
        store[f"x{i}"] = bytes(size)


async def test_the_monitor_spills_down_to_the_target(
    store: SpillStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = FakeProcess(store, base=10 * MB)
    monkeypatch.setattr(memory, "process_memory", proc)
    calls: list[bool] = []
    monitor = MemoryMonitor(store, 100 * MB, calls.append)
    try:
        fill(store, 6, 10 * MB)  # 70 MB: not above the spill threshold
        await monitor.check()
        assert store.spilled_keys() == set()
        store["x6"] = bytes(10 * MB)  # 80 MB
        await monitor.check()
        # down to 60 MB (target), oldest first
        assert store.spilled_keys() == {"x0", "x1"}
        assert monitor.memory == 60 * MB
        assert calls == []  # 80 MB is not above the pause threshold
    finally:
        monitor.stop()


async def test_the_monitor_pauses_and_unpauses(
    store: SpillStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rss = [85 * MB]
    monkeypatch.setattr(memory, "process_memory", lambda: rss[0])
    calls: list[bool] = []
    monitor = MemoryMonitor(store, 100 * MB, calls.append, name="w")
    try:
        with caplog.at_level(logging.WARNING, logger="shoal.worker.memory"):
            await monitor.check()
            assert calls == [True]
            assert monitor.paused
            await monitor.check()
            assert calls == [True]  # said once
            rss[0] = 50 * MB
            await monitor.check()
            assert calls == [True, False]
            assert not monitor.paused
        messages = [r.getMessage() for r in caplog.records if "pauses" in r.getMessage()]
        assert len(messages) == 1
        assert "85.0%" in messages[0]
        assert "80%" in messages[0]
        assert any("runs again" in r.getMessage() for r in caplog.records)
    finally:
        monitor.stop()


async def test_unmanaged_memory_is_reported_once(
    store: SpillStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proc = FakeProcess(store, base=75 * MB)  # above the spill threshold on its own
    monkeypatch.setattr(memory, "process_memory", proc)
    monitor = MemoryMonitor(store, 100 * MB, lambda paused: None, name="w")
    try:
        store["a"] = bytes(MB)
        with caplog.at_level(logging.WARNING, logger="shoal.worker.memory"):
            await monitor.check()
            await monitor.check()
        assert store.spilled_keys() == {"a"}  # everything went, to no avail
        stuck = [r for r in caplog.records if "no value is left" in r.getMessage()]
        assert len(stuck) == 1
    finally:
        monitor.stop()


async def test_unpicklable_values_stay_and_are_named_in_the_warning(
    store: SpillStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(memory, "process_memory", lambda: 90 * MB)
    monitor = MemoryMonitor(store, 100 * MB, lambda paused: None, name="w")
    try:
        store.put("lock", threading.Lock(), nbytes=MB)
        with caplog.at_level(logging.WARNING):
            await monitor.check()
        assert store.memory_keys() == {"lock"}
        assert any("cannot be spilled" in r.getMessage() for r in caplog.records)
    finally:
        monitor.stop()


async def test_workers_sharing_a_process_share_its_limit(
    store: SpillStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(memory, "process_memory", lambda: 150 * MB)
    calls: list[bool] = []
    a = MemoryMonitor(store, 100 * MB, calls.append)
    b = MemoryMonitor(SpillStore(local_directory=str(tmp_path)), 100 * MB, calls.append)
    try:
        assert a.process_limit == 200 * MB
        await a.check()  # 75% of 200 MB: spill (nothing to spill), no pause
        assert calls == []
        b.stop()
        assert a.process_limit == 100 * MB
        await a.check()
        assert calls == [True]
    finally:
        a.stop()
        b.stop()


async def test_no_limit_no_monitoring(store: SpillStore, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = FakeProcess(store, base=10**12)
    monkeypatch.setattr(memory, "process_memory", proc)
    monitor = MemoryMonitor(store, 0, lambda paused: None)
    try:
        await monitor.check()
        assert proc.readings == 0
    finally:
        monitor.stop()


def test_process_memory_is_this_processs_rss() -> None:
    assert memory.process_memory() > 10 * MB


@pytest.mark.parametrize("from_proc", [True, False], ids=["proc-statm", "psutil"])
def test_resident_memory_follows_its_process_until_it_ends(
    monkeypatch: pytest.MonkeyPatch, from_proc: bool
) -> None:
    if from_proc and not Path("/proc/self/statm").exists():
        pytest.skip("no /proc here")
    # a child that holds 64 MB, says so, then waits for stdin to close
    script = "import sys\nb = bytearray(64 << 20)\nprint(1, flush=True)\nsys.stdin.read()\n"
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        if not from_proc:  # as on a system without /proc: psutil reads it
            real_open = os.open

            def no_statm(path: str, *args: Any, **kwargs: Any) -> int:
                if str(path).endswith("/statm"):
                    raise PermissionError(path)
                return real_open(path, *args, **kwargs)

            monkeypatch.setattr(os, "open", no_statm)
        reader = memory.ResidentMemory(child.pid)
        assert (reader._fd is not None) is from_proc
        assert child.stdout is not None and child.stdout.readline()
        assert reader.rss() >= 64 * MB
        assert abs(reader.rss() - psutil.Process(child.pid).memory_info().rss) < 4 * MB
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert reader.rss() == 0  # ended (and reaped): not whatever process gets its pid
    with pytest.raises(psutil.NoSuchProcess):
        memory.ResidentMemory(child.pid)


@pytest.mark.parametrize("from_proc", [True, False], ids=["proc-children", "psutil"])
def test_descendants_finds_children_and_grandchildren(
    monkeypatch: pytest.MonkeyPatch, from_proc: bool
) -> None:
    if from_proc and not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("this kernel does not list children in /proc")
    monkeypatch.setattr(memory, "_proc_children", from_proc)
    # a child that starts a grandchild, prints its pid, then waits for stdin to close
    script = (
        "import subprocess, sys\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
        " stdin=subprocess.PIPE)\n"
        "print(g.pid, flush=True)\n"
        "sys.stdin.read()\n"
        "g.stdin.close(); g.wait()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        # (other tests may have left processes of their own under this one)
        assert {child.pid, grandchild} <= set(memory.descendants(os.getpid()))
        assert memory.descendants(child.pid) == [grandchild]
        assert memory.descendants(grandchild) == []
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert memory.descendants(child.pid) == []  # ended
