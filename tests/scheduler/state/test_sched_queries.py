"""Read-only queries: plain data for the RPC layer."""

from __future__ import annotations

from sched_builders import A, B, finished, make_state, spec, submit, worker

from shoal.scheduler.state import ReplicasAdded, SchedulerState, queries


def _state() -> SchedulerState:
    s = make_state()
    s.handle(worker(A, nthreads=2, name="alice"), worker(B, resources={"GPU": 1.0}))
    s.handle(submit("c", spec("x"), spec("y"), spec("z", "x"), keys=("x", "y", "z")))
    s.handle(finished(A, "x", nbytes=40), ReplicasAdded(B, ("x",), {"x": 40}))
    return s


def test_who_has_and_has_what() -> None:
    s = _state()
    assert queries.who_has(s) == {"x": [A, B], "y": [], "z": []}
    assert queries.who_has(s, ["x", "unknown"]) == {"x": [A, B]}
    assert queries.has_what(s) == {A: ["x"], B: ["x"]}
    assert queries.has_what(s, [B, "tcp://gone:1"]) == {B: ["x"]}


def test_processing_and_nthreads() -> None:
    s = _state()
    assert queries.processing(s) == {A: ["z"], B: ["y"]}
    assert queries.processing(s, [A]) == {A: ["z"]}
    assert queries.nthreads(s) == {A: 2, B: 1}
    assert queries.nthreads(s, [B]) == {B: 1}


def test_gather_info() -> None:
    s = _state()
    assert queries.gather_info(s, ["x", "y", "gone"]) == {
        "x": {"status": "memory", "who_has": [A, B]},
        "y": {"status": "processing", "who_has": []},
        "gone": {"status": "forgotten", "who_has": []},
    }


def test_identity_is_shaped_like_scheduler_info() -> None:
    info = queries.identity(_state())
    assert info["type"] == "Scheduler"
    assert info["workers"][A] == {
        "type": "Worker",
        "id": "alice",
        "name": "alice",
        "nthreads": 2,
        "memory_limit": 2**30,
        "resources": {},
        "nbytes": 40,
        "processing": 1,
        "occupancy": 0.5,  # one task of a kind never seen: the default 0.5 s
        "status": "running",
        "keys": 1,
    }
    assert info["workers"][B]["resources"] == {"GPU": 1.0}
    assert info["n_tasks"] == 3


def test_task_counts() -> None:
    s = _state()
    assert queries.task_counts(s) == {
        "released": 0,
        "waiting": 0,
        "queued": 0,
        "no-worker": 0,
        "processing": 2,
        "memory": 1,
        "erred": 0,
    }
