"""Pausing: short of memory, the worker starts no new task until it is unpaused."""

from __future__ import annotations

from ws_builders import A, add_keys, compute, execute, finished, got, make_ws, ok, states

from shoal.protocol.messages import WorkerStatus
from shoal.worker.state import (
    Event,
    PauseEvent,
    SendToScheduler,
    UnpauseEvent,
    event_from_dict,
)

PAUSED = SendToScheduler(WorkerStatus(status="paused"))
RUNNING = SendToScheduler(WorkerStatus(status="running"))


def test_pause_tells_the_scheduler_once() -> None:
    ws = make_ws()
    assert ws.handle(PauseEvent()) == [PAUSED]
    assert ws.paused
    assert ws.handle(PauseEvent()) == []
    assert ws.snapshot()["paused"] is True
    assert ws.handle(UnpauseEvent()) == [RUNNING]
    assert not ws.paused
    assert ws.handle(UnpauseEvent()) == []
    assert ws.snapshot()["paused"] is False


def test_paused_worker_queues_tasks_and_starts_them_when_unpaused() -> None:
    ws = make_ws(nthreads=2)
    ws.handle(PauseEvent())
    assert ws.handle(compute("x", priority=(2,)), compute("y", priority=(1,))) == []
    assert states(ws) == {"x": "ready", "y": "ready"}
    assert ws.executing_count == 0
    # the most urgent first, as many as there are threads
    assert ws.handle(compute("z", priority=(3,)), UnpauseEvent()) == [
        RUNNING,
        execute("y"),
        execute("x"),
    ]
    assert ws.ready_count == 1


def test_running_tasks_finish_while_paused_and_no_new_one_starts() -> None:
    ws = make_ws()
    assert ws.handle(compute("x"), compute("y")) == [execute("x")]
    assert ws.handle(PauseEvent()) == [PAUSED]
    assert ws.handle(ok("x")) == [finished("x")]
    assert states(ws) == {"x": "memory", "y": "ready"}
    assert ws.handle(UnpauseEvent()) == [RUNNING, execute("y")]


def test_fetches_go_on_while_paused() -> None:
    ws = make_ws()
    ws.handle(PauseEvent())
    out = ws.handle(compute("y", {"x": (A,)}, nbytes={"x": 5}))
    assert [type(i).__name__ for i in out] == ["GatherDep"]
    assert ws.handle(got(A, x=5)) == [add_keys(x=5)]
    assert states(ws) == {"x": "memory", "y": "ready"}
    assert ws.handle(UnpauseEvent()) == [RUNNING, execute("y", "x")]


def test_constrained_tasks_wait_too() -> None:
    ws = make_ws(resources={"R": 1})
    ws.handle(PauseEvent())
    assert ws.handle(compute("x", resources={"R": 1})) == []
    assert states(ws) == {"x": "constrained"}
    assert ws.handle(UnpauseEvent()) == [RUNNING, execute("x")]


def test_pause_events_round_trip_and_appear_in_the_log() -> None:
    for event in (PauseEvent(stimulus_id="m-1", now=3.0), UnpauseEvent(stimulus_id="m-2")):
        back: Event = event_from_dict(event.to_dict())
        assert back == event
    ws = make_ws()
    ws.handle(PauseEvent(stimulus_id="m-1", now=3.0))
    assert list(ws.stimulus_log) == [PauseEvent(stimulus_id="m-1", now=3.0)]
    assert "paused" in repr(ws)
