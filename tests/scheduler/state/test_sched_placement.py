"""Placement: locality, spreading, restrictions, resources, no-worker."""

from __future__ import annotations

from sched_builders import (
    A,
    B,
    C,
    assigned,
    compute,
    finished,
    make_state,
    spec,
    states,
    submit,
    worker,
)

from shoal.scheduler.state import WorkerRemoved


def test_dependent_goes_to_the_worker_holding_the_bigger_dependency() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(submit("c", spec("small"), spec("big"), keys=("small", "big")))
    s.handle(finished(A, "small", nbytes=1), finished(B, "big", nbytes=1000))
    out = s.handle(submit("c", spec("f", "small", "big")))
    assert out == [compute(B, "f", {"small": (A,), "big": (B,)}, {"small": 1, "big": 1000})]


def test_root_tasks_spread_round_robin() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    keys = tuple(f"r{i}" for i in range(7))
    out = s.handle(submit("c", *(spec(k) for k in keys), keys=keys))
    assert [w for w, _ in assigned(out)] == [A, B, C, A, B, C, A]


def test_least_occupied_accounts_for_threads() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=1), worker(B, nthreads=3))
    keys = tuple(f"r{i}" for i in range(8))
    out = s.handle(submit("c", *(spec(k) for k in keys), keys=keys))
    counts = {A: 0, B: 0}
    for w, _ in assigned(out):
        counts[w] += 1
    assert counts == {A: 2, B: 6}


def test_fewer_bytes_held_breaks_ties() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x"), keys=("x",)))
    s.handle(finished(A, "x", nbytes=500))
    # A and B are both idle; B holds less.
    assert s.handle(submit("c", spec("y"))) == [compute(B, "y")]


def test_restrictions_by_address_and_by_name() -> None:
    s = make_state()
    s.handle(worker(A, name="alice"), worker(B, name="bob"))
    out = s.handle(
        submit(
            "c",
            spec("x", workers=(B,)),
            spec("y", workers=("bob",)),
            spec("z", workers=("alice",)),
            keys=("x", "y", "z"),
        )
    )
    assert assigned(out) == [(B, "x"), (B, "y"), (A, "z")]


def test_restriction_beats_locality() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x", workers=(A,)), keys=("x",)))
    s.handle(finished(A, "x", nbytes=10**6))
    out = s.handle(submit("c", spec("y", "x", workers=(B,))))
    assert out == [compute(B, "y", {"x": (A,)}, {"x": 10**6})]


def test_no_worker_until_a_matching_worker_joins() -> None:
    s = make_state()
    s.handle(worker(A))
    out = s.handle(submit("c", spec("x", workers=("gpu-box",)), spec("y"), keys=("x", "y")))
    assert out == [compute(A, "y")]
    assert states(s) == {"x": "no-worker", "y": "processing"}
    assert s.handle(worker(B, name="other")) == []
    assert s.handle(worker(C, name="gpu-box")) == [compute(C, "x")]


def test_no_workers_at_all_then_one_joins() -> None:
    s = make_state()
    out = s.handle(submit("c", spec("b", priority=(1,)), spec("a", priority=(0,)), keys=("a", "b")))
    assert out == []
    assert states(s) == {"a": "no-worker", "b": "no-worker"}
    out = s.handle(worker(A))
    assert out == [compute(A, "a"), compute(A, "b", priority=(1,))]


def test_allow_other_workers_prefers_but_does_not_require() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    out = s.handle(
        submit(
            "c",
            spec("x", workers=(B,), allow_other_workers=True),
            spec("y", workers=("missing",), allow_other_workers=True),
            keys=("x", "y"),
        )
    )
    assert assigned(out) == [(B, "x"), (A, "y")]


def test_resources_filter_workers() -> None:
    s = make_state()
    s.handle(worker(A), worker(B, resources={"GPU": 1.0}), worker(C, resources={"GPU": 4.0}))
    out = s.handle(
        submit(
            "c",
            spec("one", resources={"GPU": 1.0}),
            spec("two", resources={"GPU": 2.0}),
            spec("many", resources={"GPU": 8.0}),
            keys=("one", "two", "many"),
        )
    )
    assert out == [
        compute(B, "one", resources={"GPU": 1.0}),
        compute(C, "two", resources={"GPU": 2.0}),
    ]
    assert s.tasks["many"].state == "no-worker"
    # A worker big enough comes along.
    out = s.handle(worker("tcp://d:1", resources={"GPU": 8.0}))
    assert out == [compute("tcp://d:1", "many", resources={"GPU": 8.0})]


def test_resources_and_restrictions_together() -> None:
    s = make_state()
    s.handle(worker(A, resources={"GPU": 1.0}), worker(B))
    out = s.handle(submit("c", spec("x", workers=(B,), resources={"GPU": 1.0})))
    assert out == []
    assert s.tasks["x"].state == "no-worker"
    out = s.handle(
        submit("c", spec("y", workers=(B,), allow_other_workers=True, resources={"GPU": 1.0}))
    )
    assert out == [compute(A, "y", resources={"GPU": 1.0})]


def test_restricted_worker_leaving_sends_task_to_no_worker() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x", workers=(B,))))
    assert s.handle(WorkerRemoved(B)) == []
    assert s.tasks["x"].state == "no-worker"
    assert s.handle(worker(B)) == [compute(B, "x")]
