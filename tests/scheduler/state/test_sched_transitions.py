"""The transition table: every edge exercised, every state reachable; events and story."""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sched_builders import (
    EXC,
    A,
    B,
    failed,
    finished,
    make_state,
    spec,
    submit,
    worker,
)

from shoal.protocol.opaque import Opaque
from shoal.scheduler.state import (
    TRANSITIONS,
    ClientConnected,
    ClientDisconnected,
    DataMissing,
    DataScattered,
    ErredRestored,
    Event,
    FireAndForgetRequested,
    GraphSubmitted,
    KeysCancelled,
    KeysDesired,
    KeysReleased,
    RebalanceRequested,
    ReplicasAdded,
    ReplicationRequested,
    RescheduleRequested,
    RestartRequested,
    RetirementRequested,
    SchedulerState,
    StealResponded,
    TaskFailedEvent,
    TaskFinishedEvent,
    Tick,
    TransitionRecord,
    WorkerAdded,
    WorkerRemoved,
    WorkerStatusChanged,
    queries,
)
from shoal.scheduler.state.events import event_types
from shoal.scheduler.state.model import LIVE_STATES


def _diamond_and_release() -> SchedulerState:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "b", "c")))
    s.handle(*(finished(A, k) for k in "abcd"))
    s.handle(KeysReleased("c", ("d",)))
    return s


def _errors_and_retry() -> SchedulerState:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a"), spec("m", "gone"), keys=("b", "m")))
    s.handle(failed(A, "a"))
    s.handle(submit("c", spec("b", "a")))  # erred → released → waiting
    s.handle(KeysReleased("c", ("b", "m")))
    return s


def _no_worker_and_release() -> SchedulerState:
    s = make_state()
    s.handle(submit("c", spec("x"), spec("y"), keys=("x", "y")))
    s.handle(KeysReleased("c", ("x",)))  # no-worker → released
    s.handle(worker(A))  # no-worker → processing
    return s


def _data_arrives_early() -> SchedulerState:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x", workers=(A,)), spec("w", "x"), keys=("w",)))
    # A scattered value for a waiting task is taken as it is.
    s.handle(DataScattered("c", {"w": (B,), "new": (A,)}, {"w": 1, "new": 1}))
    return s


def _data_arrives_for_no_worker_task() -> SchedulerState:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("nw", workers=("nobody",))))
    s.handle(finished(A, "nw"))  # it ran there before, say: the value is good
    return s


def _lost_worker() -> SchedulerState:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("a"), spec("b", "a")))
    s.handle(finished(A, "a"))
    s.handle(WorkerRemoved(A))
    return s


def _root_tasks_queue() -> SchedulerState:
    s = make_state()
    s.handle(worker(A))  # 1 thread: 2 slots at the default saturation of 1.1
    roots = [spec(("r", i), priority=(i,)) for i in range(6)]
    s.handle(submit("c", *roots, keys=tuple(t.key for t in roots)))
    s.handle(finished(A, ("r", 0)))  # queued → processing
    s.handle(DataScattered("c", {("r", 5): (A,)}, {("r", 5): 1}))  # queued → memory
    s.handle(KeysReleased("c", (("r", 4),)))  # queued → released
    return s


def _no_worker_times_out() -> SchedulerState:
    s = make_state(no_workers_timeout=5.0)
    s.handle(worker(A))
    s.handle(submit("c", spec("gpu", resources={"GPU": 1.0})))
    s.handle(Tick(now=10.0))  # no-worker → erred
    return s


SCENARIOS: list[Callable[[], SchedulerState]] = [
    _root_tasks_queue,
    _no_worker_times_out,
    _diamond_and_release,
    _errors_and_retry,
    _no_worker_and_release,
    _data_arrives_early,
    _data_arrives_for_no_worker_task,
    _lost_worker,
]


def _edges() -> set[tuple[str, str]]:
    edges: set[tuple[str, str]] = set()
    for scenario in SCENARIOS:
        edges.update((r.start, r.finish) for r in scenario().transition_log)
    return edges


def test_every_edge_is_exercised() -> None:
    edges = _edges()
    assert set(TRANSITIONS) - edges == set()
    # Moves not in the table go through released, so only table edges are logged,
    # except where placing a ready task ends in the queue or in no-worker instead.
    placed = {("waiting", "queued"), ("waiting", "no-worker"), ("no-worker", "queued")}
    assert edges - set(TRANSITIONS) <= placed


def test_every_state_is_reachable() -> None:
    reached = {"released"} | {finish for _, finish in _edges()}
    assert reached == {*LIVE_STATES, "forgotten"}


def source_of(func: Callable[..., object]) -> str:
    """The function's source, also when its module is compiled (SHOAL_COMPILE=1)."""
    try:
        return inspect.getsource(func)
    except TypeError:  # a mypyc function: read the .py shipped beside the extension
        package, name = func.__module__.rsplit(".", 1)
        path = Path(sys.modules[package].__file__ or "").with_name(f"{name}.py")
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef) and node.name == func.__name__:
                return ast.get_source_segment(text, node) or ""
        raise


def test_each_edge_has_its_own_function_with_a_comment() -> None:
    funcs = list(TRANSITIONS.values())
    assert len(set(funcs)) == len(funcs)
    for (start, finish), func in TRANSITIONS.items():
        body = source_of(func).split(":\n", 1)[1]
        assert body.lstrip().startswith("#"), f"{start} → {finish} lacks a comment"


EXAMPLES: list[Event] = [
    ClientConnected("c", stimulus_id="s1", now=1.5),
    ClientDisconnected("c"),
    GraphSubmitted("c", (spec("a"), spec(("b", 1), "a", priority=(1, 2))), (("b", 1),)),
    KeysReleased("c", ("a",)),
    KeysDesired("c", ("a",)),
    FireAndForgetRequested("c", ("a",)),
    KeysCancelled("c", ("a",), force=True),
    DataScattered("c", {"x": (A, B)}, {"x": 3}),
    WorkerAdded(A, 2, 100, "w", {"GPU": 1.0}, ("x",), {"x": 3}),
    WorkerRemoved(A, "died", safe=False),
    TaskFinishedEvent(A, "a", 8, "int", 1.0, 2.0),
    TaskFailedEvent(A, "a", EXC, Opaque([b"tb"]), "E: x", "tb", 1.0, 2.0),
    ReplicasAdded(A, ("a",), {"a": 8}),
    DataMissing(A, "a", B),
    RescheduleRequested(A, "a"),
    StealResponded(A, "a", "ready"),
    RetirementRequested("r1", (A, "w"), None, close=False),
    ReplicationRequested("r2", ("a", ("b", 1)), 2, (A,)),
    RebalanceRequested("r3", None, None),
    Tick(now=3.0),
    WorkerStatusChanged(A, "paused"),
    RestartRequested(),
    ErredRestored("a", EXC, None, "E: x", "tb", blame="a"),
]


def test_examples_cover_every_event_type() -> None:
    assert {type(e).__name__ for e in EXAMPLES} == set(event_types()) - {"Event"}


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_events_round_trip(event: Event) -> None:
    d = event.to_dict()
    assert d["event"] == type(event).__name__
    assert Event.from_dict(d) == event


def test_replaying_the_event_log_gives_the_same_outputs() -> None:
    s = make_state()
    outputs = []
    for events in (
        (worker(A), worker(B)),
        (submit("c", spec("a"), spec("b", "a"), spec("c", "a"), keys=("b", "c")),),
        (finished(A, "a"), failed(A, "b")),
        (WorkerRemoved(A), finished(B, "c")),
    ):
        outputs.extend(s.handle(*events))
    replay = make_state()
    again = []
    for sid, event in s.event_log:
        again.extend(replay.handle(Event.from_dict({**event.to_dict(), "stimulus_id": sid})))
    assert again == outputs
    assert list(replay.transition_log) == list(s.transition_log)


def test_story_tells_what_happened_to_a_key() -> None:
    s = make_state()
    s.handle(worker(A, stimulus_id="join"))
    s.handle(submit("c", spec("x"), spec("y"), keys=("x", "y")))
    s.handle(TaskFinishedEvent(A, "x", 8, "int", 0.0, 1.0, stimulus_id="fin-x", now=5.0))
    story = queries.story(s, "x")
    sid = s.event_log[1][0]
    assert story == [
        (sid, s.event_log[1][1]),
        TransitionRecord("x", "released", "waiting", sid, 0.0),
        TransitionRecord("x", "waiting", "processing", sid, 0.0),
        ("fin-x", s.event_log[2][1]),
        TransitionRecord("x", "processing", "memory", "fin-x", 5.0),
    ]
    assert all(r.key == "y" for r in queries.story(s, "y") if isinstance(r, TransitionRecord))


def test_logs_are_bounded() -> None:
    s = SchedulerState(log_size=3)
    s.handle(*(worker(f"tcp://w{i}:1") for i in range(10)))
    assert len(s.event_log) == 3
    s.handle(submit("c", *(spec(i) for i in range(10)), keys=tuple(range(10))))
    assert len(s.transition_log) == 3


def test_the_event_log_keeps_at_most_log_size_submitted_tasks() -> None:
    s = SchedulerState(log_size=10)
    s.handle(worker(A))
    big = submit("c", *(spec(f"t{i}") for i in range(25)), keys=tuple(f"t{i}" for i in range(25)))
    s.handle(big)
    # the newest event stays, however big (its tasks are alive anyway)
    assert [e for _, e in s.event_log][-1] is big
    s.handle(submit("c", spec("small")))
    # the next one pushes it out: its 25 run specs are no longer held by the log
    assert big not in [e for _, e in s.event_log]
    assert s._logged_tasks == 1
    for i in range(12):  # plain events beyond maxlen: counts stay right
        s.handle(finished(A, "small") if i == 0 else submit("c", spec(f"u{i}")))
    assert len(s.event_log) == 10
    assert s._logged_tasks == sum(
        len(e.tasks) for _, e in s.event_log if isinstance(e, GraphSubmitted)
    )
    nothing = SchedulerState(log_size=0)
    nothing.handle(worker(A), big)
    assert len(nothing.event_log) == 0
