"""Actors in the pure state machines: never stolen, copied, moved or retired away; lost
with their worker and computed again; and the worker's transition listener."""

from __future__ import annotations

from shoal.protocol.messages import AcquireReplicas, FreeKeys, StealRequest, TaskSpec
from shoal.protocol.opaque import Opaque
from shoal.scheduler.state import (
    DataScattered,
    GraphSubmitted,
    KeysReleased,
    RebalanceRequested,
    ReplicasAdded,
    ReplicationRequested,
    RequestDone,
    RetirementRequested,
    SchedulerState,
    TaskFinishedEvent,
    Tick,
    ToWorker,
    WorkerAdded,
    WorkerRemoved,
)
from shoal.scheduler.state.snapshot import spec_of
from shoal.worker.state import ComputeTaskEvent, ExecuteSuccess, WorkerState

A, B = "tcp://a:1", "tcp://b:1"


def _spec(key: str, *deps: str, actor: bool = False) -> TaskSpec:
    return TaskSpec(key, deps, Opaque([key.encode()]), (0,), actor=actor)


def _state() -> SchedulerState:
    s = SchedulerState(validate=True)
    s.handle(WorkerAdded(A, 1, 2**30, "a"), WorkerAdded(B, 1, 2**30, "b"))
    return s


def _actor_on_a(s: SchedulerState) -> None:
    s.handle(GraphSubmitted("c", (_spec("counter", actor=True),), ("counter",)))
    assert s.tasks["counter"].processing_on is not None
    where = s.tasks["counter"].processing_on.address
    s.handle(TaskFinishedEvent(where, "counter", 100, "Counter", 0.0, 1.0))
    if where != A:  # make the test independent of the first placement
        s.handle(WorkerRemoved(where, "test"))
        s.handle(TaskFinishedEvent(A, "counter", 100, "Counter", 0.0, 1.0))
        s.handle(WorkerAdded(B, 1, 2**30, "b"))
    assert [w.address for w in s.tasks["counter"].who_has] == [A]


def test_task_spec_carries_the_actor_flag_on_the_wire() -> None:
    spec = _spec("x", actor=True)
    assert TaskSpec.from_wire(spec.to_wire()).actor
    old_form = spec.to_wire()[:-1]  # from a peer that does not know actors
    assert TaskSpec.from_wire(old_form).actor is False


def test_journal_snapshots_keep_the_actor_flag() -> None:
    s = _state()
    _actor_on_a(s)
    assert spec_of(s.tasks["counter"]).actor


def test_actor_tasks_are_never_stolen() -> None:
    s = _state()
    s.handle(DataScattered("c", {"d": (A,)}, {"d": 10}))
    specs = tuple(_spec(f"t-{i}", "d", actor=True) for i in range(3))
    s.handle(GraphSubmitted("c", specs, tuple(t.key for t in specs)))
    assert all(s.tasks[f"t-{i}"].processing_on.address == A for i in range(3))  # type: ignore[union-attr]
    out = s.handle(Tick(now=1.0))  # B idles while A has a backlog
    assert not [o for o in out if isinstance(getattr(o, "msg", None), StealRequest)]


def test_actor_values_are_not_replicated_or_rebalanced() -> None:
    s = _state()
    _actor_on_a(s)
    out = s.handle(ReplicationRequested("r", ("counter",), 2, None))
    assert not [o for o in out if isinstance(getattr(o, "msg", None), AcquireReplicas)]
    assert RequestDone("r", {"moved": 0}) in out
    out = s.handle(RebalanceRequested("q", None, None))
    assert not [o for o in out if isinstance(getattr(o, "msg", None), AcquireReplicas)]


def test_a_fetched_proxy_is_not_a_copy_of_the_actor() -> None:
    s = _state()
    _actor_on_a(s)
    # B fetched the value (a proxy) for a task of its own and reports it
    out = s.handle(ReplicasAdded(B, ("counter",), {"counter": 100}))
    assert out == [ToWorker(B, FreeKeys(("counter",)))]
    assert [w.address for w in s.tasks["counter"].who_has] == [A]


def test_a_worker_holding_an_actor_is_not_retired() -> None:
    s = _state()
    _actor_on_a(s)
    out = s.handle(RetirementRequested("r", (A,)))
    assert RequestDone("r", {}) in out
    assert A in s.workers and s.workers[A].accepting


def test_an_actor_lost_with_its_worker_errs_for_its_clients() -> None:
    s = _state()
    _actor_on_a(s)
    s.handle(GraphSubmitted("c", (_spec("use", "counter"),), ("use",)))
    s.handle(WorkerRemoved(A, "killed"))
    assert s.tasks["counter"].state == "erred"
    failure = s.tasks["counter"].failure
    assert failure is not None and failure.exception_text.startswith("ActorLost: ")
    assert s.tasks["use"].state == "erred"  # what needed it errs with it


def test_an_actor_only_dependents_need_is_computed_again() -> None:
    s = _state()
    _actor_on_a(s)
    s.handle(GraphSubmitted("c", (_spec("use", "counter"),), ("use",)))
    s.handle(KeysReleased("c", ("counter",)))  # the client keeps only the dependent
    s.handle(WorkerRemoved(A, "killed"))
    ts = s.tasks["counter"]
    assert ts.state == "processing" and ts.processing_on is not None
    assert ts.processing_on.address == B


def test_worker_transition_listener_sees_every_transition() -> None:
    ws = WorkerState(address=A, nthreads=1, validate=True)
    seen: list[tuple[object, str, str, str]] = []
    ws.transition_listener = lambda *args: seen.append(args)
    ws.handle(ComputeTaskEvent("x", Opaque([b"x"]), {}, {}, (0,), stimulus_id="s1"))
    ws.handle(ExecuteSuccess("x", 10, "int", 0.0, 1.0, stimulus_id="s2"))
    assert [(k, a, b) for k, a, b, _ in seen] == [
        ("x", "released", "waiting"),
        ("x", "waiting", "ready"),
        ("x", "ready", "executing"),
        ("x", "executing", "memory"),
    ]
    assert {sid for *_, sid in seen} == {"s1", "s2"}
