"""Short tasks queued on busy threads (``WorkerState.prefetch``)."""

from __future__ import annotations

from ws_builders import compute, execute, finished, make_ws, ok, states

from shoal.worker.state import PauseEvent, SendToScheduler, UnpauseEvent
from shoal.worker.state.model import SHORT_TASK

TINY = SHORT_TASK / 10


def test_short_tasks_queue_on_the_thread_up_to_the_limit() -> None:
    ws = make_ws(nthreads=1, prefetch=3)
    keys = [f"t{i}" for i in range(6)]
    out = ws.handle(*(compute(k, priority=(i,), duration=TINY) for i, k in enumerate(keys)))
    assert out == [execute(k) for k in keys[:4]]  # one running, three waiting on the thread
    assert ws.executing_count == 4
    assert states(ws)["t4"] == states(ws)["t5"] == "ready"
    # each finished one makes room for the next, in priority order
    assert ws.handle(ok("t0")) == [finished("t0"), execute("t4")]
    assert ws.handle(ok("t1"), ok("t2")) == [finished("t1"), execute("t5"), finished("t2")]


def test_tasks_of_unknown_or_long_duration_wait_for_a_free_thread() -> None:
    for duration in (-1.0, SHORT_TASK, 2.0):
        ws = make_ws(nthreads=2, prefetch=8)
        out = ws.handle(*(compute(f"t{i}", duration=duration) for i in range(5)))
        assert out == [execute("t0"), execute("t1")], duration
        assert ws.ready_count == 3


def test_a_long_task_at_the_head_keeps_later_short_ones_behind_it() -> None:
    """Priority order holds: nothing jumps over the most urgent ready task; and nothing
    queues behind a long task (in ``ready`` it could still be stolen)."""
    ws = make_ws(nthreads=1, prefetch=8)
    out = ws.handle(
        compute("running", priority=(0,), duration=TINY),
        compute("long", priority=(1,), duration=5.0),
        compute("short", priority=(2,), duration=TINY),
    )
    assert out == [execute("running")]
    assert ws.handle(ok("running")) == [finished("running"), execute("long")]
    assert states(ws)["short"] == "ready"
    assert ws.handle(ok("long")) == [finished("long"), execute("short")]


def test_off_by_default() -> None:
    ws = make_ws(nthreads=1)
    out = ws.handle(*(compute(f"t{i}", duration=TINY) for i in range(3)))
    assert out == [execute("t0")]


def test_no_prefetch_while_tasks_wait_for_resources() -> None:
    ws = make_ws(nthreads=1, prefetch=8, resources={"GPU": 1})
    out = ws.handle(
        compute("gpu-a", resources={"GPU": 1}, priority=(0,)),
        compute("gpu-b", resources={"GPU": 1}, priority=(1,)),
        compute("short", priority=(2,), duration=TINY),
    )
    assert out == [execute("gpu-a")]
    assert states(ws) == {"gpu-a": "executing", "gpu-b": "constrained", "short": "ready"}


def test_a_paused_worker_queues_nothing_more() -> None:
    ws = make_ws(nthreads=1, prefetch=4)
    ws.handle(PauseEvent())
    assert [
        i for i in ws.handle(compute("a", duration=TINY)) if not isinstance(i, SendToScheduler)
    ] == []
    out = ws.handle(compute("b", duration=TINY), UnpauseEvent())
    assert [i for i in out if not isinstance(i, SendToScheduler)] == [execute("a"), execute("b")]
