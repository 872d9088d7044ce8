"""Deliberate data movement on plain data: graceful retirement, replicate, rebalance.

Placement, queuing and stealing are in test_sched_policies.py.
"""

from __future__ import annotations

from sched_builders import (
    A,
    B,
    C,
    acquire,
    assigned,
    compute,
    finished,
    free,
    in_memory,
    make_state,
    scatter,
    spec,
    states,
    steal_request,
    submit,
    worker,
)

from shoal.protocol.messages import AcquireReplicas, KeyLost
from shoal.scheduler.state import (
    CloseWorker,
    Outgoing,
    RebalanceRequested,
    ReplicasAdded,
    ReplicationRequested,
    RequestDone,
    RetirementRequested,
    SchedulerState,
    StealResponded,
    Tick,
    ToClient,
    ToWorker,
    WorkerRemoved,
    queries,
)
from shoal.scheduler.state.model import TaskState, WorkerInfo
from shoal.scheduler.state.moves import COPY_TIMEOUT, plan_rebalance

D = "tcp://d:1"


def info(name: str, nthreads: int = 1) -> dict[str, object]:
    """What RequestDone reports about a retired worker."""
    return {"name": name, "nthreads": nthreads, "memory_limit": 2**30}


def deliver(s: SchedulerState, out: list[Outgoing]) -> list[Outgoing]:
    """Every AcquireReplicas in ``out`` succeeds, again and again until none is asked:
    return everything the state answered meanwhile."""
    seen: list[Outgoing] = []
    while True:
        asks = [o for o in out if isinstance(o, ToWorker) and isinstance(o.msg, AcquireReplicas)]
        if not asks:
            return seen
        out = []
        for o in asks:
            assert isinstance(o.msg, AcquireReplicas)
            out += s.handle(ReplicasAdded(o.worker, tuple(o.msg.who_has), dict(o.msg.nbytes)))
        seen += out


def never_recomputed_or_lost(out: list[Outgoing]) -> None:
    """No task was sent to run and no client heard that a key was lost."""
    assert assigned(out) == []
    assert not [o for o in out if isinstance(o, ToClient) and isinstance(o.msg, KeyLost)]


# ------------------------------------------------------------------ retirement


def test_retirement_moves_work_and_unique_data_away_then_closes() -> None:
    s = make_state()
    s.handle(worker(A, name="alice"), worker(B), worker(C))
    s.handle(
        scatter(
            {"x": (100, (A,)), "y": (50, (A, B)), "w": (200, (B,)), "z": (30, (C,))},
        )
    )
    s.handle(
        submit(
            "c",
            spec("p", workers=(A,)),
            spec("q", "y", workers=(A,), allow_other_workers=True),  # A if it can
            keys=("p", "q"),
        )
    )
    assert queries.processing(s) == {A: ["p", "q"], B: [], C: []}

    # By name. A accepts nothing new, and is asked to hand back what it runs.
    out = s.handle(RetirementRequested("r", ("alice",)))
    assert out == [steal_request(A, "p"), steal_request(A, "q")]
    assert s.handle(submit("c", spec("n", "x"))) == [compute(C, "n", {"x": (A,)}, {"x": 100})]

    # q had not started: it runs elsewhere (on B, which holds its input y).
    out = s.handle(StealResponded(A, "q", "ready"))
    assert out == [compute(B, "q", {"y": (A, B)}, {"y": 50}), free(A, "q")]
    # p is running: A finishes it, then holds x and p alone (y is also on B).
    assert s.handle(StealResponded(A, "p", "executing")) == []
    assert s.handle(Tick(now=1.0)) == []  # A still runs p: nothing is copied yet
    out = s.handle(finished(A, "p"))
    # Both go to C, the accepting worker holding the fewest bytes (30 vs 250).
    assert out == [
        in_memory("c", "p", A),
        acquire(C, {"x": (100, (A,)), "p": (10, (A,))}),
    ]
    assert s.handle(ReplicasAdded(C, ("x",), {"x": 100})) == []  # p is still missing
    out = s.handle(ReplicasAdded(C, ("p",), {"p": 10}))
    assert out == [CloseWorker(A, True), RequestDone("r", {A: info("alice")})]
    assert A not in s.workers
    assert queries.who_has(s, ["x", "y", "p"]) == {"x": [C], "y": [B], "p": [C]}
    # Nothing was lost or recomputed on the way: no key ever left memory.
    assert [r for r in s.transition_log if r.start == "memory"] == []
    assert states(s) == {
        "x": "memory",
        "y": "memory",
        "w": "memory",
        "z": "memory",
        "p": "memory",
        "q": "processing",
        "n": "processing",
    }


def test_retirement_asks_again_for_copies_that_do_not_arrive() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(scatter({"x": (100, (A,))}))
    ask = acquire(B, {"x": (100, (A,))})
    assert s.handle(RetirementRequested("r", (A,), now=0.0)) == [ask]
    assert s.handle(Tick(now=COPY_TIMEOUT - 0.1)) == []
    assert s.handle(Tick(now=COPY_TIMEOUT)) == [ask]
    assert s.handle(Tick(now=COPY_TIMEOUT + 1.0)) == []
    assert s.handle(Tick(now=2 * COPY_TIMEOUT)) == [ask]
    # Still waiting: A stays (not accepting) until the copy is there.
    assert A in s.workers and not s.workers[A].accepting
    out = s.handle(ReplicasAdded(B, ("x",), {"x": 100}))
    assert out == [CloseWorker(A, True), RequestDone("r", {A: info(A)})]


def test_retiring_by_n_picks_the_workers_holding_fewest_bytes() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C), worker(D))
    s.handle(scatter({"a": (100, (A,)), "b": (10, (B,)), "c": (50, (C,)), "d": (70, (D,))}))
    out = s.handle(RetirementRequested("r", n=2, close=False))
    # B and C go; what only they hold is copied to A and D first.
    out = deliver(s, out)
    assert [o for o in out if not isinstance(o, ToWorker)] == [
        CloseWorker(B, False),
        CloseWorker(C, False),
        RequestDone("r", {B: info(B), C: info(C)}),
    ]
    never_recomputed_or_lost(out)
    assert sorted(s.workers) == [A, D]
    assert {k: len(v) for k, v in queries.who_has(s).items()} == dict.fromkeys("abcd", 1)


def test_retiring_by_n_prefers_idle_then_newest_workers() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(submit("c", spec("p", workers=(C,))))
    out = s.handle(RetirementRequested("r", n=1))
    # No worker holds data; C runs a task; B joined after A.
    assert out == [CloseWorker(B, True), RequestDone("r", {B: info(B)})]


def test_retiring_the_only_holder_of_unique_data_is_refused() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(scatter({"x": (100, (A,))}))
    assert s.handle(RetirementRequested("r", (A,))) == [RequestDone("r", {})]
    assert s.workers[A].accepting
    assert s.handle(submit("c", spec("f", "x"))) == [compute(A, "f", {"x": (A,)}, {"x": 100})]


def test_retiring_every_worker_retires_only_those_with_nothing_to_move() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"x": (100, (A,))}))
    s.handle(submit("c", spec("p", workers=(C,))))
    out = s.handle(RetirementRequested("r", (A, B, C)))
    # A holds x alone and C runs p: with no worker left to take them, they stay.
    assert out == [CloseWorker(B, True), RequestDone("r", {B: info(B)})]
    assert s.workers[A].accepting and s.workers[C].accepting


def test_retiring_a_worker_that_dies_meanwhile() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x")))
    s.handle(finished(A, "x"))
    s.handle(RetirementRequested("r", (A,)))
    out = s.handle(WorkerRemoved(A))
    # x is recomputed as with any death; the request ends, reporting A as gone.
    assert out == [
        ToClient("c", KeyLost("x")),
        compute(B, "x", duration=1.0),
        RequestDone("r", {A: info(A)}),
    ]


def test_a_late_copy_of_a_key_being_recomputed_is_not_freed_on_its_worker() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x")))
    s.handle(finished(A, "x"))
    assert s.handle(RetirementRequested("r", (A,))) == [acquire(B, {"x": (10, (A,))})]
    # B got x from A, but A died before the scheduler heard about the copy.
    assert compute(B, "x", duration=1.0) in s.handle(WorkerRemoved(A))
    out = s.handle(ReplicasAdded(B, ("x",), {"x": 10}))
    assert free(B, "x") not in out


def test_a_worker_whose_retirement_is_abandoned_takes_work_again() -> None:
    s = make_state(no_workers_timeout=60.0)
    s.handle(worker(A), worker(B))
    s.handle(scatter({"x": (100, (A,))}))
    assert s.handle(RetirementRequested("r", (A,))) == [acquire(B, {"x": (100, (A,))})]
    s.handle(WorkerRemoved(B))  # the only other worker dies before the copy is made
    s.handle(submit("c", spec("y")))  # no accepting worker: no-worker
    assert s.tasks["y"].state == "no-worker"
    out = s.handle(Tick(now=1.0))  # the copy is dropped: A can't leave, accepts again
    assert RequestDone("r", {}) in out
    assert s.workers[A].accepting
    assert compute(A, "y") in out
    assert s.handle(Tick(now=60.0)) == []


# ------------------------------------------------------------------ replicate


def test_replicate_adds_copies_to_the_least_loaded_workers() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C), worker(D))
    s.handle(scatter({"x": (100, (A,)), "y": (10, (A,)), "big": (500, (B,)), "s": (5, (C,))}))
    out = s.handle(ReplicationRequested("r", ("x", "y", "missing"), n=2))
    # x to D (0 bytes); then y to C (5 bytes; D has 100 coming).
    assert out == [acquire(D, {"x": (100, (A,))}), acquire(C, {"y": (10, (A,))})]
    assert s.handle(ReplicasAdded(D, ("x",), {"x": 100})) == []
    out = s.handle(ReplicasAdded(C, ("y",), {"y": 10}))
    assert out == [RequestDone("r", {"moved": 2})]
    assert queries.who_has(s, ["x", "y"]) == {"x": [A, D], "y": [A, C]}


def test_replicate_to_every_candidate_worker() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C, name="carol"), worker(D))
    s.handle(scatter({"x": (100, (A,)), "d": (1, (D,))}))
    s.handle(RetirementRequested("leave", (D,)))  # retiring: no candidate
    out = s.handle(ReplicationRequested("r", ("x",), workers=(A, "carol", D)))
    assert out == [acquire(C, {"x": (100, (A,))})]
    out = s.handle(ReplicationRequested("r2", ("x",)))  # n=None: all accepting workers
    assert out == [acquire(B, {"x": (100, (A,))}), acquire(C, {"x": (100, (A,))})]


def test_replicate_with_a_lower_n_frees_the_extra_copies() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"x": (100, (A, B, C)), "b": (50, (B,)), "c": (20, (C,))}))
    out = s.handle(ReplicationRequested("r", ("x",), n=1))
    # The holders with the most bytes drop theirs: B (150), then C (120).
    assert out == [RequestDone("r", {"moved": 0}), free(B, "x"), free(C, "x")]
    assert queries.who_has(s, ["x"]) == {"x": [A]}


def test_replicate_tolerates_a_recipient_that_dies() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"x": (100, (A,))}))
    out = s.handle(ReplicationRequested("r", ("x",), n=3))
    assert out == [acquire(B, {"x": (100, (A,))}), acquire(C, {"x": (100, (A,))})]
    s.handle(ReplicasAdded(B, ("x",), {"x": 100}), WorkerRemoved(C))
    assert s.handle(Tick(now=1.0)) == [RequestDone("r", {"moved": 1})]
    assert s.pending_copies == {} and s.moves == {}


# ------------------------------------------------------------------ rebalance


def bytes_after(
    s: SchedulerState, plan: list[tuple[TaskState, WorkerInfo, WorkerInfo]]
) -> dict[str, int]:
    """Bytes each worker would hold once ``plan``'s moves are done."""
    held = {a: ws.nbytes for a, ws in s.workers.items()}
    for ts, sender, recipient in plan:
        held[sender.address] -= ts.nbytes
        held[recipient.address] += ts.nbytes
    return held


def test_plan_rebalance_brings_workers_to_the_mean() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(
        scatter({"a1": (100, (A,)), "a2": (100, (A,)), "a3": (100, (A,)), "a4": (100, (A,))}),
        scatter({"c1": (100, (C,)), "c2": (100, (C,))}),
    )
    plan = plan_rebalance(list(s.workers.values()))
    assert [(ts.key, x.address, y.address) for ts, x, y in plan] == [
        ("a1", A, B),
        ("a2", A, B),
    ]
    assert bytes_after(s, plan) == {A: 200, B: 200, C: 200}
    assert s.workers[A].nbytes == 400  # pure: nothing moved


def test_plan_rebalance_with_uneven_keys_moves_largest_first() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"k1": (300, (A,)), "k2": (200, (A,)), "k3": (100, (A,)), "k4": (50, (A,))}))
    s.handle(scatter({"c": (50, (C,))}))
    plan = plan_rebalance(list(s.workers.values()))
    # mean 233: k1 fills B, k2 fills C; after that A is below the mean.
    assert [(ts.key, x.address, y.address) for ts, x, y in plan] == [
        ("k1", A, B),
        ("k2", A, C),
    ]
    before = {a: ws.nbytes for a, ws in s.workers.items()}
    after = bytes_after(s, plan)
    assert after == {A: 150, B: 300, C: 250}
    assert max(after.values()) - min(after.values()) < max(before.values()) - min(before.values())


def test_plan_rebalance_never_moves_a_key_to_a_worker_holding_it() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(
        scatter(
            {"a": (100, (A, B)), "b": (100, (A,)), "c": (100, (A,)), "d": (150, (C,))},
        )
    )
    # mean 183: B lacks most (83) but holds a already; a could only go to C (33),
    # which is too little for it; b goes to B.
    plan = plan_rebalance(list(s.workers.values()))
    assert [(ts.key, x.address, y.address) for ts, x, y in plan] == [("b", A, B)]
    assert all(y not in ts.who_has for ts, _, y in plan)


def test_plan_rebalance_honours_the_keys_filter_and_needs_two_workers() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(scatter({"a1": (100, (A,)), "a2": (100, (A,))}))
    workers = list(s.workers.values())
    assert [ts.key for ts, _, _ in plan_rebalance(workers, {"a2"})] == ["a2"]
    assert plan_rebalance(workers, {"other"}) == []
    assert plan_rebalance(workers[:1]) == []


def test_rebalance_frees_the_senders_copy_once_the_recipient_has_it() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"a": (100, (A, B)), "b": (100, (A,)), "c": (100, (A,)), "d": (150, (C,))}))
    out = s.handle(RebalanceRequested("r"))
    assert out == [acquire(B, {"b": (100, (A,))})]
    assert queries.who_has(s, ["b"]) == {"b": [A]}  # nothing freed yet
    out = s.handle(ReplicasAdded(B, ("b",), {"b": 100}))
    assert out == [RequestDone("r", {"moved": 1}), free(A, "b")]
    assert queries.has_what(s) == {A: ["a", "c"], B: ["a", "b"], C: ["d"]}


def test_rebalance_among_some_workers_only() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C, name="carol"))
    s.handle(scatter({"a1": (100, (A,)), "a2": (100, (A,))}))
    out = s.handle(RebalanceRequested("r", workers=(A, "carol")))
    assert out == [acquire(C, {"a1": (100, (A,))})]
    out = s.handle(RebalanceRequested("r2", keys=("nothing",)))
    assert out == [RequestDone("r2", {"moved": 0})]


def test_rebalance_of_a_balanced_cluster_moves_nothing() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(scatter({"a": (100, (A,)), "b": (100, (B,))}))
    assert s.handle(RebalanceRequested("r")) == [RequestDone("r", {"moved": 0})]


def test_rebalance_copy_lost_with_its_recipient() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(scatter({"a1": (100, (A,)), "a2": (100, (A,))}))
    assert s.handle(RebalanceRequested("r")) == [acquire(B, {"a1": (100, (A,))})]
    s.handle(WorkerRemoved(B))
    # The sender keeps its copy; the request ends at the next Tick.
    assert s.handle(Tick(now=1.0)) == [RequestDone("r", {"moved": 0})]
    assert queries.who_has(s) == {"a1": [A], "a2": [A]}
