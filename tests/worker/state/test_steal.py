"""StealRequest: a task that has not started is dropped; anything else is left alone."""

from __future__ import annotations

from ws_builders import (
    A,
    B,
    add_keys,
    compute,
    drop,
    err,
    execute,
    finished,
    free,
    gather,
    got,
    make_ws,
    ok,
    reschedule,
    states,
    steal,
    stolen,
)

GPU = {"GPU": 1.0}


def test_steal_a_waiting_task_cancels_its_queued_fetches() -> None:
    ws = make_ws()
    ws.handle(compute("busy"))
    ws.handle(compute("x", {"d": (A,)}, nbytes={"d": 1}))
    ws.handle(compute("y", {"e": (A,)}, nbytes={"e": 1}))  # e queued behind d's transfer
    assert states(ws) == {"busy": "executing", "x": "waiting", "d": "flight"} | {
        "y": "waiting",
        "e": "fetch",
    }
    assert ws.handle(steal("y")) == [stolen("y", "waiting")]
    assert "y" not in ws.tasks and "e" not in ws.tasks
    assert ws.fetcher.data_needed == {}
    # The transfer of d goes on for x.
    assert ws.handle(got(A, d=1)) == [add_keys(d=1)]


def test_steal_a_waiting_task_whose_dependency_is_in_flight() -> None:
    ws = make_ws()
    ws.handle(compute("busy"))
    ws.handle(compute("x", {"d": (A,)}, nbytes={"d": 1}))
    assert ws.handle(steal("x")) == [stolen("x", "waiting")]
    # The transfer cannot be called back: d stays until it ends, then goes.
    assert states(ws) == {"busy": "executing", "d": "flight"}
    assert ws.handle(got(A, d=1)) == [drop("d")]
    assert states(ws) == {"busy": "executing"}


def test_stolen_task_sent_back_before_its_dependency_lands() -> None:
    ws = make_ws()
    ws.handle(compute("busy"))
    ws.handle(compute("x", {"d": (A,)}, nbytes={"d": 1}))
    ws.handle(steal("x"))
    # The scheduler changes its mind: the value in flight is kept for x after all.
    assert ws.handle(compute("x", {"d": (A,)}, nbytes={"d": 1})) == []
    assert ws.handle(got(A, d=1)) == [add_keys(d=1)]
    assert ws.handle(ok("busy")) == [finished("busy"), execute("x", "d")]


def test_steal_keeps_a_dependency_another_task_needs() -> None:
    ws = make_ws()
    ws.handle(compute("busy"))
    ws.handle(compute("x", {"d": (A,)}), compute("y", {"d": (A,)}))
    assert ws.handle(steal("x")) == [stolen("x", "waiting")]
    assert states(ws) == {"busy": "executing", "d": "flight", "y": "waiting"}
    assert ws.handle(got(A, d=1)) == [add_keys(d=1)]
    assert ws.handle(ok("busy")) == [finished("busy"), execute("y", "d")]


def test_steal_a_ready_task() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("r"), compute("s"))
    assert ws.handle(steal("r")) == [stolen("r", "ready")]
    assert "r" not in ws.tasks and ws.ready_count == 1
    assert ws.handle(ok("busy")) == [finished("busy"), execute("s")]


def test_steal_a_ready_task_with_dependencies_in_memory() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("r", {"d": (A,)}, nbytes={"d": 1}))
    ws.handle(got(A, d=1))
    assert states(ws)["r"] == "ready"
    # d was reported (AddKeys): a replica the scheduler knows of, kept until it frees it.
    assert ws.handle(steal("r")) == [stolen("r", "ready")]
    assert states(ws) == {"busy": "executing", "d": "memory"}
    assert ws.handle(free("d")) == [drop("d")]


def test_steal_a_constrained_task() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    ws.handle(compute("g1", resources=GPU), compute("g2", resources=GPU))
    assert ws.handle(steal("g2")) == [stolen("g2", "constrained")]
    assert "g2" not in ws.tasks and ws.constrained_count == 0
    assert ws.available_resources == {"GPU": 0.0}  # g1 still holds it
    assert ws.handle(ok("g1")) == [finished("g1")]
    assert ws.available_resources == {"GPU": 1.0}


def test_steal_an_executing_task_changes_nothing() -> None:
    ws = make_ws(resources={"GPU": 1})
    ws.handle(compute("x", resources=GPU))
    assert ws.handle(steal("x")) == [stolen("x", "executing")]
    assert states(ws) == {"x": "executing"}
    assert ws.available_resources == {"GPU": 0.0}
    assert ws.handle(ok("x")) == [finished("x")]
    assert ws.available_resources == {"GPU": 1.0}


def test_steal_an_executing_task_that_then_fails() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    ws.handle(steal("x"))
    out = ws.handle(err("x"))
    assert len(out) == 1 and out[0].msg.key == "x"  # type: ignore[attr-defined]
    assert states(ws) == {"x": "error"}


def test_steal_finished_failed_and_unknown_keys() -> None:
    ws = make_ws()
    ws.handle(compute("m"), ok("m"), compute("e"), err("e"))
    assert ws.handle(steal("m")) == [stolen("m", "memory")]
    assert ws.handle(steal("e")) == [stolen("e", "error")]
    assert ws.handle(steal("nope")) == [stolen("nope", None)]
    assert states(ws) == {"m": "memory", "e": "error"}
    # Stolen twice: the second request finds nothing.
    ws.handle(compute("busy"), compute("r"))
    ws.handle(steal("r"))
    assert ws.handle(steal("r")) == [stolen("r", None)]


def test_steal_a_dependency_being_fetched_changes_nothing() -> None:
    ws = make_ws()
    ws.handle(compute("x", {"d": (A,)}), compute("y", {"e": (A,)}))
    assert ws.handle(steal("d")) == [stolen("d", "flight")]
    assert ws.handle(steal("e")) == [stolen("e", "fetch")]
    assert states(ws) == {"x": "waiting", "d": "flight", "y": "waiting", "e": "fetch"}


def test_steal_a_task_the_scheduler_no_longer_assigns_here() -> None:
    ws = make_ws()
    ws.handle(compute("busy"))
    # a is freed but still computed here, for b that needs it.
    ws.handle(compute("a"), compute("b", {"a": (B,)}))
    ws.handle(free("a"))
    assert states(ws)["a"] == "ready"
    assert ws.handle(steal("a")) == [stolen("a", "ready")]
    assert states(ws)["a"] == "ready"
    assert not ws.tasks["a"].assigned


def test_steal_a_task_a_local_task_waits_for() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("a"), compute("b", {"a": (B,)}, priority=(1,)))
    assert states(ws) == {"busy": "executing", "a": "ready", "b": "waiting"}
    # b cannot get a here any more: it goes back to the scheduler too.
    assert ws.handle(steal("a")) == [stolen("a", "ready"), reschedule("b")]
    assert states(ws) == {"busy": "executing"}


def test_steal_then_compute_elsewhere_then_fetch() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("x"))
    ws.handle(steal("x"))
    # x ran on B; a task here now needs it.
    assert ws.handle(compute("y", {"x": (B,)})) == [gather(B, "x")]
    assert ws.handle(got(B, x=3)) == [add_keys(x=3)]


def test_steal_is_in_the_story() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("r"))
    ws.handle(steal("r"))
    story = ws.story("r")
    assert ("r", "steal-request", "", 0.0) in story
    assert story[-2:] == [
        ("r", "ready", "released", "", 0.0),
        ("r", "released", "forgotten", "", 0.0),
    ]
