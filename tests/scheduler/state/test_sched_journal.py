"""The journal's pure parts: the event codec, torn records, replay and snapshots."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from sched_builders import A, B, C, failed, finished, make_state, spec, submit, worker
from test_sched_transitions import EXAMPLES, SCENARIOS

from shoal.scheduler.journal import MAGIC, Journal, JournalError, decode_payload, encode_events
from shoal.scheduler.state import (
    DataScattered,
    Event,
    FireAndForgetRequested,
    GraphSubmitted,
    KeysReleased,
    SchedulerState,
    WorkerRemoved,
)
from shoal.scheduler.state.snapshot import snapshot_events


def books(s: SchedulerState) -> dict[str, Any]:
    """Everything the state knows, as comparable plain data."""
    tasks = {
        ts.key: (
            ts.state,
            sorted(ws.address for ws in ts.who_has),
            sorted(cs.client for cs in ts.who_wants),
            ts.processing_on.address if ts.processing_on else None,
            ts.nbytes,
            ts.run_spec,
            sorted(str(d.key) for d in ts.dependencies),
            None if ts.failure is None else (ts.failure.exception_text, ts.failure.blame),
        )
        for ts in s.tasks.values()
    }
    workers = {
        ws.address: (
            sorted(str(t.key) for t in ws.processing),
            sorted(str(t.key) for t in ws.has_what),
        )
        for ws in s.workers.values()
    }
    clients = {cs.client: sorted(str(t.key) for t in cs.wants_what) for cs in s.clients.values()}
    return {"tasks": tasks, "workers": workers, "clients": clients, "counts": dict(s.counts)}


def after_restart(s: SchedulerState) -> dict[str, Any]:
    """What a restart keeps: tasks, wants, values and where, errors (not assignments)."""
    b = books(s)
    return {
        "tasks": {
            k: (v[0] if v[0] in ("memory", "erred") else "pending", *v[1:3], *v[4:])
            for k, v in b["tasks"].items()
        },
        "has_what": {w: v[1] for w, v in b["workers"].items()},
        "clients": b["clients"],
    }


def through_journal(events: list[Event], tmp_path: Path) -> list[Event]:
    j = Journal(tmp_path / "journal")
    j.open()
    for e in events:
        j.append([e])
    j.close()
    return Journal(tmp_path / "journal").recover()


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_survives_the_codec(event: Event) -> None:
    record = encode_events([event])
    assert decode_payload(record[8:]) == [event]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_replaying_the_journal_rebuilds_the_same_state(scenario: Any, tmp_path: Path) -> None:
    original = scenario()
    events = [e for _, e in original.event_log]
    replayed = make_state(no_workers_timeout=original.no_workers_timeout)
    replayed.handle(*through_journal(events, tmp_path))
    assert books(replayed) == books(original)


def _busy_state() -> SchedulerState:
    """Memory, erred, waiting, processing, scattered and fire-and-forget tasks."""
    s = make_state()
    s.handle(worker(A), worker(B, nthreads=2))
    s.handle(DataScattered("c1", {"data": (B,)}, {"data": 100}))
    s.handle(
        submit(
            "c1",
            spec("a"),
            spec("b", "a"),
            spec("c", "b", "data"),
            spec("bad"),
            spec("after-bad", "bad"),
            keys=("c", "after-bad", "data"),
        )
    )
    s.handle(submit("c2", spec("a"), spec("z", "a"), keys=("z", "a")))
    s.handle(submit("c2", spec("ff")), FireAndForgetRequested("c2", ("ff",)))
    s.handle(finished(A, "a"), failed(B, "bad"))
    s.handle(KeysReleased("c2", ("z",)))
    return s


def test_a_snapshot_rebuilds_what_a_restart_keeps(tmp_path: Path) -> None:
    original = _busy_state()
    rebuilt = make_state()
    rebuilt.handle(*through_journal(snapshot_events(original, 10.0), tmp_path))
    assert after_restart(rebuilt) == after_restart(original)
    assert rebuilt.tasks["after-bad"].failure is not None
    assert rebuilt.tasks["after-bad"].failure.blame == "bad"


def test_a_snapshot_holds_each_task_once_whatever_the_number_of_clients(
    tmp_path: Path,
) -> None:
    original = _busy_state()
    # more clients: one wants only a leaf, another only a task nothing depends on
    original.handle(submit("c3", spec("solo")), submit("c4", spec("a"), keys=("a", "c")))
    events = snapshot_events(original, 10.0)
    submitted = [spec.key for e in events if isinstance(e, GraphSubmitted) for spec in e.tasks]
    assert sorted(map(str, submitted)) == sorted(
        str(ts.key) for ts in original.tasks.values() if ts.run_spec is not None
    )
    rebuilt = make_state()
    rebuilt.handle(*through_journal(events, tmp_path))
    assert after_restart(rebuilt) == after_restart(original)
    assert "journal-snapshot" not in rebuilt.clients


def test_a_worker_registering_again_keeps_the_values_it_reports() -> None:
    s = _busy_state()
    held = tuple(ts.key for ts in s.workers[A].has_what)
    assert held == ("a",)
    s.handle(worker(A, keys=held, nbytes={"a": 10}))
    assert s.tasks["a"].state == "memory"
    assert [ws.address for ws in s.tasks["a"].who_has] == [A]
    s.handle(worker(C))
    s.handle(WorkerRemoved(B, safe=True))  # scattered data only B held is gone
    assert "data" not in s.tasks


def test_a_torn_last_record_is_dropped_and_the_journal_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    events = [e for _, e in _busy_state().event_log]
    j = Journal(path)
    j.open()
    j.append(events[:3])
    j.append(events[3:5])
    j.close()
    good = path.stat().st_size
    with path.open("ab") as f:  # a crash in the middle of the third write
        f.write(encode_events(events[5:])[:-7])
    j = Journal(path)
    assert j.recover() == events[:5]
    assert path.stat().st_size == good
    j.open()
    j.append(events[5:])
    j.close()
    assert Journal(path).recover() == events


def test_a_corrupt_record_stops_the_replay_there(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    events = [e for _, e in _busy_state().event_log]
    j = Journal(path)
    j.open()
    j.append(events[:2])
    j.append(events[2:4])
    j.close()
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last record: its checksum fails
    path.write_bytes(bytes(data))
    assert Journal(path).recover() == events[:2]


def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my precious notes\n" * 100)
    with pytest.raises(JournalError, match=r"not a shoal journal.*left untouched"):
        Journal(path).recover()
    assert path.read_bytes() == b"my precious notes\n" * 100


def test_an_unknown_event_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    payload = msgpack.packb((msgpack.packb([("Nope", ())]), []))
    path.write_bytes(MAGIC + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    with pytest.raises(JournalError, match="unknown event 'Nope'"):
        Journal(path).recover()


def test_compaction_replaces_the_history_by_a_snapshot(tmp_path: Path) -> None:
    s = _busy_state()
    path = tmp_path / "journal"
    j = Journal(path)
    j.open()
    for _, e in s.event_log:
        j.append([e])
    assert j.should_compact(0)
    j.compact(snapshot_events(s, 5.0))
    assert not j.should_compact(0)
    s.handle(worker(C))
    j.append([s.event_log[-1][1]])
    j.close()
    rebuilt = make_state()
    rebuilt.handle(*Journal(path).recover())
    assert after_restart(rebuilt) == after_restart(s)
    assert not (tmp_path / "journal.compacting").exists()


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.write`` may write less than asked (Linux: at most 2 GiB a call)."""
    real_write = os.write

    def short_write(fd: int, data: Any) -> int:
        return int(real_write(fd, bytes(data)[:5]))

    s = _busy_state()
    events = [e for _, e in s.event_log]
    j = Journal(tmp_path / "journal")
    j.open()
    monkeypatch.setattr(os, "write", short_write)
    j.append(events[:3])
    j.append(events[3:])
    j.compact(snapshot_events(s, 5.0))
    j.append(events[:1])
    monkeypatch.undo()
    j.close()
    assert j.size == (tmp_path / "journal").stat().st_size
    rebuilt = make_state()
    rebuilt.handle(*Journal(tmp_path / "journal").recover()[:-1])
    assert after_restart(rebuilt) == after_restart(s)


def test_a_failed_write_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk mid-record: the record is cut away, so later records still replay."""
    real_write = os.write
    calls = 0

    def full_disk(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return int(real_write(fd, bytes(data)[:10]))
        raise OSError(28, "No space left on device")

    events = [e for _, e in _busy_state().event_log]
    path = tmp_path / "journal"
    j = Journal(path)
    j.open()
    j.append(events[:2])
    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        j.append(events[2:4])
    monkeypatch.undo()
    j.append(events[4:6])
    j.close()
    assert Journal(path).recover() == events[:2] + events[4:6]


def test_a_journal_in_use_is_refused_to_a_second_scheduler(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    first = Journal(path)
    assert first.recover() == []
    first.open()
    first.append([e for _, e in _busy_state().event_log][:2])
    size = path.stat().st_size
    with pytest.raises(JournalError, match=r"in use by another scheduler.*another\s+--journal"):
        Journal(path).recover()
    assert path.stat().st_size == size  # the second one neither read nor wrote it
    first.close()
    second = Journal(path)  # free again once the first let go (or died)
    assert len(second.recover()) == 2
    second.close()


def test_a_journal_where_nothing_can_be_written_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match=r"can't use .*a-file/journal.*--journal a path"):
        Journal(blocker / "journal").recover()


def test_the_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "journal"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from shoal.scheduler.journal import Journal\n"
            f"j = Journal({str(path)!r}); j.recover(); j.open()\n"
            "print('holding', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(JournalError, match="in use"):
            Journal(path).recover()
    finally:
        holder.kill()  # SIGKILL
        holder.wait()
    j = Journal(path)
    assert j.recover() == []
    j.close()
