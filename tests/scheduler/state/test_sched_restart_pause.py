"""Restart (every task forgotten) and paused workers, on plain data."""

from __future__ import annotations

from sched_builders import A, B, finished, make_state, spec, submit, worker

from shoal.protocol.messages import ComputeTask, KeysCancelled, StealRequest
from shoal.scheduler.state import (
    CloseWorker,
    ReplicasAdded,
    RestartRequested,
    RetirementRequested,
    Tick,
    ToClient,
    ToWorker,
    WorkerStatusChanged,
    queries,
)
from shoal.scheduler.state.recovery import RESTARTED


def test_restart_cancels_every_future_and_forgets_every_task() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c1", spec("a"), spec("b", "a")), submit("c2", spec("x")))
    s.handle(finished(A, "a"))
    out = s.handle(RestartRequested())
    cancelled = {(o.client, k) for o in out if isinstance(o, ToClient) for k in o.msg.keys}  # type: ignore[attr-defined]
    assert cancelled == {("c1", "b"), ("c2", "x")}
    assert all(isinstance(o.msg, KeysCancelled) for o in out if isinstance(o, ToClient))
    assert all(o.msg.reason == RESTARTED for o in out if isinstance(o, ToClient))  # type: ignore[attr-defined]
    assert s.tasks == {} and queries.task_counts(s) == dict.fromkeys(s.counts, 0)
    assert queries.processing(s) == {A: [], B: []}
    # The cluster works as before.
    out = s.handle(submit("c1", spec("a")))
    assert [type(o.msg) for o in out] == [ComputeTask]


def test_a_paused_worker_gets_no_new_task_and_its_backlog_is_stolen() -> None:
    s = make_state()
    s.handle(worker(A), worker(B, nthreads=2))
    s.handle(WorkerStatusChanged(B, "paused"))
    assert not s.workers[B].accepting
    out = s.handle(submit("c", spec("a"), spec("b"), keys=("a", "b")))
    assert {o.worker for o in out} == {A}  # type: ignore[union-attr]
    # A pauses too, holding two tasks; B resumes and steals what A has not started.
    s.handle(WorkerStatusChanged(A, "paused"))
    out = s.handle(WorkerStatusChanged(B, "running"))
    out += s.handle(Tick(now=1.0))
    steals = [o for o in out if isinstance(o, ToWorker) and isinstance(o.msg, StealRequest)]
    assert {o.worker for o in steals} == {A} and len(steals) == 2
    assert queries.identity(s)["workers"][A]["status"] == "paused"


def test_a_paused_worker_may_still_be_retired() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("a", workers=(A,))))
    s.handle(WorkerStatusChanged(A, "paused"))
    s.handle(RetirementRequested("r", (A,)))
    assert s.workers[A].retiring  # it still runs "a"
    assert queries.identity(s)["workers"][A]["status"] == "closing_gracefully"
    s.handle(finished(A, "a"))  # its only copy is on A: B is asked for one
    out = s.handle(ReplicasAdded(B, ("a",), {"a": 10}))
    assert CloseWorker(A, True) in out and A not in s.workers
