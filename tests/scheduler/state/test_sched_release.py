"""Releasing, cancelling, disconnecting, scattering, and stale worker messages."""

from __future__ import annotations

from sched_builders import (
    A,
    B,
    assigned,
    cancelled,
    compute,
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

from shoal.protocol.messages import KeyErred
from shoal.scheduler.state import (
    ClientDisconnected,
    DataScattered,
    KeysCancelled,
    KeysReleased,
    ReplicasAdded,
    ToClient,
    WorkerRemoved,
    queries,
)


def test_released_keys_are_freed_on_every_holder_and_forgotten() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x"), keys=("x",)))
    s.handle(finished(A, "x"), ReplicasAdded(B, ("x",), {"x": 10}))
    assert queries.who_has(s, ["x"]) == {"x": [A, B]}
    out = s.handle(KeysReleased("c", ("x",)))
    assert out == [free(A, "x"), free(B, "x")]
    assert s.tasks == {}


def test_key_stays_while_another_client_wants_it() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("x")), submit("c2", spec("x")))
    s.handle(finished(A, "x"))
    assert s.handle(KeysReleased("c1", ("x",))) == []
    assert s.tasks["x"].state == "memory"
    assert s.handle(KeysReleased("c2", ("x",))) == [free(A, "x")]


def test_releasing_a_waiting_graph_cancels_running_work() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a")))
    out = s.handle(KeysReleased("c", ("b",)))
    assert out == [free(A, "a")]
    assert s.tasks == {}
    # The worker finishing it anyway is told to drop it.
    assert s.handle(finished(A, "a")) == [free(A, "a")]


def test_intermediate_result_released_once_its_dependents_finished() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a"), spec("c", "a"), keys=("b", "c")))
    s.handle(finished(A, "a"))
    assert s.handle(finished(A, "b")) == [in_memory("c", "b", A)]
    assert s.tasks["a"].state == "memory"
    assert s.handle(finished(A, "c")) == [in_memory("c", "c", A), free(A, "a")]
    assert states(s) == {"a": "released", "b": "memory", "c": "memory"}
    s.handle(KeysReleased("c", ("b",)))
    assert states(s) == {"a": "released", "c": "memory"}
    s.handle(KeysReleased("c", ("c",)))
    assert s.tasks == {}


def test_cancel_releases_the_key_and_its_dependents() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a"), keys=("a", "b")))
    out = s.handle(KeysCancelled("c", ("a",)))
    reason = "cancelled by client c"
    assert out == [free(A, "a"), cancelled("c", "a", "b", reason=reason)]
    assert s.tasks == {}


def test_cancel_without_force_keeps_keys_other_clients_want() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("x")), submit("c2", spec("x")))
    out = s.handle(KeysCancelled("c1", ("x",)))
    assert out == [cancelled("c1", "x", reason="cancelled by client c1")]
    assert s.tasks["x"].state == "processing"
    out = s.handle(KeysCancelled("c1", ("x",), force=True))
    reason = "cancelled by client c1"
    assert out == [
        free(A, "x"),
        cancelled("c1", "x", reason=reason),
        cancelled("c2", "x", reason=reason),
    ]
    assert s.tasks == {}


def test_client_disconnect_releases_everything_it_wanted() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c1", spec("x")), submit("c2", spec("y")))
    s.handle(finished(A, "x"))
    out = s.handle(ClientDisconnected("c1"))
    assert out == [free(A, "x")]
    assert states(s) == {"y": "processing"}
    assert "c1" not in s.clients


def test_scatter_puts_keys_in_memory() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    out = s.handle(DataScattered("c", {"x": (A,), "y": (A, B)}, {"x": 8, "y": 16}))
    assert out == [
        in_memory("c", "x", A, type_name=None),
        in_memory("c", "y", A, B, type_name=None),
    ]
    assert queries.who_has(s) == {"x": [A], "y": [A, B]}
    assert queries.identity(s)["workers"][A]["nbytes"] == 24
    # Computing on scattered data: it goes where the data is.
    out = s.handle(submit("c", spec("f", "x")))
    assert out == [compute(A, "f", {"x": (A,)}, {"x": 8})]
    s.handle(KeysReleased("c", ("y",)))
    assert set(s.tasks) == {"x", "f"}


def test_scatter_to_gone_worker_is_cancelled() -> None:
    s = make_state()
    out = s.handle(DataScattered("c", {"x": ("tcp://gone:1",)}, {"x": 8}))
    assert out == [cancelled("c", "x", reason="no live worker holds scattered key 'x'")]
    assert s.tasks == {}


def test_scattered_data_lost_cannot_be_recomputed() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(DataScattered("c", {"x": (A,)}, {"x": 8}))
    s.handle(submit("c", spec("f", "x")))
    out = s.handle(WorkerRemoved(A))
    reason = "its data was lost and it has no recipe to recompute it"
    text = "MissingDependency: dependency 'x' of 'f' is not known to the scheduler (released?)"
    assert out == [
        lost("c", "x"),
        ToClient("c", KeyErred("f", None, None, text, "", blame="f")),
        cancelled("c", "x", reason=reason),
    ]
    assert states(s) == {"f": "erred"}


def test_finished_from_a_non_assigned_worker_while_in_memory_adds_a_replica() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x")))
    s.handle(finished(A, "x"))
    assert s.handle(finished(B, "x")) == []
    assert queries.who_has(s, ["x"]) == {"x": [A, B]}


def test_finished_from_another_worker_while_processing_is_accepted() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("x")))
    assert s.tasks["x"].processing_on is s.workers[A]
    out = s.handle(finished(B, "x"))
    assert out == [in_memory("c", "x", B), free(A, "x")]
    assert queries.who_has(s, ["x"]) == {"x": [B]}


def test_stale_messages_about_unknown_keys_and_workers() -> None:
    s = make_state()
    s.handle(worker(A))
    assert s.handle(finished(A, "nope")) == [free(A, "nope")]
    assert s.handle(failed(A, "nope")) == [free(A, "nope")]
    assert s.handle(ReplicasAdded(A, ("nope",), {"nope": 1})) == [free(A, "nope")]
    assert s.handle(finished("tcp://ghost:1", "nope")) == []
    s.handle(submit("c", spec("x")))
    # A failure report for a task running elsewhere (or finished) is stale.
    assert s.handle(failed("tcp://ghost:1", "x")) == []
    s.handle(finished(A, "x"))
    assert s.handle(failed(A, "x")) == []
    assert s.tasks["x"].state == "memory"


def test_replicas_of_released_keys_are_freed() -> None:
    s = make_state()
    s.handle(worker(A), worker(B))
    s.handle(submit("c", spec("a"), spec("b", "a")))
    s.handle(finished(A, "a"), finished(A, "b"))
    assert s.tasks["a"].state == "released"
    assert s.handle(ReplicasAdded(B, ("a", "b"), {"a": 10, "b": 10})) == [free(B, "a")]
    assert queries.who_has(s, ["b"]) == {"b": [A, B]}


def test_worker_joining_with_keys() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("x")))
    s.handle(finished(A, "x"))
    out = s.handle(worker(B, keys=("x", "junk")))
    assert out == [free(B, "junk")]
    assert queries.who_has(s, ["x"]) == {"x": [A, B]}
    assert assigned(out) == []


def test_fire_and_forget_runs_to_completion_then_is_forgotten() -> None:
    from shoal.scheduler.state import FireAndForgetRequested

    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("a"), spec("b", "a")))
    s.handle(FireAndForgetRequested("c", ("b",)))
    # the client lets go of its future: the graph keeps running
    assert s.handle(KeysReleased("c", ("b",))) == []
    assert states(s) == {"a": "processing", "b": "waiting"}
    s.handle(finished(A, "a"))
    out = s.handle(finished(A, "b"))
    assert free(A, "b", "a") in out
    assert s.tasks == {}


def test_fire_and_forget_of_an_erred_key_is_forgotten() -> None:
    from shoal.scheduler.state import FireAndForgetRequested

    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("x")))
    s.handle(FireAndForgetRequested("c", ("x",)), KeysReleased("c", ("x",)))
    s.handle(failed(A, "x"))
    assert s.tasks == {}


def test_a_dropped_result_is_forgotten_in_one_transition() -> None:
    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("x"), keys=("x",)))
    s.handle(finished(A, "x"))
    s.transition_log.clear()
    assert s.handle(KeysReleased("c", ("x",))) == [free(A, "x")]
    assert [(r.key, r.start, r.finish) for r in s.transition_log] == [("x", "memory", "forgotten")]
    assert s.tasks == {}
    assert s.counts["memory"] == 0


def test_forgetting_a_result_needed_again_since_is_stale() -> None:
    from shoal.scheduler.state.model import Context
    from shoal.scheduler.state.outgoing import Outbox
    from shoal.scheduler.state.transitions import run_recommendations

    s = make_state()
    s.handle(worker(A))
    s.handle(submit("c", spec("x"), keys=("x",)))
    s.handle(finished(A, "x"))
    ctx = Context("stale", 1.0, Outbox())
    ctx.recs[s.tasks["x"]] = "forgotten"  # recommended, but client c still wants x
    run_recommendations(s, ctx)
    assert states(s) == {"x": "memory"}
    assert ctx.out.drain() == []
