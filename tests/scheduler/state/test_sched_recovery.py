"""Losing workers and data: reschedule, recompute from lineage, DataMissing, Reschedule."""

from __future__ import annotations

from sched_builders import (
    A,
    B,
    C,
    compute,
    finished,
    free,
    in_memory,
    lost,
    make_state,
    spec,
    states,
    submit,
    worker,
)

from shoal.scheduler.state import (
    DataMissing,
    ReplicasAdded,
    RescheduleRequested,
    WorkerRemoved,
    queries,
)


def test_processing_tasks_of_a_leaving_worker_are_reassigned() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x"), spec("y"), keys=("x", "y")))
    assert queries.processing(s) == {A: ["x"], B: ["y"]}
    out = s.handle(WorkerRemoved(A, reason="died"))
    assert out == [compute(B, "x")]
    assert queries.processing(s) == {B: ["y", "x"]}
    assert s.tasks["x"].suspicious == (A,)


def test_keys_only_the_lost_worker_held_are_recomputed_from_lineage() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("a"), spec("b", "a"), keys=("b",)))
    s.handle(finished(A, "a"), finished(A, "b"))
    assert states(s) == {"a": "released", "b": "memory"}
    out = s.handle(WorkerRemoved(A))
    # b is lost: the client hears it, and its lineage runs again on B.
    assert out == [lost("c", "b"), compute(B, "a", duration=1.0)]
    assert states(s) == {"a": "processing", "b": "waiting"}
    s.handle(finished(B, "a"))
    assert s.handle(finished(B, "b")) == [in_memory("c", "b", B), free(B, "a")]


def test_keys_also_held_elsewhere_survive() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x"), keys=("x",)))
    s.handle(finished(A, "x"), ReplicasAdded(B, ("x",), {"x": 10}))
    assert s.handle(WorkerRemoved(A)) == []
    assert queries.who_has(s) == {"x": [B]}
    assert s.tasks["x"].state == "memory"


def test_lost_dependency_of_a_running_task() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x", workers=(A,)), spec("y", "x", workers=(B,))))
    s.handle(finished(A, "x"))
    assert s.tasks["y"].processing_on is s.workers[B]
    # A dies before B fetched x: y is taken back from B and waits for x again.
    out = s.handle(WorkerRemoved(A))
    assert out == [free(B, "y")]
    assert states(s) == {"x": "no-worker", "y": "waiting"}
    out = s.handle(worker(A))
    assert out == [compute(A, "x", duration=1.0)]
    s.handle(finished(A, "x"))
    assert s.tasks["y"].state == "processing"


def test_unneeded_keys_of_a_lost_worker_are_just_dropped() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("a"), spec("b", "a"), keys=("b",)))
    s.handle(finished(A, "a"), finished(B, "b"))
    assert states(s) == {"a": "released", "b": "memory"}
    assert s.handle(WorkerRemoved(A)) == []
    assert states(s) == {"a": "released", "b": "memory"}


def test_data_missing_recomputes_a_key_with_no_holder_left() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x"), spec("y", "x", workers=(B,))))
    s.handle(finished(A, "x"))
    out = s.handle(DataMissing(B, "x", errant_worker=A))
    # x is computed again (y is taken back meanwhile).
    assert out == [compute(A, "x", duration=1.0), free(B, "y")]
    assert states(s) == {"x": "processing", "y": "waiting"}


def test_data_missing_with_another_holder_drops_only_that_copy() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(submit("c", spec("x"), keys=("x",)))
    s.handle(finished(A, "x"), ReplicasAdded(B, ("x",), {"x": 10}))
    assert s.handle(DataMissing(C, "x", errant_worker=A)) == []
    assert queries.who_has(s, ["x"]) == {"x": [B]}
    # Unknown keys and workers are ignored.
    assert s.handle(DataMissing(C, "nope", errant_worker=A)) == []
    assert s.handle(DataMissing(C, "x", errant_worker="tcp://ghost:1")) == []


def test_reschedule_requested() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x")))
    out = s.handle(RescheduleRequested(A, "x"))
    assert out == [compute(B, "x"), free(A, "x")]
    # A reschedule request from a worker that no longer runs it is stale.
    assert s.handle(RescheduleRequested(A, "x")) == []
    assert s.tasks["x"].processing_on is s.workers[B]


def test_all_workers_gone_then_back() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a")))
    s.handle(finished(A, "a"))
    assert s.handle(WorkerRemoved(A)) == []
    assert states(s) == {"a": "no-worker", "b": "waiting"}
    assert s.handle(worker(B)) == [compute(B, "a", duration=1.0)]
