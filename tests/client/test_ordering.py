"""Priorities: dask.order for most graphs, a linear-time pass for forests of in-trees
(every task with at most one dependent), which must be as good for memory."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import dask
import dask.array as da
import dask.bag as db
import pytest
from dask._task_spec import DataNode, GraphNode, Task, TaskRef, convert_legacy_graph
from dask.order import order as dask_order

from shoal._types import Key
from shoal.client import ordering
from shoal.client.ordering import collector_paused, forest_order, order


def add(*xs: int) -> int:
    return sum(xs)


def tree(n_leaves: int, name: str = "t") -> dict[Key, GraphNode]:
    """A binary tree of ``add`` over ``n_leaves`` leaves, as dask.delayed builds it."""
    graph: dict[Key, GraphNode] = {}
    layer: list[Key] = []
    for i in range(n_leaves):
        graph[(name, 0, i)] = Task((name, 0, i), add, i)
        layer.append((name, 0, i))
    level = 0
    while len(layer) > 1:
        level += 1
        pairs = []
        for j, (a, b) in enumerate(zip(layer[::2], layer[1::2])):
            graph[(name, level, j)] = Task((name, level, j), add, TaskRef(a), TaskRef(b))
            pairs.append((name, level, j))
        layer = pairs + ([layer[-1]] if len(layer) % 2 else [])
    return graph


def run_in_order(graph: Mapping[Key, GraphNode], priorities: Mapping[Key, int]) -> int:
    """Run ``graph`` one task at a time in ``priorities``' order; check that every task
    comes after its dependencies; return how many results were held at the peak."""
    remaining: dict[Key, int] = {}
    for node in graph.values():
        for dep in node.dependencies:
            remaining[dep] = remaining.get(dep, 0) + 1
    done: set[Key] = set()
    held = peak = 0
    for key in sorted(graph, key=priorities.__getitem__):
        assert all(dep in done or dep not in graph for dep in graph[key].dependencies)
        done.add(key)
        held += 1
        peak = max(peak, held)
        for dep in graph[key].dependencies:
            remaining[dep] -= 1
            if not remaining[dep] and dep in graph:
                held -= 1
    return peak


def test_a_tree_runs_in_order_with_no_more_held_than_dask_orders_it() -> None:
    graph = tree(1_000)
    priorities = forest_order(graph)
    assert priorities is not None
    assert sorted(priorities.values()) == list(range(len(graph)))
    assert run_in_order(graph, priorities) <= run_in_order(graph, dask_order(graph))
    assert order(graph) == priorities
    assert forest_order(dict(reversed(graph.items()))) == priorities  # deterministic


@pytest.mark.parametrize(
    "collection",
    [
        pytest.param(lambda: da.ones((400, 400), chunks=(20, 20)).sum(), id="array-sum"),
        pytest.param(lambda: da.ones((400, 400), chunks=(20, 20)).mean(axis=0), id="mean-0"),
        pytest.param(lambda: (da.ones((100, 100), chunks=10) + 1) * 2, id="blockwise"),
        pytest.param(lambda: db.range(1_000, npartitions=50).map(abs).sum(), id="bag-sum"),
        pytest.param(lambda: [dask.delayed(abs)(-i) for i in range(20)], id="independent"),
    ],
)
def test_dask_collections_that_are_forests_hold_no_more_than_with_dask_order(
    collection: Any,
) -> None:
    made = collection()
    dsk: dict[Key, Any] = {}
    for part in made if isinstance(made, list) else [made]:
        dsk.update(part.__dask_graph__())
    graph = convert_legacy_graph(dsk)
    priorities = forest_order(graph)
    assert priorities is not None
    assert run_in_order(graph, priorities) <= run_in_order(graph, dask_order(graph))


def test_of_two_dependencies_the_one_needing_more_memory_runs_first() -> None:
    # "big" is a 4-leaf tree (it holds 3 results at its peak); "z" a single leaf. Run
    # after z, big's peak comes with z held too.
    graph = tree(4, name="big")
    graph["z"] = Task("z", add, 1)
    graph["out"] = Task("out", add, TaskRef("z"), TaskRef(("big", 2, 0)))
    priorities = forest_order(graph)
    assert priorities is not None
    assert priorities[("big", 2, 0)] < priorities["z"]
    assert run_in_order(graph, priorities) == 4
    assert run_in_order(graph, {**priorities, "z": -1}) == 5  # z first holds one more


def test_ties_and_outputs_go_in_the_keys_order() -> None:
    graph: dict[Key, GraphNode] = {("x", i): Task(("x", i), add, i) for i in (10, 2, 1)}
    priorities = forest_order(graph)
    assert priorities is not None
    assert sorted(graph, key=priorities.__getitem__) == [("x", 1), ("x", 2), ("x", 10)]
    graph["s"] = Task("s", add, 0)  # keys that don't compare go by their text
    priorities = forest_order(graph)
    assert priorities is not None
    assert sorted(graph, key=priorities.__getitem__) == [("x", 1), ("x", 10), ("x", 2), "s"]


def test_a_shared_dependency_is_no_forest_and_goes_to_dask_order() -> None:
    graph: dict[Key, GraphNode] = {
        "a": Task("a", add, 1),
        "b": Task("b", add, TaskRef("a")),
        "c": Task("c", add, TaskRef("a"), 2),
    }
    assert forest_order(graph) is None
    assert order(graph) == dask_order(graph)


def test_dependencies_outside_the_graph_are_not_ordered() -> None:
    # a future's key: on the cluster already, shared by any number of tasks
    graph: dict[Key, GraphNode] = {
        "b": Task("b", add, TaskRef("future")),
        "c": Task("c", add, TaskRef("future"), TaskRef("d")),
        "d": DataNode("d", 5),
    }
    priorities = forest_order(graph)
    assert priorities is not None
    assert set(priorities) == {"b", "c", "d"}
    assert priorities["d"] < priorities["c"]


def test_a_cycle_is_reported_by_dask_order() -> None:
    graph: dict[Key, GraphNode] = {
        "a": Task("a", add, TaskRef("b")),
        "b": Task("b", add, TaskRef("a")),
        "c": Task("c", add, 1),
    }
    assert forest_order(graph) is None
    with pytest.raises(RuntimeError, match="Cycle detected"):
        order(graph)


def test_tiny_graphs() -> None:
    assert order({}) == {}
    assert order({"a": Task("a", add, 1)}) == {"a": 0}


def test_ordering_large_graphs_pauses_the_collector_once_for_all_threads() -> None:
    assert gc.isenabled()
    first, second = collector_paused(), collector_paused()
    first.__enter__()
    second.__enter__()  # another thread ordering at the same time
    assert not gc.isenabled()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the other one still orders
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()  # the application's choice stays
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_promoting_pause_moves_what_it_made_to_the_oldest_generation() -> None:
    # a large graph's tasks and futures live on: young collections would scan them all
    assert gc.isenabled()
    with collector_paused(then="promote"):
        kept = [[i] for i in range(1_000)]
        assert not gc.isenabled()
    assert gc.isenabled()
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(kept) in oldest and all(id(x) in oldest for x in kept)
    assert gc.get_freeze_count() == 0


def test_a_promoting_pause_leaves_the_applications_frozen_objects_frozen() -> None:
    frozen = [object()]
    gc.freeze()
    try:
        count = gc.get_freeze_count()
        with collector_paused(then="promote"):
            made = [[1]]
        assert gc.get_freeze_count() == count  # nothing was unfrozen
        assert id(made) not in {id(o) for o in gc.get_objects(generation=2)}
    finally:
        gc.unfreeze()
    assert frozen


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("x", "y"),
        ("y", "x"),
        (("x", 2), ("x", 10)),
        (("x", 10), ("x", 2)),
        (("x", 1), "y"),
        ("y", ("x", 1)),
        (3, "a"),
    ],
)
def test_the_pairwise_key_order_is_the_sorted_one(a: Any, b: Any) -> None:
    assert ordering._before(a, b) == (ordering._key_order([a, b])[0] is a)
