"""Submitting graphs and running them to completion, with exact outputs."""

from __future__ import annotations

from sched_builders import (
    A,
    B,
    assigned,
    cancelled,
    compute,
    finished,
    free,
    in_memory,
    make_state,
    spec,
    states,
    submit,
    worker,
)

from shoal.protocol.messages import KeyErred, KeyInMemory, unknown_key_reason
from shoal.scheduler.state import (
    ClientConnected,
    KeysDesired,
    KeysReleased,
    TaskFinishedEvent,
    ToClient,
)


def test_diamond_runs_to_completion_with_exact_messages() -> None:
    s = make_state()
    assert s.handle(worker(A), worker(B)) == []
    out = s.handle(
        ClientConnected("c"),
        submit("c", spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "b", "c")),
    )
    assert out == [compute(A, "a")]
    assert states(s) == {"a": "processing", "b": "waiting", "c": "waiting", "d": "waiting"}

    # b and c both go where a lives: locality beats the idle worker B.
    out = s.handle(finished(A, "a", nbytes=100))
    assert out == [
        compute(A, "b", {"a": (A,)}, {"a": 100}),
        compute(A, "c", {"a": (A,)}, {"a": 100}),
    ]
    out = s.handle(finished(A, "b", nbytes=5))
    assert out == []
    # a is still needed by c; once c is done, a is released (freed on A).
    out = s.handle(finished(A, "c", nbytes=7))
    assert out == [compute(A, "d", {"b": (A,), "c": (A,)}, {"b": 5, "c": 7}), free(A, "a")]
    out = s.handle(finished(A, "d"))
    assert out == [in_memory("c", "d", A), free(A, "c", "b")]
    assert states(s) == {"a": "released", "b": "released", "c": "released", "d": "memory"}

    # Releasing the only wanted key forgets the whole graph.
    out = s.handle(KeysReleased("c", ("d",)))
    assert out == [free(A, "d")]
    assert s.tasks == {}


def test_dependencies_are_fetched_from_the_worker_that_holds_them() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    out = s.handle(submit("c", spec("x"), spec("y"), spec("z", "x", "y"), keys=("z",)))
    assert out == [compute(A, "x"), compute(B, "y")]
    assert s.handle(finished(A, "x", nbytes=10)) == []
    out = s.handle(finished(B, "y", nbytes=30))
    # z runs on B, which holds more of its input; it fetches x from A.
    assert out == [compute(B, "z", {"x": (A,), "y": (B,)}, {"x": 10, "y": 30})]


def test_compute_task_lists_every_holder_of_every_dependency() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x"), keys=("x",)))
    s.handle(finished(A, "x", nbytes=10))
    s.handle(finished(B, "x", nbytes=10))  # a second copy (stale duplicate run)
    out = s.handle(submit("c", spec("y", "x")))
    # Equal bytes on both: the tie goes to the least recently used worker.
    assert out == [compute(B, "y", {"x": (A, B)}, {"x": 10})]


def test_priorities_order_compute_messages() -> None:
    s = make_state()
    s.handle(worker(A, nthreads=4))
    out = s.handle(
        submit(
            "c",
            spec("late", priority=(2,)),
            spec("early", priority=(0,)),
            spec("middle", priority=(1,)),
            keys=("late", "early", "middle"),
        )
    )
    assert assigned(out) == [(A, "early"), (A, "middle"), (A, "late")]
    assert [o.msg.priority for o in out] == [(0,), (1,), (2,)]


def test_existing_key_in_memory_is_reported_and_kept() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("x")))
    s.handle(finished(A, "x"))
    out = s.handle(submit("c2", spec("x")))
    assert out == [in_memory("c2", "x", A)]
    assert s.tasks["x"].state == "memory"
    assert [cs.client for cs in s.tasks["x"].who_wants] == ["c1", "c2"]


def test_existing_processing_key_keeps_its_state() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("x")))
    assert s.handle(submit("c2", spec("x"))) == []
    out = s.handle(finished(A, "x"))
    assert out == [in_memory("c1", "x", A), in_memory("c2", "x", A)]


def test_unknown_dependency_errs_with_a_clear_message() -> None:
    s = make_state()
    s.handle(worker(A))
    out = s.handle(submit("c", spec("y", "gone"), spec("z", "y"), keys=("y", "z")))
    assert len(out) == 2
    text = "MissingDependency: dependency 'gone' of 'y' is not known to the scheduler (released?)"
    assert out == [
        ToClient("c", KeyErred(key, None, None, text, "", blame="y")) for key in ("y", "z")
    ]
    assert states(s) == {"y": "erred", "z": "erred"}


def test_tasks_nobody_wants_are_forgotten_at_once() -> None:
    s = make_state()
    s.handle(worker(A))
    out = s.handle(submit("c", spec("a"), spec("orphan", "a"), spec("b"), keys=("b",)))
    assert out == [compute(A, "b")]
    assert states(s) == {"b": "processing"}


def test_resubmitting_a_forgotten_key_recomputes_it() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("x")))
    s.handle(finished(A, "x"))
    s.handle(KeysReleased("c", ("x",)))
    assert s.tasks == {}
    out = s.handle(submit("c", spec("x")))
    assert out == [compute(A, "x", duration=1.0)]


def test_keys_desired() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("a"), spec("b", "a")))
    s.handle(finished(A, "a"), finished(A, "b"))
    # a is released (an intermediate); b is in memory.
    out = s.handle(KeysDesired("c2", ("b", "a", "nope")))
    reason = unknown_key_reason("nope")
    assert out == [
        in_memory("c2", "b", A),
        compute(A, "a", duration=1.0),
        cancelled("c2", "nope", reason=reason),
    ]


def test_unknown_wanted_key_is_cancelled() -> None:
    s = make_state()
    out = s.handle(submit("c", spec("a"), keys=("a", "zzz")))
    reason = unknown_key_reason("zzz")
    assert out == [cancelled("c", "zzz", reason=reason)]
    assert states(s) == {"a": "no-worker"}


def test_a_small_value_sent_with_the_completion_goes_to_the_clients_that_want_it() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("a"), spec("b", "a")), KeysDesired("c2", ("b",)))
    value = b"pickled 42"
    # a is an intermediate nobody wants: its value goes nowhere
    assert s.handle(TaskFinishedEvent(A, "a", 10, "int", 0.0, 1.0, value=b"1")) == [
        compute(A, "b", {"a": (A,)})
    ]
    out = s.handle(TaskFinishedEvent(A, "b", 10, "int", 0.0, 1.0, value=value))
    sent = [m for m in out if isinstance(m, ToClient)]
    assert sent == [
        ToClient("c1", KeyInMemory("b", "int", (A,), value)),
        ToClient("c2", KeyInMemory("b", "int", (A,), value)),
    ]
    # the scheduler keeps none of it: a client asking later reads it from A
    assert s.handle(KeysDesired("c3", ("b",))) == [in_memory("c3", "b", A)]
