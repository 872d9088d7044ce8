"""Computing tasks: the ready queue, threads, success and failure."""

from __future__ import annotations

import pytest
from ws_builders import (
    A,
    compute,
    drop,
    err,
    execute,
    failed,
    finished,
    free,
    make_ws,
    ok,
    reschedule,
    states,
)

from shoal.protocol.messages import ComputeTask, TaskFinished
from shoal.worker.state import (
    ComputeTaskEvent,
    ExecuteSuccess,
    RescheduleTask,
    SendToScheduler,
    WorkerState,
)


def test_no_dependencies_runs_and_reports() -> None:
    ws = make_ws()
    assert ws.handle(compute("x")) == [execute("x")]
    assert ws.executing_count == 1
    assert ws.handle(ok("x")) == [finished("x")]
    assert states(ws) == {"x": "memory"}
    assert ws.memory_keys() == {"x"}
    assert ws.nbytes_in_memory == 10
    assert ws.executing_count == 0


def test_a_result_in_memory_lets_go_of_its_run_spec_and_a_new_compute_brings_it() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    ws.handle(ok("x"))
    assert ws.tasks["x"].run_spec is None  # the collector has less to scan per result
    assert ws.handle(compute("x")) == [finished("x")]  # asked again: no need to run
    ws.handle(free("x"))
    assert ws.handle(compute("x")) == [execute("x")]  # computed again: the spec is back


def test_nthreads_limit_and_priority_order() -> None:
    ws = make_ws(nthreads=2)
    out = ws.handle(
        compute("low", priority=(5,)),
        compute("high", priority=(1,)),
        compute("mid", priority=(3,)),
        compute("mid2", priority=(3,)),
    )
    # The first two arrivals take the two threads at once (one event at a time).
    assert out == [execute("low"), execute("high")]
    assert ws.ready_count == 2
    # A thread frees up: the most urgent ready task goes; ties in arrival order.
    assert ws.handle(ok("low")) == [finished("low"), execute("mid")]
    assert ws.handle(ok("high")) == [finished("high"), execute("mid2")]
    assert ws.handle(ok("mid"), ok("mid2")) == [finished("mid"), finished("mid2")]
    assert ws.ready_count == 0


def test_ready_queue_orders_by_priority_when_threads_busy() -> None:
    ws = make_ws(nthreads=1)
    ws.handle(compute("busy"))
    ws.handle(*(compute(f"t{p}", priority=(p,)) for p in (3, 1, 2, 0)))
    out = []
    for key in ("busy", "t0", "t1", "t2"):
        out += ws.handle(ok(key))
    assert [i for i in out if hasattr(i, "run_spec")] == [
        execute("t0"),
        execute("t1"),
        execute("t2"),
        execute("t3"),
    ]


def test_failure_reports_task_failed() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    assert ws.handle(err("x")) == [failed("x")]
    assert states(ws) == {"x": "error"}
    # The same compute-task again: answered from what we know.
    assert ws.handle(compute("x")) == [failed("x")]


def test_compute_task_for_key_in_memory_reports_again() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    ws.handle(ok("x", nbytes=7))
    assert ws.handle(compute("x")) == [finished("x", nbytes=7)]
    assert states(ws) == {"x": "memory"}


def test_compute_task_for_executing_key_is_a_no_op() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    assert ws.handle(compute("x")) == []
    assert ws.handle(ok("x")) == [finished("x")]


def test_compute_task_for_waiting_or_ready_key_is_a_no_op() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("r"))
    assert ws.handle(compute("r")) == []
    assert ws.ready_count == 1
    ws.handle(compute("w", {"d": (A,)}))
    assert ws.handle(compute("w", {"d": (A,)})) == []
    assert states(ws)["w"] == "waiting"


def test_reschedule_requested_by_the_task() -> None:
    ws = make_ws()
    ws.handle(compute("x"), compute("y"))
    assert ws.handle(RescheduleTask(key="x")) == [reschedule("x"), execute("y")]
    assert "x" not in ws.tasks
    # A stale reschedule (not executing) is ignored.
    assert ws.handle(RescheduleTask(key="nope")) == []


def test_stale_execute_results() -> None:
    ws = make_ws()
    # A value for a key never run here is dropped from the store.
    assert ws.handle(ok("ghost")) == [drop("ghost")]
    assert ws.handle(err("ghost")) == []


def test_from_message() -> None:
    msg = ComputeTask(
        key=("x", 0), run_spec=None, who_has={"d": ("tcp://a",)}, nbytes={"d": 3}, priority=(1, 2)
    )
    ev = ComputeTaskEvent.from_message(msg, "sid", 12.5)
    assert ev == ComputeTaskEvent(
        key=("x", 0),
        run_spec=None,
        who_has={"d": ("tcp://a",)},
        nbytes={"d": 3},
        priority=(1, 2),
        resources=None,
        stimulus_id="sid",
        now=12.5,
    )


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WorkerState(address="x", nthreads=0)
    with pytest.raises(TypeError, match="cannot handle"):
        make_ws().handle(object())  # type: ignore[arg-type]


def test_a_small_value_travels_once_with_task_finished() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    value = b"pickled 3"
    done = ExecuteSuccess(key="x", nbytes=10, type_name="int", start=1.0, stop=2.0, value=value)
    assert ws.handle(done) == [
        SendToScheduler(
            TaskFinished(key="x", nbytes=10, type_name="int", start=1.0, stop=2.0, value=value)
        )
    ]
    assert ws.tasks["x"].wire_value is None  # not kept: the store has the value
    assert ws.handle(compute("x")) == [finished("x")]  # asked again: reported without it
