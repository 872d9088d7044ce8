"""AcquireReplicas and DataUpdated (scatter)."""

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
    scattered,
    states,
)

from shoal._types import Key
from shoal.protocol.messages import TaskFinished
from shoal.worker.state import AcquireReplicasEvent, RescheduleTask, SendToScheduler


def acquire(who_has: dict[Key, tuple[str, ...]], **nbytes: int) -> AcquireReplicasEvent:
    sizes: dict[Key, int] = {k: n for k, n in nbytes.items()}
    return AcquireReplicasEvent(who_has=who_has, nbytes=sizes)


def test_acquire_replicas() -> None:
    ws = make_ws()
    assert ws.handle(acquire({"r1": (A,), "r2": (A,), "r3": (B,)}, r1=1, r2=2, r3=3)) == [
        gather(A, "r1", "r2", nbytes=3),
        gather(B, "r3", nbytes=3),
    ]
    assert ws.handle(got(A, r1=1, r2=2)) == [add_keys(r1=1, r2=2)]
    assert ws.handle(got(B, r3=3)) == [add_keys(r3=3)]
    assert states(ws) == {"r1": "memory", "r2": "memory", "r3": "memory"}
    assert ws.handle(free("r1", "r2", "r3")) == [drop("r1", "r2", "r3")]


def test_acquire_replica_already_here() -> None:
    ws = make_ws()
    ws.handle(compute("x"), ok("x"))
    assert ws.handle(acquire({"x": (A,)})) == [add_keys(x=10)]


def test_acquire_replica_being_computed_or_erred() -> None:
    ws = make_ws()
    ws.handle(compute("x"), compute("e"))
    assert ws.handle(acquire({"x": (A,), "e": (A,)})) == []
    assert ws.handle(ok("x")) == [finished("x"), execute("e")]
    ws.handle(err("e"))
    assert ws.handle(acquire({"e": (A,)})) == []
    assert states(ws) == {"x": "memory", "e": "error"}


def test_acquire_replica_that_is_also_a_dependency() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d": (A,)}))
    assert ws.handle(acquire({"d": (A, B)})) == []
    ws.handle(free("y"))
    # Still wanted as a replica: kept when it arrives.
    assert ws.handle(got(A, d=4)) == [add_keys(d=4)]


def test_data_updated_new_keys() -> None:
    ws = make_ws()
    assert ws.handle(scattered(s1=5, s2=6)) == []
    assert states(ws) == {"s1": "memory", "s2": "memory"}
    assert ws.nbytes_in_memory == 11
    # Overwritten with a new value.
    assert ws.handle(scattered(s1=7)) == []
    assert ws.nbytes_in_memory == 13
    assert ws.handle(compute("y", {"s1": (), "s2": ()})) == [execute("y", "s1", "s2")]


def test_data_updated_satisfies_a_waiting_dependency() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d": (A,), "e": (A,)}))
    ws.handle(compute("z", {"f": (A,)}))
    assert states(ws)["f"] == "fetch"
    # f arrives by scatter: it leaves the fetch queue, z runs.
    assert ws.handle(scattered(f=1)) == [execute("z", "f")]
    # d arrives by scatter while in flight: the transfer's copy is ignored.
    assert ws.handle(scattered(d=2)) == []
    assert states(ws)["d"] == "memory"
    assert ws.handle(got(A, d=2, e=3)) == [add_keys(e=3)]
    assert states(ws)["y"] == "ready"


def test_data_updated_for_waiting_and_ready_tasks() -> None:
    ws = make_ws()
    ws.handle(compute("busy"), compute("r"), compute("w", {"d": (A,)}))
    assert ws.handle(scattered(r=1, w=2)) == []
    assert states(ws) == {"busy": "executing", "r": "memory", "w": "memory", "d": "flight"}
    assert ws.handle(got(A, d=1)) == [drop("d")]
    # Computed keys put here directly are answered from memory.
    assert ws.handle(compute("r")) == [
        SendToScheduler(TaskFinished(key="r", nbytes=1, type_name="", start=0.0, stop=0.0))
    ]


def test_data_updated_while_executing() -> None:
    ws = make_ws()
    ws.handle(compute("x"), compute("y"))
    assert ws.handle(scattered(x=3, y=4)) == []
    assert states(ws) == {"x": "executing", "y": "memory"}
    # The run fails, but a value was put here meanwhile: keep that one.
    assert ws.handle(err("x")) == [
        SendToScheduler(TaskFinished(key="x", nbytes=3, type_name="", start=1.0, stop=2.0))
    ]
    assert ws.nbytes_in_memory == 7


def test_data_updated_for_an_erred_key() -> None:
    ws = make_ws()
    ws.handle(compute("x"), err("x"))
    assert ws.handle(scattered(x=3)) == []
    assert states(ws) == {"x": "memory"}


def test_data_updated_never_drops_a_value_it_just_stored() -> None:
    ws = make_ws()
    ws.handle(compute("busy"))
    ws.handle(AcquireReplicasEvent(who_has={"d": (A,)}, nbytes={}), got(A, d=1))
    ws.handle(compute("y", {"d": (A,), "e": (A,)}))
    ws.handle(free("d"))  # only y needs d now
    # y arrives by scatter, so d loses its last user, but d was scattered too.
    assert ws.handle(scattered(y=1, d=2)) == []
    assert states(ws) == {"busy": "executing", "d": "memory", "y": "memory", "e": "flight"}


def test_scattered_value_over_a_freed_run_is_dropped_with_it() -> None:
    ws = make_ws()
    ws.handle(compute("x"), scattered(x=3), free("x"))
    assert ws.handle(err("x")) == [drop("x")]
    ws.handle(compute("y"), scattered(y=3), free("y"))
    assert ws.handle(RescheduleTask(key="y")) == [drop("y")]
    ws.handle(compute("z"), scattered(z=3))
    assert ws.handle(RescheduleTask(key="z")) == [
        SendToScheduler(TaskFinished(key="z", nbytes=3, type_name="", start=0.0, stop=0.0))
    ]
    assert ws.tasks.keys() == {"z"}


def test_erred_dependency_fetched_from_a_holder() -> None:
    ws = make_ws()
    ws.handle(compute("x"), err("x"))
    # The scheduler now says x is in memory on A (recomputed there): fetch it.
    assert ws.handle(compute("y", {"x": (A,)})) == [gather(A, "x")]
    assert ws.handle(got(A, x=2)) == [add_keys(x=2), execute("y", "x")]
