"""Abstract resources: the constrained queue, holding and giving back, float amounts."""

from __future__ import annotations

import pytest
from ws_builders import (
    A,
    add_keys,
    compute,
    drop,
    err,
    execute,
    failed,
    finished,
    free,
    got,
    make_ws,
    ok,
    reschedule,
    scattered,
    states,
)

from shoal.worker.state import InvariantError, RescheduleTask, validate
from shoal.worker.state.resources import ResourcePool, normalize

GPU = {"GPU": 1.0}


def test_two_gpu_tasks_on_one_gpu_run_one_at_a_time() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    assert ws.handle(compute("g1", resources=GPU)) == [execute("g1")]
    assert ws.available_resources == {"GPU": 0.0}
    # A thread is free, but the GPU is not.
    assert ws.handle(compute("g2", resources=GPU)) == []
    assert states(ws) == {"g1": "executing", "g2": "constrained"}
    assert ws.constrained_count == 1 and ws.ready_count == 0
    # A task without resources takes the free thread meanwhile.
    assert ws.handle(compute("plain")) == [execute("plain")]
    assert ws.executing_count == 2
    assert ws.handle(ok("plain")) == [finished("plain")]
    assert states(ws)["g2"] == "constrained"
    # g1 gives the GPU back: g2 runs.
    assert ws.handle(ok("g1")) == [finished("g1"), execute("g2")]
    assert ws.available_resources == {"GPU": 0.0}
    assert ws.handle(ok("g2")) == [finished("g2")]
    assert ws.available_resources == ws.total_resources == {"GPU": 1.0}


def test_constrained_tasks_do_not_block_plain_ones() -> None:
    ws = make_ws(nthreads=1, resources={"GPU": 1})
    ws.handle(compute("busy"))
    ws.handle(compute("g", resources=GPU, priority=(0,)), compute("plain", priority=(1,)))
    assert states(ws) == {"busy": "executing", "g": "constrained", "plain": "ready"}
    # The constrained queue is looked at first: g (it fits) takes the thread...
    assert ws.handle(ok("busy")) == [finished("busy"), execute("g")]
    # ... and a plain task is not held back by constrained tasks that do not fit.
    ws.handle(compute("g2", resources=GPU))
    assert ws.handle(ok("g")) == [finished("g"), execute("g2")]
    assert ws.handle(ok("g2")) == [finished("g2"), execute("plain")]


def test_a_waiting_constrained_task_leaves_the_thread_to_ready_ones() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    ws.handle(compute("g1", resources=GPU), compute("g2", resources=GPU, priority=(-5,)))
    assert ws.handle(compute("p1"), compute("p2")) == [execute("p1")]
    assert ws.handle(ok("p1")) == [finished("p1"), execute("p2")]
    assert states(ws)["g2"] == "constrained"


def test_priorities_inside_the_constrained_queue() -> None:
    ws = make_ws(nthreads=4, resources={"GPU": 1})
    ws.handle(compute("first", resources=GPU))
    ws.handle(
        *(compute(k, resources=GPU, priority=(p,)) for k, p in [("c", 3), ("a", 1), ("b", 2)]),
        compute("a2", resources=GPU, priority=(1,)),
    )
    out = []
    for key in ("first", "a", "a2", "b"):
        out += ws.handle(ok(key))
    # Most urgent first; ties in arrival order.
    assert [i for i in out if hasattr(i, "run_spec")] == [
        execute("a"),
        execute("a2"),
        execute("b"),
        execute("c"),
    ]


def test_resources_given_back_after_success_failure_free_and_reschedule() -> None:
    ws = make_ws(nthreads=1, resources={"GPU": 1})
    ws.handle(compute("a", resources=GPU), compute("b", resources=GPU))
    # Success.
    assert ws.handle(ok("a")) == [finished("a"), execute("b")]
    # Failure.
    ws.handle(compute("c", resources=GPU))
    assert ws.handle(err("b")) == [failed("b"), execute("c")]
    # FreeKeys of an executing task: the run goes on and holds the GPU until it ends.
    ws.handle(compute("d", resources=GPU))
    assert ws.handle(free("c")) == []
    assert ws.available_resources == {"GPU": 0.0}
    assert states(ws)["d"] == "constrained"
    assert ws.handle(ok("c")) == [drop("c"), execute("d")]
    # The task asks to be rescheduled.
    ws.handle(compute("e", resources=GPU))
    assert ws.handle(RescheduleTask(key="d")) == [reschedule("d"), execute("e")]
    assert ws.handle(free("e")) == []
    assert ws.handle(err("e")) == []  # freed meanwhile: not reported
    assert ws.available_resources == {"GPU": 1.0}
    assert states(ws) == {"a": "memory", "b": "error"}


def test_free_a_constrained_task() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    ws.handle(compute("g1", resources=GPU), compute("g2", resources=GPU))
    assert ws.handle(free("g2")) == []
    assert "g2" not in ws.tasks and ws.constrained_count == 0
    assert ws.handle(ok("g1")) == [finished("g1")]


def test_constrained_after_its_dependencies_arrive() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    ws.handle(compute("g", {"d": (A,)}, nbytes={"d": 5}, resources=GPU))
    assert states(ws) == {"g": "waiting", "d": "flight"}
    assert ws.handle(got(A, d=5)) == [add_keys(d=5), execute("g", "d")]
    story = [e[1:3] for e in ws.story("g") if len(e) == 5]
    assert story == [
        ("released", "waiting"),
        ("waiting", "constrained"),
        ("constrained", "executing"),
    ]


def test_several_resources_must_all_fit() -> None:
    ws = make_ws(nthreads=3, resources={"GPU": 2, "MEM": 10e9})
    ws.handle(compute("big", resources={"GPU": 1, "MEM": 8e9}))
    # One GPU is free, but not enough memory.
    assert ws.handle(compute("more", resources={"GPU": 1, "MEM": 4e9})) == []
    assert ws.available_resources == {"GPU": 1.0, "MEM": 2e9}
    assert ws.handle(ok("big")) == [finished("big"), execute("more")]
    assert ws.available_resources == {"GPU": 1.0, "MEM": 6e9}


def test_more_than_the_worker_has_waits_and_holds_back_constrained_only() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    ws.handle(compute("huge", resources={"GPU": 2}, priority=(0,)))
    ws.handle(compute("tpu", resources={"TPU": 1}, priority=(0,)))
    assert ws.handle(compute("g", resources=GPU, priority=(1,))) == []
    assert ws.handle(compute("plain", priority=(2,))) == [execute("plain")]
    assert states(ws) == {
        "huge": "constrained",
        "tpu": "constrained",
        "g": "constrained",
        "plain": "executing",
    }
    # The scheduler takes the impossible ones away: the next one runs.
    assert ws.handle(free("huge", "tpu")) == [execute("g")]


def test_zero_and_negative_amounts_are_no_restriction() -> None:
    ws = make_ws(nthreads=1, resources={"GPU": 1})
    ws.handle(compute("busy", resources=GPU))
    ws.handle(compute("z", resources={"GPU": 0, "X": -1}))
    assert states(ws)["z"] == "ready"
    assert ws.tasks["z"].resources is None
    assert normalize({"GPU": 0.5, "X": 0}) == {"GPU": 0.5}


def test_fractional_amounts_add_up_without_rounding_surprises() -> None:
    ws = make_ws(nthreads=4, resources={"GPU": 0.3})
    out = ws.handle(*(compute(f"t{i}", resources={"GPU": 0.1}) for i in range(4)))
    # 0.3 - 0.1 - 0.1 is a hair under 0.1: the third task still fits, the fourth not.
    assert out == [execute("t0"), execute("t1"), execute("t2")]
    assert states(ws)["t3"] == "constrained"
    for i in range(4):
        ws.handle(ok(f"t{i}"))
    assert ws.available_resources == {"GPU": 0.3}  # exactly, once nothing holds it


def test_a_repeated_compute_task_does_not_change_what_a_run_holds() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 2})
    ws.handle(compute("g", resources=GPU))
    assert ws.handle(compute("g", resources={"GPU": 2})) == []
    assert ws.available_resources == {"GPU": 1.0}
    ws.handle(compute("q", resources=GPU), compute("q", resources={"GPU": 5}))
    assert ws.tasks["q"].resources == GPU
    ws.handle(ok("g"), ok("q"))
    assert ws.available_resources == {"GPU": 2.0}


def test_scatter_over_a_constrained_task() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    ws.handle(compute("g1", resources=GPU), compute("g2", resources=GPU))
    assert ws.handle(scattered(g2=4)) == []
    assert states(ws) == {"g1": "executing", "g2": "memory"}
    assert ws.constrained_count == 0


def test_snapshot_and_repr() -> None:
    ws = make_ws(nthreads=1, resources={"GPU": 1})
    ws.handle(compute("g1", resources=GPU), compute("g2", resources=GPU))
    snap = ws.snapshot()
    assert snap["constrained"] == 1
    assert snap["states"] == {"executing": 1, "constrained": 1}
    assert snap["available_resources"] == {"GPU": 0.0}
    assert "constrained=1" in repr(ws)
    assert "GPU" in repr(ws.resource_pool)


def test_invariants_catch_wrong_bookkeeping() -> None:
    ws = make_ws(nthreads=2, resources={"GPU": 1})
    ws.handle(compute("g1", resources=GPU))
    ws.resource_pool.available["GPU"] = 0.5
    with pytest.raises(InvariantError, match="available 'GPU'"):
        validate(ws)
    ws.resource_pool.available["GPU"] = 1.0
    ws.handle(ok("g1"))
    validate(ws)
    ws.handle(compute("g2", resources=GPU))
    ws.resource_pool.release(GPU)  # as if g2 gave back the GPU while running
    with pytest.raises(InvariantError, match="holder count"):
        validate(ws)


def test_resource_pool_alone() -> None:
    pool = ResourcePool({"GPU": 2})
    assert pool.fits({"GPU": 2}) and not pool.fits({"GPU": 2.5}) and not pool.fits({"X": 1})
    pool.acquire({"GPU": 1.5})
    assert pool.available == {"GPU": 0.5} and pool.holders("GPU") == 1
    assert pool.close_to("GPU", 0.5)
    pool.release({"GPU": 1.5})
    assert pool.available == pool.total == {"GPU": 2.0}
