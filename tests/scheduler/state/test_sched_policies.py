"""Scheduling policies on plain data: locality, learned load, root-task queuing, work
stealing, resources and NoValidWorker, adaptive_target.

Retirement, replicate and rebalance are in test_sched_moves.py.
"""

from __future__ import annotations

import itertools

import pytest
from sched_builders import (
    A,
    B,
    C,
    assigned,
    compute,
    failed,
    finished,
    free,
    in_memory,
    make_state,
    queued_keys,
    scatter,
    spec,
    states,
    steal_request,
    submit,
    worker,
)

from shoal._types import Key
from shoal.protocol.messages import KeyErred, TaskSpec
from shoal.scheduler.state import (
    GraphSubmitted,
    KeysReleased,
    RetirementRequested,
    SchedulerState,
    StealResponded,
    TaskFinishedEvent,
    Tick,
    ToClient,
    WorkerAdded,
    WorkerRemoved,
    queries,
)

D = "tcp://d:1"


def run_once(s: SchedulerState, key: Key, seconds: float) -> None:
    """Run ``key`` for ``seconds`` on whichever worker gets it, then release it: only
    its prefix's learned run time remains."""
    s.handle(submit("learn", spec(key)))
    ws = s.tasks[key].processing_on
    assert ws is not None
    s.handle(
        TaskFinishedEvent(ws.address, key, 1, "int", 100.0, 100.0 + seconds),
        KeysReleased("learn", (key,)),
    )
    assert key not in s.tasks


def roots(n: int, name: str = "x", *deps: Key, first: int = 0) -> list[TaskSpec]:
    """``n`` tasks of one layer (``name-i``), priority ``(i,)``, each depending on ``deps``."""
    return [spec(f"{name}-{i}", *deps, priority=(i,)) for i in range(first, first + n)]


def submit_all(client: str, specs: list[TaskSpec]) -> GraphSubmitted:
    """A GraphSubmitted wanting every key of ``specs``."""
    return submit(client, *specs, keys=tuple(t.key for t in specs))


# ------------------------------------------------------------------ 1. locality


def test_locality_sums_each_workers_bytes_over_all_dependencies() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    data = {"a1": (100, (A,)), "a2": (250, (A,)), "b": (300, (B,)), "c": (250, (C,))}
    s.handle(scatter(data))
    out = s.handle(submit("c", spec("f", "a1", "a2", "b", "c")))
    # A holds 350 bytes of f's inputs, B 300 (the largest single input), C 250.
    who_has = {k: holders for k, (_, holders) in data.items()}
    assert out == [compute(A, "f", who_has, {k: n for k, (n, _) in data.items()})]
    # A replicated input counts for each of its holders: B now has 300 + 100.
    s.handle(scatter({"a3": (100, (B, C))}))
    out = s.handle(submit("c", spec("g", "a1", "a2", "b", "a3")))
    assert assigned(out) == [(B, "g")]


@pytest.mark.parametrize(("busy", "expected"), [(A, B), (B, A)])
def test_equal_local_bytes_go_to_the_less_loaded_holder(busy: str, expected: str) -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"x": (100, (A,)), "y": (100, (B,))}))
    s.handle(submit("c", spec("busy", workers=(busy,))))
    out = s.handle(submit("c", spec("f", "x", "y")))
    # C is idle and least loaded, but holds nothing: locality first, load second.
    assert out == [compute(expected, "f", {"x": (A,), "y": (B,)}, {"x": 100, "y": 100})]


def test_locality_only_among_valid_workers() -> None:
    s = make_state()
    s.handle(
        worker(A),
        worker(B),
        worker(C, resources={"GPU": 1.0}),
        worker(D, resources={"GPU": 1.0}),
    )
    s.handle(scatter({"big": (1000, (A,)), "small": (10, (C,))}))
    out = s.handle(
        submit(
            "c",
            spec("restricted", "big", "small", workers=(B, C)),
            spec("gpu", "big", "small", resources={"GPU": 1.0}),
            spec("elsewhere", "big", workers=(B, D)),
            keys=("restricted", "gpu", "elsewhere"),
        )
    )
    # The 1000 bytes on A count for nothing: A may run none of them. "elsewhere" has no
    # input on B or D: it goes to the less loaded of the two (a tie: B joined first).
    assert assigned(out) == [(C, "restricted"), (C, "gpu"), (B, "elsewhere")]


def test_a_retiring_worker_is_never_chosen_even_if_it_holds_the_data() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"x": (1000, (A,)), "z": (10, (C,))}))
    s.handle(RetirementRequested("r", (A,)))  # x is copied to B, not there yet
    assert not s.workers[A].accepting
    out = s.handle(submit("c", spec("f", "x")))
    assert out == [compute(B, "f", {"x": (A,)}, {"x": 1000})]
    # Nor do root tasks: B (running f) and C fill their slots, the rest wait. C, as
    # loaded as B once it runs x-0, keeps its neighbour x-1 too (see place_root).
    s.handle(submit_all("c", roots(10)))
    assert queries.processing(s) == {A: [], B: ["f", "x-2"], C: ["x-0", "x-1"]}
    assert len(s.queued) == 7


# ------------------------------------------------------------------ 2. load


def test_run_times_are_learned_per_prefix_as_a_moving_average() -> None:
    s = make_state(unknown_duration=0.5)
    s.handle(worker(A))
    run_once(s, "inc-1", 10.0)
    assert s.prefixes["inc"].duration == 10.0
    run_once(s, "inc-2", 20.0)
    assert s.prefixes["inc"].duration == 15.0
    run_once(s, "inc-3", 5.0)
    assert s.prefixes["inc"].duration == 10.0
    run_once(s, "dec-1", 0.0)  # stop == start: nothing measured
    assert s.prefixes["dec"].duration < 0
    s.handle(submit("c", spec("inc-4"), spec("dec-2"), keys=("inc-4", "dec-2")))
    ws = s.workers[A]
    assert {ts.key: d for ts, d in ws.processing.items()} == {"inc-4": 10.0, "dec-2": 0.5}
    assert ws.occupancy == 10.5
    s.handle(finished(A, "inc-4"))  # 1 s: the average moves, the occupancy drops
    assert s.prefixes["inc"].duration == 5.5
    assert ws.occupancy == 0.5


def test_new_task_goes_to_less_expected_work_not_fewer_tasks() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    run_once(s, "slow-0", 10.0)
    run_once(s, "fast-0", 0.1)
    s.handle(
        submit_all(
            "c",
            [spec("slow-1", workers=(A,)), *(spec(f"fast-{i}", workers=(B,)) for i in (1, 2, 3))],
        )
    )
    assert s.workers[A].occupancy == 10.0
    assert s.workers[B].occupancy == pytest.approx(0.3)
    assert s.handle(submit("c", spec("new"))) == [compute(B, "new")]


def test_load_is_expected_work_per_thread() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=4), worker(B, nthreads=1))
    run_once(s, "mid-0", 1.0)
    # A: 4 tasks, 4 s over 4 threads; B: 2 tasks, 2 s on 1 thread.
    s.handle(
        submit_all(
            "c",
            [
                *(spec(f"mid-{i}", workers=(A,)) for i in range(1, 5)),
                *(spec(f"mid-{i}", workers=(B,)) for i in range(5, 7)),
            ],
        )
    )
    assert (s.workers[A].occupancy, s.workers[B].occupancy) == (4.0, 2.0)
    assert s.handle(submit("c", spec("new"))) == [compute(A, "new")]


def test_unknown_prefixes_count_unknown_duration() -> None:
    s = make_state(unknown_duration=3.0)
    s.handle(worker(A), worker(B))
    run_once(s, "known-0", 1.0)
    s.handle(
        submit_all(
            "c",
            [
                spec("mystery-1", workers=(A,)),
                spec("known-1", workers=(B,)),
                spec("known-2", workers=(B,)),
            ],
        )
    )
    assert (s.workers[A].occupancy, s.workers[B].occupancy) == (3.0, 2.0)
    assert s.handle(submit("c", spec("other"))) == [compute(B, "other")]
    assert s.workers[B].processing[s.tasks["other"]] == 3.0


# ------------------------------------------------------------------ 3. queuing


def test_root_tasks_fill_the_slots_and_the_rest_are_queued() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=1), worker(B, nthreads=3))  # 2 + 4 slots
    out = s.handle(submit_all("c", roots(20)))
    assert sorted(assigned(out)) == sorted(
        [(A, "x-0"), (B, "x-1"), (B, "x-2"), (B, "x-3"), (B, "x-4"), (A, "x-5")]
    )
    assert queued_keys(s) == [f"x-{i}" for i in range(6, 20)]
    assert s.counts["queued"] == 14
    assert {k: st for k, st in states(s).items() if st != "queued"} == {
        f"x-{i}": "processing" for i in range(6)
    }
    # The most urgent queued task goes next, to the worker that freed a slot.
    assert s.handle(finished(A, "x-0")) == [
        in_memory("c", "x-0", A),
        compute(A, "x-6", priority=(6,), duration=1.0),
    ]
    assert s.handle(finished(B, "x-2")) == [
        in_memory("c", "x-2", B),
        compute(B, "x-7", priority=(7,), duration=1.0),
    ]
    # Priority, not arrival: a later, more urgent task of the layer jumps the queue.
    assert s.handle(submit("c", spec("x-99", priority=(-1,)))) == []
    assert s.tasks["x-99"].state == "queued"
    assert s.handle(finished(B, "x-1")) == [
        in_memory("c", "x-1", B),
        compute(B, "x-99", priority=(-1,), duration=1.0),
    ]


def test_tiny_root_tasks_go_out_in_runs_of_neighbours() -> None:
    # Neighbours in priority order share dependents (the two halves of a sum): dealt
    # out in turn, each of those would need a transfer. A worker keeps taking them
    # while it is less than ROOT_RUN_AHEAD (2 ms) ahead of the least loaded one.
    s = make_state()
    s.handle(worker(A), worker(B))
    run_once(s, "x-1000", 0.0001)  # 100 µs a task: 20 of them make 2 ms
    out = s.handle(submit_all("c", roots(500)))
    runs = [(w, len(list(keys))) for w, keys in itertools.groupby(w for w, _ in assigned(out))]
    assert runs[0] == (B, 20)  # 2 ms ahead of A
    assert {n for _, n in runs[1:-2]} == {40}  # each catches up, then goes 2 ms ahead
    # Each holds its pipeline's worth (20 ms, 199 tasks); the rest wait in the queue.
    assert sum(n for _, n in runs) == 398
    assert len(s.queued) == 500 - 398


def test_longer_root_tasks_are_still_dealt_out_by_load() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    run_once(s, "x-1000", 0.004)  # 4 ms a task: one puts a worker past 2 ms ahead
    out = s.handle(submit_all("c", roots(8)))
    assert [w for w, _ in assigned(out)] == [B, A, A, B, B, A, A, B]  # ties stay put


@pytest.mark.parametrize(
    ("saturation", "nthreads", "slots"),
    [(1.1, 1, 2), (1.1, 3, 4), (1.1, 8, 9), (1.0, 3, 3), (2.0, 3, 6), (0.5, 3, 2), (0.1, 3, 1)],
)
def test_slots_are_ceil_saturation_times_threads(
    saturation: float, nthreads: int, slots: int
) -> None:
    s = make_state(worker_saturation=saturation)
    s.handle(worker(A, nthreads=nthreads))
    s.handle(submit_all("c", roots(2 * nthreads + 10)))
    assert len(s.workers[A].processing) == slots
    assert len(s.queued) == 2 * nthreads + 10 - slots


def test_slots_of_a_50_thread_worker_are_exactly_55() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=50))
    s.handle(submit_all("c", roots(101)))
    assert len(s.workers[A].processing) == 55


def test_a_joining_worker_takes_the_most_urgent_queued_tasks() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=1), worker(B, nthreads=3))
    s.handle(submit_all("c", roots(20)))
    out = s.handle(worker(C, nthreads=2))  # 3 slots
    assert sorted(assigned(out)) == [(C, "x-6"), (C, "x-7"), (C, "x-8")]
    assert queued_keys(s) == [f"x-{i}" for i in range(9, 20)]


def test_no_workers_then_one_joins_queues_the_rest() -> None:
    s = make_state()
    assert s.handle(submit_all("c", roots(6))) == []
    assert set(states(s).values()) == {"no-worker"}  # nowhere to queue for
    out = s.handle(worker(A))
    assert sorted(assigned(out)) == [(A, "x-0"), (A, "x-1")]
    assert queued_keys(s) == ["x-2", "x-3", "x-4", "x-5"]
    assert s.unrunnable == {}


def test_infinite_saturation_disables_queuing() -> None:
    s = make_state(worker_saturation=float("inf"))
    s.handle(worker(A, nthreads=1), worker(B, nthreads=3))
    out = s.handle(submit_all("c", roots(20)))
    assert len(assigned(out)) == 20
    assert len(s.queued) == 0
    counts = {w: len(keys) for w, keys in queries.processing(s).items()}
    assert counts == {A: 5, B: 15}  # spread by expected work per thread


def test_a_layer_just_above_twice_the_threads_is_queued() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=2))  # 3 slots
    s.handle(submit_all("c", roots(4)))  # 4 <= 2 * 2 threads: not a root layer
    assert len(s.workers[A].processing) == 4
    s.handle(submit_all("c", roots(5, "y")))  # 5 > 4: root layer, A is full
    assert queued_keys(s) == ["y-0", "y-1", "y-2", "y-3", "y-4"]


@pytest.mark.parametrize(
    ("deps", "queued"),
    [
        (("s0",), True),  # one small dependency: still a root layer
        (("s0", "s1", "s2", "s3"), True),
        (("s0", "s1", "s2", "s3", "s4"), False),  # five dependencies: not root-ish
        (("x-0",), False),  # a dependency from a large layer
    ],
)
def test_which_layers_are_root_layers(deps: tuple[str, ...], queued: bool) -> None:
    s = make_state()
    s.handle(worker(A, nthreads=1))
    small = {f"s{i}": (10, (A,)) for i in range(5)}
    large = {f"x-{i}": (10, (A,)) for i in range(10)}  # one group of 10
    s.handle(scatter({**small, **large}))
    s.handle(submit_all("c", roots(10, "z", *deps)))
    assert len(s.queued) == (8 if queued else 0)
    assert len(s.workers[A].processing) == (2 if queued else 10)


def test_a_layer_depending_on_a_large_layer_is_never_queued() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=1))
    s.handle(submit_all("c", roots(10)))
    s.handle(submit_all("c", [spec(f"y-{i}", f"x-{i}", priority=(i, 1)) for i in range(10)]))
    assert queries.processing(s) == {A: ["x-0", "x-1"]}
    # Run whatever A was given, first come first served, until all is done: each y
    # goes to A as soon as its x is in memory, slots or not; only x tasks ever wait.
    while s.workers[A].processing:
        s.handle(finished(A, next(iter(s.workers[A].processing)).key))
        assert all(str(k).startswith("x-") for k in queued_keys(s))
        assert len(s.workers[A].processing) <= 10
    assert set(states(s).values()) == {"memory"}
    y_moves = {(r.start, r.finish) for r in s.transition_log if str(r.key).startswith("y-")}
    assert y_moves == {("released", "waiting"), ("waiting", "processing"), ("processing", "memory")}


def test_a_task_made_ready_takes_the_freed_slot_before_the_queue() -> None:
    """As in a reduction tree: x-1 finishing makes y ready (more urgent than the queued
    x-3), which takes A's freed slot; x-3 stays queued (not taken out for the slot and
    put back) and goes next."""
    s = make_state()
    s.handle(worker(A, nthreads=1))  # 2 slots
    s.handle(
        submit_all("c", [*roots(2), spec("y", "x-0", "x-1", priority=(1, 1)), *roots(4, first=2)])
    )
    assert queries.processing(s) == {A: ["x-0", "x-1"]}
    s.handle(finished(A, "x-0"))  # x-2 takes that slot
    assert queued_keys(s) == ["x-3", "x-4", "x-5"]
    assert s.handle(finished(A, "x-1")) == [
        in_memory("c", "x-1", A),
        compute(A, "y", {"x-0": (A,), "x-1": (A,)}, {"x-0": 10, "x-1": 10}, priority=(1, 1)),
    ]
    assert queued_keys(s) == ["x-3", "x-4", "x-5"]
    assert s.queued._seq == 4  # x-2 to x-5 each pushed once: none went out and back
    assert s.handle(finished(A, "x-2")) == [
        in_memory("c", "x-2", A),
        compute(A, "x-3", priority=(3,), duration=1.0),
    ]


def test_releasing_a_queued_task_takes_it_out_of_the_queue() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=1))
    s.handle(submit_all("c", roots(6)))
    assert queued_keys(s) == ["x-2", "x-3", "x-4", "x-5"]
    assert s.handle(KeysReleased("c", ("x-2",))) == []  # nothing told to any worker
    assert "x-2" not in s.tasks
    assert queued_keys(s) == ["x-3", "x-4", "x-5"]
    assert s.handle(finished(A, "x-0")) == [
        in_memory("c", "x-0", A),
        compute(A, "x-3", priority=(3,), duration=1.0),
    ]


def test_losing_a_worker_puts_its_root_tasks_back_in_the_queue() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))  # 2 slots each
    s.handle(submit_all("c", roots(10)))
    assert queries.processing(s) == {A: ["x-0", "x-3"], B: ["x-1", "x-2"]}
    assert s.handle(WorkerRemoved(A)) == []  # B is full: A's tasks wait in the queue
    assert states(s)["x-0"] == states(s)["x-3"] == "queued"
    assert queued_keys(s) == ["x-0", *(f"x-{i}" for i in range(3, 10))]
    # ... at the head of the queue, by priority.
    assert s.handle(finished(B, "x-1")) == [
        in_memory("c", "x-1", B),
        compute(B, "x-0", duration=1.0),
    ]
    assert s.handle(finished(B, "x-2")) == [
        in_memory("c", "x-2", B),
        compute(B, "x-3", priority=(3,), duration=1.0),
    ]


def _b_with_free_slots(free_slots: int) -> SchedulerState:
    """A runs x-0 and x-3; the queue is empty and B (1 thread, 2 slots) has
    ``free_slots`` free slots."""
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit_all("c", roots(5)))
    assert queries.processing(s) == {A: ["x-0", "x-3"], B: ["x-1", "x-2"]}
    s.handle(finished(B, "x-1"), finished(B, "x-2"))  # x-4 went to B
    if free_slots == 2:
        s.handle(finished(B, "x-4"))
    assert len(s.queued) == 0
    assert len(s.workers[B].processing) == 2 - free_slots
    return s


def test_losing_a_worker_moves_its_root_tasks_to_free_slots() -> None:
    s = _b_with_free_slots(2)
    out = s.handle(WorkerRemoved(A))
    assert sorted(assigned(out)) == [(B, "x-0"), (B, "x-3")]
    assert sorted(queries.processing(s)[B]) == ["x-0", "x-3"]


def test_losing_a_worker_gives_the_last_free_slot_to_its_most_urgent_task() -> None:
    s = _b_with_free_slots(1)
    out = s.handle(WorkerRemoved(A))
    assert out == [compute(B, "x-0", duration=1.0)]
    assert queued_keys(s) == ["x-3"]


# ------------------------------------------------------------------ 4. stealing


def _backlog(nthreads_a: int = 1, tasks: int = 3, nbytes: int = 10, **kw: object) -> SchedulerState:
    """``tasks`` tasks t-i all need ``d`` (``nbytes`` bytes, on A only), so locality
    sends them all to A; B (1 thread) is idle."""
    s = make_state(**kw)
    s.handle(worker(A, nthreads=nthreads_a), worker(B))
    s.handle(scatter({"d": (nbytes, (A,))}))
    s.handle(submit_all("c", [spec(f"t-{i}", "d") for i in range(tasks)]))
    assert queries.processing(s) == {A: [f"t-{i}" for i in range(tasks)], B: []}
    return s


def steals(s: SchedulerState) -> dict[Key, tuple[str, str | None]]:
    """Steal requests in flight: ``{key: (victim, thief)}``."""
    return {
        ts.key: (st.victim.address, st.thief.address if st.thief else None)
        for ts, st in s.steals.items()
    }


def test_idle_worker_steals_the_most_recently_assigned_task() -> None:
    s = _backlog()
    assert s.handle(Tick(now=1.0)) == [steal_request(A, "t-2")]
    assert steals(s) == {"t-2": (A, B)}
    assert queries.processing(s) == {A: ["t-0", "t-1", "t-2"], B: []}  # until A answers
    assert s.handle(Tick(now=2.0)) == []  # B's idle thread is spoken for


def test_several_thieves_take_from_the_end_of_the_backlog() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"d": (10, (A,))}))
    s.handle(submit_all("c", [spec(f"t-{i}", "d") for i in range(5)]))
    assert s.handle(Tick()) == [steal_request(A, "t-4"), steal_request(A, "t-3")]
    assert steals(s) == {"t-4": (A, B), "t-3": (A, C)}


def test_steal_ready_moves_the_task_to_the_thief() -> None:
    s = _backlog()
    s.handle(Tick())
    out = s.handle(StealResponded(A, "t-2", "ready"))
    # A has already dropped it: only B is told, once.
    assert out == [compute(B, "t-2", {"d": (A,)})]
    assert queries.processing(s) == {A: ["t-0", "t-1"], B: ["t-2"]}
    assert s.steals == {}
    assert s.handle(Tick()) == []
    assert s.handle(StealResponded(A, "t-2", "ready")) == []  # a duplicate answer
    s.handle(finished(B, "t-2"))
    assert queries.who_has(s, ["t-2"]) == {"t-2": [B]}


@pytest.mark.parametrize("state", ["executing", "memory", None])
def test_steal_refused_when_the_task_has_started(state: str | None) -> None:
    s = _backlog()
    s.handle(Tick())
    assert s.handle(StealResponded(A, "t-2", state)) == []
    assert queries.processing(s) == {A: ["t-0", "t-1", "t-2"], B: []}
    assert s.steals == {}


def test_stale_steal_response_changes_nothing() -> None:
    s = _backlog()
    s.handle(Tick())
    s.handle(finished(A, "t-2"))  # it ran on A before the request arrived
    assert s.steals == {}
    assert s.handle(StealResponded(A, "t-2", "memory")) == []
    assert s.handle(StealResponded(A, "t-2", "ready")) == []
    assert s.tasks["t-2"].state == "memory"
    assert queries.who_has(s, ["t-2"]) == {"t-2": [A]}
    # An answer from a worker that was never asked is ignored too.
    s.handle(Tick())
    assert steals(s) == {"t-1": (A, B)}
    assert s.handle(StealResponded(B, "t-1", "ready")) == []
    assert steals(s) == {"t-1": (A, B)}


def test_thief_gone_before_the_answer_places_the_task_anew() -> None:
    s = _backlog(nthreads_a=2, tasks=4)
    assert s.handle(Tick()) == [steal_request(A, "t-3")]
    assert s.handle(WorkerRemoved(B)) == []
    out = s.handle(StealResponded(A, "t-3", "ready"))
    # Placed anew: back on A, which holds d (A is told to drop its stale copy first).
    assert out == [free(A, "t-3"), compute(A, "t-3", {"d": (A,)})]
    assert queries.processing(s) == {A: ["t-0", "t-1", "t-2", "t-3"]}


def test_thief_retiring_before_the_answer_places_the_task_anew() -> None:
    s = _backlog(nthreads_a=2, tasks=4)
    s.handle(scatter({"b": (10, (B,))}))
    assert s.handle(Tick()) == [steal_request(A, "t-3")]
    s.handle(RetirementRequested("r", (B,)))  # B stays until A has a copy of b
    assert B in s.workers and not s.workers[B].accepting
    out = s.handle(StealResponded(A, "t-3", "ready"))
    assert out == [free(A, "t-3"), compute(A, "t-3", {"d": (A,)})]


def test_victim_gone_with_a_steal_in_flight_reschedules_once() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=2), worker(B, nthreads=4))
    s.handle(submit("c", spec("d")))
    s.handle(finished(A, "d"))
    s.handle(submit_all("c", [spec(f"t-{i}", "d") for i in range(4)]))
    s.handle(Tick())
    assert steals(s) == {"t-3": (A, B), "t-2": (A, B)}
    out = s.handle(WorkerRemoved(A))
    assert assigned(out) == [(B, "d")]  # d was only on A: recomputed; the t's wait
    assert s.steals == {}
    assert s.handle(StealResponded(A, "t-3", "ready"), StealResponded(A, "t-2", "ready")) == []
    out = s.handle(finished(B, "d"))
    assert sorted(assigned(out)) == [(B, "t-0"), (B, "t-1"), (B, "t-2"), (B, "t-3")]
    assert s.handle(Tick()) == []


@pytest.mark.parametrize(
    ("nbytes", "kw", "stolen"),
    [
        (50_000_000, {}, True),  # 0.5 s at 100 MB/s == the default 0.5 s: worth it
        (50_000_001, {}, False),
        (10**9, {}, False),  # 10 s of copying for 0.5 s of work
        (10**9, {"unknown_duration": 10.0}, True),
        (500, {"bandwidth": 1000.0}, True),
        (501, {"bandwidth": 1000.0}, False),
    ],
)
def test_steal_only_when_copying_the_inputs_is_not_slower_than_running(
    nbytes: int, kw: dict[str, float], stolen: bool
) -> None:
    s = _backlog(nbytes=nbytes, **kw)
    assert s.handle(Tick()) == ([steal_request(A, "t-2")] if stolen else [])


def test_learned_run_time_makes_large_inputs_worth_moving() -> None:
    s = _backlog(nbytes=10**9)
    assert s.handle(Tick()) == []
    s.handle(TaskFinishedEvent(A, "t-0", 10, "int", 0.0, 20.0))  # t takes 20 s
    assert s.handle(Tick()) == [steal_request(A, "t-2")]


def test_only_the_bytes_the_thief_lacks_count() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"huge": (10**9, (A, B)), "small": (10, (A,))}))
    s.handle(submit_all("c", [spec(f"t-{i}", "huge", "small") for i in range(3)]))
    assert queries.processing(s)[A] == ["t-0", "t-1", "t-2"]
    # C (idle, fewest bytes) would need 1 GB; B has "huge" already.
    assert s.handle(Tick()) == [steal_request(A, "t-2")]
    assert steals(s) == {"t-2": (A, B)}


def test_no_stealing_when_disabled() -> None:
    s = _backlog(work_stealing=False)
    assert s.handle(Tick(now=1.0), Tick(now=2.0)) == []
    assert s.steals == {}


def test_restricted_tasks_are_stolen_only_by_valid_workers() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C, resources={"GPU": 1.0}))
    s.handle(worker(D, resources={"GPU": 1.0}), scatter({"d": (10, (D,))}))
    gpu = {"GPU": 1.0}
    s.handle(submit_all("c", [spec(f"g-{i}", "d", resources=gpu) for i in range(3)]))
    s.handle(submit_all("c", [spec(f"h-{i}", workers=(D,)) for i in range(2)]))
    assert queries.processing(s)[D] == ["g-0", "g-1", "g-2", "h-0", "h-1"]
    # A and B come first (idle, joined first) but have no GPU; nobody but D may run h.
    assert s.handle(Tick()) == [steal_request(D, "g-2")]
    assert steals(s) == {"g-2": (D, C)}
    assert s.workers[D].used_resources == {"GPU": 3.0}
    out = s.handle(StealResponded(D, "g-2", "constrained"))
    assert out == [compute(C, "g-2", {"d": (D,)}, resources=gpu)]
    assert (s.workers[C].used_resources, s.workers[D].used_resources) == (gpu, {"GPU": 2.0})


# ------------------------------------------------------------------ 7. resources


def test_used_resources_follow_the_processing_tasks() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=2, resources={"GPU": 2.0, "MEM": 10.0}))
    gpu = {"GPU": 1.0}
    s.handle(
        submit_all(
            "c",
            [
                spec("g1", resources=gpu),
                spec("g2", resources=gpu),
                spec("g3", resources={"GPU": 1.0, "MEM": 4.0}),
                spec("plain"),
            ],
        )
    )
    ws = s.workers[A]
    # More than A declares: A itself makes g3 wait for a GPU.
    assert ws.used_resources == {"GPU": 3.0, "MEM": 4.0}
    s.handle(finished(A, "g1"))
    assert ws.used_resources == {"GPU": 2.0, "MEM": 4.0}
    s.handle(failed(A, "g2"))
    assert ws.used_resources == {"GPU": 1.0, "MEM": 4.0}
    s.handle(KeysReleased("c", ("g3",)))
    assert ws.used_resources == {"GPU": 0.0, "MEM": 0.0}
    assert [ts.key for ts in ws.processing] == ["plain"]


def test_resource_tasks_prefer_a_worker_whose_resources_are_free_now() -> None:
    s = make_state()
    s.handle(worker(A, resources={"GPU": 1.0}), worker(B, resources={"GPU": 1.0}))
    s.handle(submit_all("c", [spec("g1", resources={"GPU": 1.0}), spec("p", workers=(B,))]))
    assert queries.processing(s) == {A: ["g1"], B: ["p"]}
    # A's GPU is taken; B is busier but its GPU is free.
    out = s.handle(submit("c", spec("g2", resources={"GPU": 1.0})))
    assert assigned(out) == [(B, "g2")]


def no_valid_worker(s: SchedulerState, key: Key) -> str:
    """The exception text of the KeyErred ``key``'s client got."""
    ts = s.tasks[key]
    assert ts.state == "erred" and ts.failure is not None
    return ts.failure.exception_text


def test_no_valid_worker_after_the_timeout() -> None:
    s = make_state(no_workers_timeout=5.0)
    s.handle(worker(A, resources={"GPU": 1.0}))
    s.handle(submit("c", spec("x", resources={"GPU": 2.0})))
    assert s.tasks["x"].state == "no-worker"
    assert s.handle(Tick(now=4.9)) == []
    out = s.handle(Tick(now=5.0))
    assert len(out) == 1 and isinstance(out[0], ToClient) and isinstance(out[0].msg, KeyErred)
    msg = out[0].msg
    assert (msg.key, msg.blame, msg.exception, msg.traceback) == ("x", "x", None, None)
    assert msg.exception_text.startswith("NoValidWorker: task 'x' needs resources {'GPU': 2.0}")
    assert "GPU" in msg.exception_text and "'x'" in msg.exception_text
    assert s.unrunnable == {}


def test_no_valid_worker_names_missing_workers() -> None:
    s = make_state(no_workers_timeout=1.0)
    s.handle(worker(A))
    s.handle(submit("c", spec("x", workers=("gpu-box",))))
    s.handle(Tick(now=1.0))
    text = no_valid_worker(s, "x")
    assert text.startswith("NoValidWorker: task 'x' needs one of the workers ['gpu-box']")


def test_no_valid_worker_waits_while_there_are_no_workers_and_restarts_on_join() -> None:
    s = make_state(no_workers_timeout=5.0)
    s.handle(submit("c", spec("x", resources={"GPU": 1.0})))
    assert s.handle(Tick(now=100.0)) == []  # no worker at all: wait for one
    assert s.tasks["x"].state == "no-worker"
    s.handle(WorkerAdded(A, 1, 2**30, "a", now=100.0))  # can't run it: the wait restarts
    assert s.unrunnable == {s.tasks["x"]: 100.0}
    s.handle(WorkerAdded(B, 1, 2**30, "b", now=103.0))
    assert s.handle(Tick(now=107.9)) == []
    s.handle(Tick(now=108.0))
    assert no_valid_worker(s, "x").startswith("NoValidWorker:")


def test_a_fitting_worker_joining_runs_the_task() -> None:
    s = make_state(no_workers_timeout=5.0)
    s.handle(worker(A))
    s.handle(submit("c", spec("x", resources={"GPU": 1.0})))
    out = s.handle(worker(B, resources={"GPU": 1.0}, now=4.0))
    assert out == [compute(B, "x", resources={"GPU": 1.0})]
    assert s.handle(Tick(now=50.0)) == []


# ------------------------------------------------------------------ 8. adaptive


def test_adaptive_target_grows_with_queued_work() -> None:
    s = make_state()
    assert queries.adaptive_target(s) == {"target": 0, "workers_to_close": []}
    s.handle(submit_all("c", roots(10)))  # no worker: 10 tasks of 0.5 s waiting
    assert queries.adaptive_target(s) == {"target": 1, "workers_to_close": []}
    assert queries.adaptive_target(s, target_duration=1.0)["target"] == 5
    s.handle(worker(A))
    # 2 processing + 8 queued tasks, 0.5 s each: 5 s of work, 1 thread per worker.
    assert queries.adaptive_target(s, target_duration=1.0)["target"] == 5
    s.handle(submit_all("c", roots(30, first=10)))
    assert queries.adaptive_target(s, target_duration=1.0)["target"] == 20
    assert queries.adaptive_target(s)["target"] == 4


def test_adaptive_target_counts_threads_per_worker() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=4))
    s.handle(submit_all("c", roots(40)))  # 5 processing + 35 queued: 20 s of work
    assert queries.adaptive_target(s, target_duration=1.0) == {
        "target": 5,  # 20 threads, 4 per worker
        "workers_to_close": [],
    }


def test_adaptive_target_never_exceeds_the_runnable_tasks() -> None:
    s = make_state()
    s.handle(worker(A))
    run_once(s, "slow-0", 1000.0)
    s.handle(submit_all("c", [spec("slow-1"), spec("slow-2")]))
    assert s.workers[A].occupancy == 2000.0
    assert queries.adaptive_target(s) == {"target": 2, "workers_to_close": []}


def test_adaptive_target_lists_idle_workers_fewest_bytes_first() -> None:
    s = make_state()
    s.handle(worker(A), worker(B), worker(C))
    s.handle(scatter({"b": (100, (B,))}))
    s.handle(submit("c", spec("busy", workers=(A,))))
    assert queries.adaptive_target(s) == {"target": 1, "workers_to_close": [C, B]}
    # A retiring worker is no candidate (B waits for its key to be copied to C).
    s.handle(RetirementRequested("r", (B,)))
    assert queries.adaptive_target(s) == {"target": 2, "workers_to_close": [C]}


def test_adaptive_target_keeps_workers_whose_data_would_not_fit() -> None:
    s = make_state()
    s.handle(WorkerAdded(A, 1, 1000, "a"), WorkerAdded(B, 1, 1000, "b"))
    s.handle(scatter({"x": (300, (A,)), "y": (500, (B,))}))
    # Closing A would leave B 500 bytes of room for A's 300: fine; closing B too is not.
    assert queries.adaptive_target(s) == {"target": 1, "workers_to_close": [A]}
    s.handle(scatter({"z": (300, (B,))}))  # B: 800 of 1000; now A's 300 would not fit
    assert queries.adaptive_target(s) == {"target": 2, "workers_to_close": []}
    s.handle(scatter({"w": (200, (A,))}))  # 1300 of 2000 bytes held: double the workers
    assert queries.adaptive_target(s) == {"target": 4, "workers_to_close": []}
