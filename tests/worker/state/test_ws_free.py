"""FreeKeys in every state, including results that arrive after the key was freed."""

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
    got,
    lacked,
    make_ws,
    ok,
    states,
    unreachable,
)


def test_free_waiting_cancels_and_releases_fetches() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d": (A,), "e": (A,)}, nbytes={"d": 1, "e": 1}))
    ws.handle(compute("busy"))
    ws.handle(compute("w", {"f": (A,)}))  # f waits behind the transfer in flight
    assert states(ws)["f"] == "fetch"
    assert ws.handle(free("w")) == []
    assert "w" not in ws.tasks
    assert "f" not in ws.tasks
    # y is freed while its dependencies are in flight: discarded when they arrive.
    assert ws.handle(free("y")) == []
    assert states(ws) == {"d": "flight", "e": "flight", "busy": "executing"}
    assert ws.handle(got(A, d=1, e=1)) == [drop("d", "e")]
    assert states(ws) == {"busy": "executing"}


def test_free_ready() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("r"))
    assert ws.handle(free("r")) == []
    assert ws.ready_count == 0
    assert ws.handle(ok("busy")) == [finished("busy")]


def test_free_executing_discards_the_result() -> None:
    ws = make_ws()
    ws.handle(compute("x"), compute("next"))
    assert ws.handle(free("x")) == []
    assert states(ws)["x"] == "executing"
    assert ws.executing_count == 1  # the thread is still busy
    assert ws.handle(ok("x")) == [drop("x"), execute("next")]
    assert "x" not in ws.tasks


def test_free_executing_then_failure_is_not_reported() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    ws.handle(free("x"))
    assert ws.handle(err("x")) == []
    assert ws.tasks == {}


def test_free_executing_then_compute_again_resumes() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    ws.handle(free("x"))
    assert ws.handle(compute("x")) == []
    assert ws.handle(ok("x")) == [finished("x")]


def test_free_executing_keeps_its_dependencies_until_done() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d": (A,)}))
    ws.handle(got(A, d=3))
    ws.handle(free("y", "d"))
    # The run may still read d: it stays until y ends.
    assert states(ws) == {"y": "executing", "d": "memory"}
    assert ws.handle(ok("y")) == [drop("y", "d")]
    assert ws.tasks == {}


def test_free_memory_drops_data() -> None:
    ws = make_ws()
    ws.handle(compute("x"), ok("x"))
    assert ws.handle(free("x")) == [drop("x")]
    assert ws.tasks == {}
    assert ws.nbytes_in_memory == 0


def test_free_error() -> None:
    ws = make_ws()
    ws.handle(compute("x"), err("x"))
    assert ws.handle(free("x")) == []
    assert ws.tasks == {}


def test_free_flight_dependency_then_needed_again() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d": (A,)}))
    ws.handle(free("y"))
    assert states(ws) == {"d": "flight"}
    # A new task needs d while it is still in flight: it is kept when it arrives.
    assert ws.handle(compute("z", {"d": (A,)})) == []
    assert ws.handle(got(A, d=2)) == [add_keys(d=2), execute("z", "d")]


def test_free_flight_then_transfer_fails() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d": (A, B)}))
    ws.handle(free("y"))
    assert ws.handle(lacked(A, "d")) == []
    assert ws.tasks == {}
    ws.handle(compute("z", {"e": (A,)}))
    ws.handle(free("z"))
    assert ws.handle(unreachable(A, "e")) == []
    assert ws.tasks == {}


def test_free_dependency_still_needed_here_is_kept() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("y", {"d": (A,)}))
    ws.handle(got(A, d=3))
    assert states(ws)["y"] == "ready"
    # A race: the scheduler frees d, but y (ready here) still reads it.
    assert ws.handle(free("d")) == []
    assert states(ws)["d"] == "memory"
    assert ws.handle(ok("busy")) == [finished("busy"), execute("y", "d")]
    # Once y is done nobody needs d: it goes.
    assert ws.handle(ok("y")) == [finished("y"), drop("d")]


def test_free_unknown_keys_is_harmless() -> None:
    ws = make_ws()
    assert ws.handle(free("nope", ("x", 1))) == []


def test_free_fetch_replica() -> None:
    from shoal.worker.state import AcquireReplicasEvent

    ws = make_ws()
    ws.handle(compute("y", {"d": (A,)}))
    ws.handle(AcquireReplicasEvent(who_has={"r": (A,)}, nbytes={}))
    assert states(ws)["r"] == "fetch"
    assert ws.handle(free("r")) == []
    assert "r" not in ws.tasks
    assert ws.handle(got(A, d=1)) == [add_keys(d=1), execute("y", "d")]
    assert ws.fetcher.data_needed == {}
