"""Fetching dependencies from peers: batching, throttling, retries, giving up."""

from __future__ import annotations

from ws_builders import (
    SELF,
    A,
    B,
    C,
    add_keys,
    compute,
    drop,
    execute,
    finished,
    gather,
    got,
    lacked,
    make_ws,
    missing_data,
    ok,
    reschedule,
    states,
    unreachable,
)


def test_dependencies_on_two_peers() -> None:
    ws = make_ws()
    ev = compute("z", {"a1": (A,), "a2": (A,), "b": (B,)}, nbytes={"a1": 1, "a2": 2, "b": 3})
    assert ws.handle(ev) == [gather(A, "a1", "a2", nbytes=3), gather(B, "b", nbytes=3)]
    assert states(ws) == {"z": "waiting", "a1": "flight", "a2": "flight", "b": "flight"}
    assert ws.snapshot()["in_flight_bytes"] == 6
    assert ws.handle(got(A, a1=10, a2=20)) == [add_keys(a1=10, a2=20)]
    assert states(ws)["z"] == "waiting"
    assert ws.handle(got(B, b=30)) == [add_keys(b=30), execute("z", "a1", "a2", "b")]
    assert ws.handle(ok("z")) == [finished("z")]
    # The dependencies stay until the scheduler frees them (it was told with AddKeys).
    assert states(ws) == {"z": "memory", "a1": "memory", "a2": "memory", "b": "memory"}
    assert ws.nbytes_in_memory == 70


def test_local_dependency_in_memory() -> None:
    ws = make_ws()
    ws.handle(compute("x"), ok("x"))
    # The scheduler lists this worker (and another) as holders: nothing to fetch.
    assert ws.handle(compute("y", {"x": (SELF, A)})) == [execute("y", "x")]


def test_shared_dependency_is_fetched_once() -> None:
    ws = make_ws(nthreads=2)
    assert ws.handle(compute("y1", {"d": (A,)}), compute("y2", {"d": (A, B)})) == [gather(A, "d")]
    assert ws.handle(got(A, d=5)) == [add_keys(d=5), execute("y1", "d"), execute("y2", "d")]


def test_dependency_computed_here() -> None:
    ws = make_ws()
    ws.handle(compute("x"))
    # y needs x, which is executing here: wait for it rather than fetch it.
    assert ws.handle(compute("y", {"x": (A,)})) == []
    assert ws.handle(ok("x")) == [finished("x"), execute("y", "x")]


def test_peer_lacks_key_retry_from_other_holder() -> None:
    ws = make_ws()
    assert ws.handle(compute("y", {"d": (A, B)})) == [gather(A, "d")]
    assert ws.handle(lacked(A, "d")) == [gather(B, "d")]
    assert ws.tasks["d"].who_has == {B}
    assert ws.handle(got(B, d=5)) == [add_keys(d=5), execute("y", "d")]


def test_network_failure_retry_from_other_holder() -> None:
    ws = make_ws()
    assert ws.handle(compute("y", {"d": (A, B)}), compute("w", {"e": (A,)})) == [gather(A, "d")]
    # A is unreachable: forget it everywhere, including for e which was never asked.
    assert ws.handle(unreachable(A, "d")) == [
        missing_data("e", A),
        reschedule("w"),
        gather(B, "d"),
    ]
    assert "w" not in ws.tasks
    assert "e" not in ws.tasks
    assert A not in ws.fetcher.has_what
    assert ws.handle(got(B, d=5)) == [add_keys(d=5), execute("y", "d")]


def test_no_holder_left() -> None:
    ws = make_ws(nthreads=2)
    ws.handle(compute("y1", {"d": (A, B)}), compute("y2", {"d": (A,), "e": (C,)}))
    ws.handle(lacked(A, "d"))
    assert ws.handle(unreachable(B, "d")) == [
        missing_data("d", A),
        missing_data("d", B),
        reschedule("y1"),
        reschedule("y2"),
    ]
    # e, in flight for y2 only, is discarded when it arrives.
    assert states(ws) == {"e": "flight"}
    assert ws.handle(got(C, e=1)) == [drop("e")]
    assert ws.tasks == {}


def test_gather_dep_missing_with_partial_data() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d1": (A,), "d2": (A, B)}))
    assert ws.handle(lacked(A, "d2", d1=4)) == [add_keys(d1=4), gather(B, "d2")]


def test_scheduler_says_we_hold_a_key_we_lack() -> None:
    ws = make_ws()
    assert ws.handle(compute("y", {"d": (SELF,)})) == [
        missing_data("d", SELF),
        reschedule("y"),
    ]
    assert ws.tasks == {}


def test_transfer_batching_by_bytes() -> None:
    ws = make_ws(transfer_limit_bytes=100)
    ev = compute(
        "y",
        {"a": (A,), "b": (A,), "c": (A,), "big": (A,)},
        nbytes={"a": 40, "b": 40, "c": 40, "big": 500},
        priority=(0,),
    )
    # One transfer per peer at a time: the first batch fits 100 bytes.
    assert ws.handle(ev) == [gather(A, "a", "b", nbytes=80)]
    assert ws.handle(got(A, a=40, b=40)) == [add_keys(a=40, b=40), gather(A, "c", nbytes=40)]
    # A key bigger than the limit still goes, alone.
    assert ws.handle(got(A, c=40)) == [add_keys(c=40), gather(A, "big", nbytes=500)]


def test_fetch_order_follows_priority() -> None:
    ws = make_ws(transfer_limit_bytes=1)
    ws.handle(compute("first", {"x": (A,)}, priority=(5,)))
    ws.handle(
        compute("late", {"l": (A,)}, priority=(9,)),
        compute("soon", {"s": (A,)}, priority=(1,)),
    )
    assert ws.handle(got(A, x=1)) == [add_keys(x=1), gather(A, "s"), execute("first", "x")]
    assert ws.handle(got(A, s=1)) == [add_keys(s=1), gather(A, "l")]


def test_max_concurrent_fetches() -> None:
    ws = make_ws(max_concurrent_fetches=2)
    out = ws.handle(compute("y", {"a": (A,), "b": (B,), "c": (C,)}))
    assert out == [gather(A, "a"), gather(B, "b")]
    assert ws.handle(got(B, b=1)) == [add_keys(b=1), gather(C, "c")]


def test_prefers_holder_with_fewest_transfers() -> None:
    ws = make_ws(max_concurrent_fetches_per_worker=2, transfer_limit_bytes=1)
    assert ws.handle(compute("y1", {"a": (A,)})) == [gather(A, "a")]
    # d is on A and B; A already has a transfer in flight, so B is asked.
    assert ws.handle(compute("y2", {"d": (A, B)})) == [gather(B, "d")]
    # With both at one transfer, ties go by address.
    assert ws.handle(compute("y3", {"e": (B, A)})) == [gather(A, "e")]


def test_per_worker_concurrency() -> None:
    ws = make_ws(max_concurrent_fetches_per_worker=2, transfer_limit_bytes=1)
    assert ws.handle(compute("y", {"a": (A,), "b": (A,), "c": (A,)})) == [
        gather(A, "a"),
        gather(A, "b"),
    ]
    assert ws.handle(got(A, b=1)) == [add_keys(b=1), gather(A, "c")]
    assert ws.handle(got(A, a=1)) == [add_keys(a=1)]


def test_new_holder_for_a_missing_replica() -> None:
    from shoal.worker.state import AcquireReplicasEvent

    ws = make_ws()
    ws.handle(AcquireReplicasEvent(who_has={"r": (A,)}, nbytes={"r": 5}))
    assert ws.handle(lacked(A, "r")) == [missing_data("r", A)]
    assert states(ws) == {"r": "missing"}
    # A compute-task names a holder: fetch it (for both purposes).
    assert ws.handle(compute("y", {"r": (B,)})) == [gather(B, "r", nbytes=5)]
    assert ws.handle(got(B, r=5)) == [add_keys(r=5), execute("y", "r")]


def test_stale_gather_answers_are_ignored() -> None:
    ws = make_ws()
    ws.handle(compute("y", {"d": (A,)}))
    # An answer from a peer we did not ask: its values are dropped.
    assert ws.handle(got(B, zz=3)) == [drop("zz")]
    assert ws.handle(unreachable(C, "d")) == []
    assert states(ws) == {"y": "waiting", "d": "flight"}


def test_peer_refuses_key_dependents_fail_without_refetch() -> None:
    from shoal.protocol.messages import TaskFailed
    from shoal.worker.state import GatherDepFailed, SendToScheduler

    ws = make_ws(nthreads=2)
    assert ws.handle(compute("y", {"d": (A, B)}), compute("z", {"d": (A, B)})) == [gather(A, "d")]
    refused = GatherDepFailed(
        worker=A,
        keys=("d",),
        exception=None,
        traceback=None,
        exception_text="SerializeError: can't pickle d",
        traceback_text="",
        now=5.0,
    )
    out = ws.handle(refused)
    assert out == [
        SendToScheduler(
            TaskFailed("y", None, None, "SerializeError: can't pickle d", "", 5.0, 5.0)
        ),
        SendToScheduler(
            TaskFailed("z", None, None, "SerializeError: can't pickle d", "", 5.0, 5.0)
        ),
    ]
    assert ws.tasks == {}  # nothing is refetched from B: it would fail the same way
