"""A large graph goes to the scheduler in pieces, in priority order, so that workers
start on the first piece while the client builds the rest (``client.graph-piece-tasks``).

A key that a later piece depends on (for a wanted key) is held by the client until the
piece that uses it last is sent; then the scheduler holds only what the client's futures
want, and a task no wanted key needs runs no more than with the graph sent whole.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import dask
import pytest
from dask._task_spec import Task, TaskRef
from test_collections import assert_cluster_empty, inc, total, wait_until

from shoal import Client, LocalCluster
from shoal.client.collections import _plan_pieces
from shoal.errors import SerializeError
from shoal.protocol.messages import UpdateGraph


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture
def cluster(tcp_cluster: LocalCluster) -> LocalCluster:
    """conftest's cluster: two 2-thread workers in this process, over TCP."""
    return tcp_cluster


@pytest.fixture
def c(cluster: LocalCluster, fresh_config: pytest.MonkeyPatch) -> Iterator[Client]:
    """A client that sends graphs in pieces of 8 tasks, and records what it sends."""
    fresh_config.setenv("SHOAL_CLIENT__GRAPH_PIECE_TASKS", "8")
    with Client(cluster) as client:
        sent: list[UpdateGraph] = []
        send = client._send

        def recording_send(*msgs: Any) -> None:
            sent.extend(m for m in msgs if isinstance(m, UpdateGraph))
            send(*msgs)

        client._send = recording_send  # type: ignore[method-assign]
        client.sent = sent  # type: ignore[attr-defined]
        yield client
    assert_cluster_empty(cluster)


def held(cluster: LocalCluster) -> list[Any]:
    """The keys the scheduler keeps in memory or for a client (the rest is lineage)."""
    assert cluster.scheduler is not None
    tasks = cluster.scheduler.state.tasks.values()
    return [ts.key for ts in tasks if ts.state == "memory" or ts.who_wants]


def tree(n: int) -> Any:
    layer = [dask.delayed(inc)(i) for i in range(n)]
    while len(layer) > 1:
        pairs = [dask.delayed(add)(a, b) for a, b in zip(layer[::2], layer[1::2])]
        layer = pairs + (layer[-1:] if len(layer) % 2 else [])
    return layer[0]


def test_a_large_graph_goes_in_pieces_and_the_scheduler_keeps_only_what_is_wanted(
    c: Client, cluster: LocalCluster
) -> None:
    root = tree(100)  # 199 tasks
    future = c.compute(root)
    assert future.result() == sum(range(1, 101))
    pieces = c.sent  # type: ignore[attr-defined]
    assert [len(p.tasks) for p in pieces] == [8] * 24 + [7]
    # every piece names the keys a later piece depends on; the last wants the root
    assert all(p.keys for p in pieces[:-1])
    assert pieces[-1].keys == (root.key,)
    assert wait_until(lambda: held(cluster) == [root.key]), held(cluster)[:10]


def test_every_key_wanted_in_pieces(c: Client) -> None:
    root = tree(40)
    dsk = dict(root.__dask_graph__())
    keys = list(dsk)
    futures = c.get(dsk, keys, sync=False)
    assert c.gather(futures) == list(dask.get(dsk, keys))
    sent = c.sent  # type: ignore[attr-defined]
    assert len(sent) == 10
    assert sorted(k for p in sent for k in p.keys) == sorted(keys)


def test_a_key_held_for_a_later_piece_stays_with_the_users_own_future(
    c: Client, cluster: LocalCluster
) -> None:
    (mine,) = c.get({"k": (inc, 1)}, ["k"], sync=False)
    assert mine.result() == 2
    # "k" comes first in the order; its dependents fill the next pieces, so the client
    # holds it while sending them, then lets go of that hold
    dsk: dict[Any, Any] = {"k": (inc, 1), "z": (total, *[("y", i) for i in range(20)])}
    dsk.update({("y", i): (add, "k", i) for i in range(20)})
    assert c.get(dsk, "z") == sum(2 + i for i in range(20))
    assert len(c.sent) > 2  # type: ignore[attr-defined]
    assert wait_until(lambda: held(cluster) == ["k"]), held(cluster)
    assert mine.result() == 2


def test_a_task_that_cannot_be_pickled_in_a_later_piece_stops_the_earlier_ones(
    c: Client, cluster: LocalCluster
) -> None:
    # the root comes last in the order; its lock argument can't be pickled, and the
    # pieces before it are on the scheduler by then: they are released, nothing is left
    dsk: dict[Any, Any] = {("x", i): (inc, i) for i in range(30)}
    dsk["total"] = (total, *[("x", i) for i in range(30)], threading.Lock())
    try:
        c.get(dsk, list(dsk))
    except SerializeError as e:
        error = e  # holds the traceback, and through it the futures made so far
    else:
        pytest.fail("the graph was sent")
    assert "could not serialize task" in str(error) and "lock" in str(error)
    assert len(c.sent) >= 3  # type: ignore[attr-defined]
    # every future made is released at once, not when the traceback goes: once the
    # scheduler has read the stream up to a later task, nobody wants those keys
    assert not c._refs
    after = c.submit(inc, 1, key="after")
    assert after.result() == 2
    assert held(cluster) == ["after"]
    del error, after


def test_pieces_hold_exactly_the_keys_a_later_piece_depends_on() -> None:
    # a -> b -> c -> d in pieces of two: b is needed by c (next piece), a by d; the dead
    # branch x -> y crosses pieces too, but no wanted key needs it: nothing holds x
    graph = {
        "a": Task("a", inc, 1),
        "x": Task("x", inc, 1),
        "b": Task("b", inc, TaskRef("a")),
        "y": Task("y", inc, TaskRef("x")),
        "c": Task("c", inc, TaskRef("b")),
        "d": Task("d", add, TaskRef("c"), TaskRef("a")),
    }
    order = ["a", "x", "b", "y", "c", "d"]
    plan = _plan_pieces(graph, order, ["d"], 2)
    assert plan is not None
    assert [plan.ends_piece(i) for i in range(6)] == [False, True] * 3
    # the piece of each key's last use, when later than its own
    assert [plan.needed_later(k, i) for i, k in enumerate(order)] == [2, None, 2, None, None, None]
    # one piece, or no pieces asked for: one message
    assert _plan_pieces(graph, order, ["d"], 6) is None
    assert _plan_pieces(graph, order, ["d"], 0) is None


def touch(path: str) -> str:
    with open(path, "w"):
        pass
    return path


def test_a_dead_branch_runs_no_more_than_with_the_graph_whole(
    c: Client, cluster: LocalCluster, tmp_path: Any
) -> None:
    # ``client.get`` does not cull: tasks no wanted key needs are submitted, and must
    # not run because their dependents come in a later piece
    dsk: dict[Any, Any] = {("side", i): (touch, str(tmp_path / str(i))) for i in range(10)}
    dsk["dead"] = (total, *[("side", i) for i in range(10)])
    dsk["w"] = (inc, 1)
    assert c.get(dsk, "w") == 2
    assert len(c.sent) > 1  # type: ignore[attr-defined]
    assert [k for p in c.sent for k in p.keys] == ["w"]  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []


def test_an_order_that_puts_a_dependency_after_its_dependent_goes_whole() -> None:
    graph = {"a": Task("a", inc, 1), "b": Task("b", inc, TaskRef("a")), "c": Task("c", inc, 2)}
    assert _plan_pieces(graph, ["b", "a", "c"], ["b", "c"], 1) is None
    # a dependency outside the graph (a future's key) is no obstacle
    graph["d"] = Task("d", inc, TaskRef("elsewhere"))
    assert _plan_pieces(graph, ["a", "b", "c", "d"], ["b", "d"], 1) is not None
