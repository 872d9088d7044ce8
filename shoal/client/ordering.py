"""The priorities of a graph's tasks: the order a single thread would best run them in.

Most graphs are ordered by ``dask.order``, as dask's own schedulers and distributed do.
A graph in which every task has at most one dependent (a forest of in-trees: tree
reductions such as an array's ``sum`` or a bag's ``fold``, aggregations, independent
chains of blockwise tasks, a list of independent delayed calls) is ordered here in
linear time instead: ``dask.order`` spends 15-20 µs a task on its general analysis,
which for a 100,000-task tree is 1.5-1.8 s before the first task can go.

In a forest a good order is known (Sethi and Ullman's, for trees): finish a subtree
before starting its sibling, and of a task's dependencies start with the subtree that
needs the most results held at once. Run in that order, no other depth-first order holds
fewer results at its peak.

Also here: :func:`collector_paused`, the garbage collector's pause while a large graph
is ordered and submitted.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from dask._task_spec import GraphNode
from dask.order import order as dask_order

from shoal._types import Key

#: From this many tasks on, the collector pauses while ``dask.order`` runs, and while
#: the client submits the graph (``CollectionsMixin._graph_to_futures``).
LARGE_GRAPH = 10_000

_gc_lock = threading.Lock()
_gc_pauses = 0  # how many pauses are open now (threads ordering or submitting graphs)
_gc_resume = False  # whether the collector was on when the first of them paused it


@contextlib.contextmanager
def collector_paused(then: Literal["collect", "promote"] = "collect") -> Iterator[None]:
    """Pause the garbage collector (process-wide) for the block. Threads pausing it at
    once share one pause: the last to finish turns it back on, if it was on when the
    first began.

    ``then="collect"``: one young collection at the end, for a block that leaves
    garbage in cycles. ``then="promote"``: for a block whose new objects live on (a
    graph's tasks and futures), move every object into the oldest generation instead
    of scanning them (``gc.freeze`` then ``gc.unfreeze``); skipped when the application
    keeps objects frozen itself, which unfreezing would release.
    """
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if not _gc_pauses:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            last = not _gc_pauses
            if then == "collect":
                gc.collect(0)
            elif last and not gc.get_freeze_count():
                gc.freeze()
                gc.unfreeze()
            if last and _gc_resume:
                gc.enable()


def order(graph: Mapping[Key, GraphNode]) -> dict[Key, int]:
    """Each task's priority in ``graph`` (0 first): :func:`forest_order`'s where it
    applies, else ``dask.order``'s.

    A large graph goes to ``dask.order`` with the garbage collector paused, then one
    young collection. ``dask.order`` keeps its tables (about 2.5 sets per task) in
    reference cycles through its closures: without the pause they stay allocated until
    a full collection, and the collector meanwhile scans them over and over (100,000
    tasks: 1.6 s instead of 2.4 s, and the 150 MB of tables freed at once).
    """
    if len(graph) < 2:
        return dict.fromkeys(graph, 0)
    forest = forest_order(graph)
    if forest is not None:
        return forest
    if len(graph) < LARGE_GRAPH:
        return dask_order(graph)  # type: ignore[arg-type, return-value]
    with collector_paused():
        return dask_order(graph)  # type: ignore[arg-type, return-value]


def forest_order(graph: Mapping[Key, GraphNode]) -> dict[Key, int] | None:
    """Priorities for a graph in which no task has two dependents, or ``None`` for any
    other graph (and for a cycle, which ``dask.order`` then reports).

    Depth first from the graph's outputs, each task right after its dependencies. Of a
    task's dependencies, the one whose subtree needs the most results held at once goes
    first; ties, and the outputs, go in the keys' order. Dependencies outside the graph
    (futures' keys) are not ordered.
    """
    # every task's dependencies in the graph, stopping at the first one shared
    children: dict[Key, list[Key]] = {}
    has_dependent: set[Key] = set()
    for key, node in graph.items():
        deps = node.dependencies
        if deps:
            inside = [dep for dep in deps if dep in graph]
            if inside:
                before = len(has_dependent)
                has_dependent.update(inside)
                if len(has_dependent) - before != len(inside):
                    return None  # a dependency with a second dependent
                children[key] = inside
    outputs = _key_order(key for key in graph if key not in has_dependent)

    # needs: how many results a subtree holds at its peak, run in this order (a
    # task's result counted beside its inputs as it finishes). Reversed, a preorder
    # from the outputs has every task after its dependencies.
    preorder = _preorder(outputs, children)
    if len(preorder) != len(graph):
        return None  # tasks no output reaches: a cycle
    need: dict[Key, int] = {}  # tasks without dependencies in the graph need 1
    for key in reversed(preorder):
        kids = children.get(key)
        if kids is None:
            continue
        if len(kids) == 2:  # most trees are binary: the same as below, faster
            a, b = kids
            need_a, need_b = need.get(a, 1), need.get(b, 1)
            if need_a < need_b or (need_a == need_b and _before(b, a)):
                kids.reverse()
            peak = need_a + 1 if need_a == need_b else max(need_a, need_b)
            need[key] = max(peak, 3)
        elif len(kids) > 2:
            kids[:] = _key_order(kids)
            kids.sort(key=lambda k: need.get(k, 1), reverse=True)  # stable: ties by key
            peak = max(need.get(k, 1) + i for i, k in enumerate(kids))
            need[key] = max(peak, len(kids) + 1)
        else:
            need[key] = max(need.get(kids[0], 1), 2)

    # Reversed, a preorder that pushes each task's dependencies in the order they
    # should run is the postorder that runs them in that order.
    return {key: i for i, key in enumerate(reversed(_preorder(outputs, children)))}


def _preorder(outputs: list[Key], children: Mapping[Key, list[Key]]) -> list[Key]:
    """Every task reachable from ``outputs``, each before its dependencies; the last
    of ``outputs`` (and of each task's dependencies) first."""
    result: list[Key] = []
    stack = list(outputs)
    pop, push, visit, kids_of = stack.pop, stack.extend, result.append, children.get
    while stack:
        key = pop()
        visit(key)
        kids = kids_of(key)
        if kids:
            push(kids)
    return result


def _before(a: Key, b: Key) -> bool:
    """Whether :func:`_key_order` puts ``a`` before ``b`` (without making a list)."""
    try:
        return bool(a < b)  # type: ignore[operator]
    except TypeError:
        return str(a) < str(b)


def _key_order(keys: Iterable[Key]) -> list[Key]:
    """``keys`` sorted: by value where they compare (``("x", 2)`` before ``("x", 10)``),
    else by their text."""
    listed = list(keys)
    try:
        return sorted(listed)
    except TypeError:
        return sorted(listed, key=str)
