"""Failures: erred tasks and their dependents, retries, resubmission, KilledWorker."""

from __future__ import annotations

from sched_builders import (
    A,
    B,
    C,
    assigned,
    compute,
    erred,
    failed,
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

from shoal.errors import KilledWorker
from shoal.protocol.messages import KeyErred
from shoal.scheduler.state import KeysReleased, ToClient, WorkerAdded, WorkerRemoved


def test_error_propagates_to_dependents_with_blame() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a"), spec("c", "b"), keys=("b", "c")))
    out = s.handle(failed(A, "a"))
    assert out == [erred("c", "b", blame="a"), erred("c", "c", blame="a"), free(A, "a")]
    assert states(s) == {"a": "erred", "b": "erred", "c": "erred"}


def test_error_frees_dependencies_nobody_needs() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("x"), spec("y"), spec("z", "x", "y"), keys=("z",)))
    s.handle(finished(A, "x"))
    out = s.handle(failed(A, "y"))
    assert out == [erred("c", "z", blame="y"), free(A, "y", "x")]
    assert states(s) == {"x": "released", "y": "erred", "z": "erred"}
    # Releasing the erred key forgets everything.
    assert s.handle(KeysReleased("c", ("z",))) == []
    assert s.tasks == {}


def test_retry_after_one_failure_then_success() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x", retries=1)))
    out = s.handle(failed(A, "x"))
    # The failing worker drops its error; the task is placed again.
    assert out == [compute(B, "x"), free(A, "x")]
    assert s.tasks["x"].retries == 0
    assert s.handle(finished(B, "x")) == [in_memory("c", "x", B)]


def test_retries_run_out() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("x", retries=1)))
    assert s.handle(failed(A, "x")) == [free(A, "x"), compute(A, "x")]
    assert s.handle(failed(A, "x")) == [erred("c", "x", blame="x"), free(A, "x")]


def test_resubmitting_an_erred_key_retries_it() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a"), keys=("b",)))
    s.handle(failed(A, "a"))
    assert states(s) == {"a": "erred", "b": "erred"}
    # The client resubmits only b: its erred dependency a is retried with it.
    out = s.handle(submit("c", spec("b", "a")))
    # The client hears its key is pending again.
    assert out == [compute(A, "a"), lost("c", "b")]
    assert states(s) == {"a": "processing", "b": "waiting"}
    s.handle(finished(A, "a"))
    assert s.handle(finished(A, "b")) == [in_memory("c", "b", A), free(A, "a")]


def test_wanting_an_erred_key_reports_the_error() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("a")))
    s.handle(failed(A, "a"))
    # Another client depends on it without resubmitting it: it errs at once.
    out = s.handle(submit("c2", spec("b", "a"), keys=("b", "a")))
    assert out == [erred("c2", "a", blame="a"), erred("c2", "b", blame="a")]


def test_killed_worker_after_too_many_deaths() -> None:
    s = make_state(allowed_failures=3)
    workers = [f"tcp://w{i}:1" for i in range(5)]
    s.handle(*(worker(w) for w in workers))
    s.handle(submit("c", spec("bad"), spec("after", "bad"), keys=("after",)))
    for i in range(3):
        out = s.handle(WorkerRemoved(workers[i], reason="died"))
        assert assigned(out) == [(workers[i + 1], "bad")]
    out = s.handle(WorkerRemoved(workers[3], reason="died"))
    message = str(KilledWorker("bad", workers[:4]))
    assert out == [
        ToClient("c", KeyErred("after", None, None, f"KilledWorker: {message}", "", blame="bad"))
    ]
    assert states(s) == {"bad": "erred", "after": "erred"}
    assert s.tasks["bad"].suspicious == tuple(workers[:4])


def test_safe_removal_is_not_held_against_the_task() -> None:
    s = make_state(allowed_failures=0)
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x")))
    out = s.handle(WorkerRemoved(A, reason="retired", safe=True))
    assert out == [compute(B, "x")]
    assert s.tasks["x"].suspicious == ()


def test_reregistering_worker_replaces_the_old_one() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x")))
    out = s.handle(WorkerAdded(A, 2, 2**30, "again"))
    assert assigned(out) == [(B, "x")]
    assert s.workers[A].nthreads == 2
    assert s.handle(worker(C)) == []
