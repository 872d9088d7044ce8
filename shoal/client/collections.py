"""dask integration: graphs become tasks; ``get``, ``compute``, ``persist`` (Client methods).

A dask graph (legacy tuples or task-spec nodes, or an expression that produces one) is
converted with ``dask._task_spec.convert_legacy_graph``; every node becomes a task whose
run spec is the node itself, cloudpickled once here. The worker calls the node with its
dependencies' values. Futures inside a graph are ``TaskRef`` s, so they become plain
dependencies on keys the scheduler already holds. Priorities come from
:mod:`shoal.client.ordering` (``dask.order``, or a linear-time pass for forests); a large
graph goes in pieces, most urgent first (``client.graph-piece-tasks``), so that
workers start while the rest is being pickled.

``compute`` and ``persist`` reuse dask's own ``dask.compute``/``dask.persist`` with a
scheduler function that submits the graph and returns futures instead of values.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dask import config as dask_config
from dask._task_spec import GraphNode, Task, TaskRef, convert_legacy_graph
from dask.base import compute as dask_compute
from dask.base import is_dask_collection
from dask.base import persist as dask_persist
from dask.core import flatten as _flatten
from dask.utils import format_bytes

from shoal import config
from shoal._types import Key
from shoal.client.futures import Future, futures_in
from shoal.client.keys import SCALARS, check_keys, check_options
from shoal.client.ordering import LARGE_GRAPH, collector_paused, order
from shoal.protocol.messages import TaskSpec, UpdateGraph
from shoal.protocol.opaque import Opaque
from shoal.protocol.runspec import dumps_packed_call, packed_ref
from shoal.protocol.serialize import dumps_run_spec, function_bytes

#: dask settings that make collections use methods any scheduler can run (not p2p).
TASK_BASED_METHODS = {"dataframe.shuffle.method": "tasks", "array.rechunk.method": "tasks"}


#: Callables a compact run spec may carry (pickled once each, cached: see function_bytes)
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)


def _dumps_node(node: GraphNode, functions: dict[int, tuple[Any, bytes]]) -> Opaque:
    """The run spec of a graph node: compact (msgpack, no pickle) for a plain function
    applied to plain values and other tasks' results, as most delayed and many array
    tasks are; otherwise the node itself, pickled.

    ``functions`` holds the functions this graph's nodes pickled so far (by id, beside
    the function, which keeps the id its own): each is pickled once per graph, as it is
    now. Not once per process: a function of ``__main__`` travels with its globals, and
    a method with its object, which may have changed since the last graph.
    """
    func: Any = getattr(node, "func", None)
    if (
        type(node) is Task
        and not node.kwargs
        and type(func) in _FUNCTIONS
        and getattr(func, "__closure__", None) is None
    ):
        args = []
        for a in node.args:
            kind = type(a)
            if kind is TaskRef:
                args.append(packed_ref(a.key))
            elif kind in SCALARS:
                args.append(a)
            else:
                break
        else:
            known = functions.get(id(func))
            if known is None:
                known = functions[id(func)] = (func, function_bytes(func, remember=False))
            compact = dumps_packed_call(tuple(args), known[1])
            if compact is not None:
                return compact
    return dumps_run_spec(node)


def _outside_libraries() -> int:
    """The ``stacklevel`` of the innermost caller outside shoal and dask: the user's
    line that computes the graph, for a warning about it."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and _library(frame):
        frame = frame.f_back
        level += 1
    return level


def _library(frame: types.FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).partition(".")[0] in ("shoal", "dask")


#: A task's priority, retries, workers, allow_other_workers and resources
_Options = tuple[int, int, "tuple[str, ...] | None", bool, "dict[str, float] | None"]


def _options(
    annotations: Mapping[str, Mapping[Key, Any]], key: Key, defaults: _Options
) -> _Options:
    """``key``'s options: its annotations where it has them, else ``defaults``."""

    def annotated(name: str, default: Any) -> Any:
        value = annotations.get(name, {}).get(key)
        return default if value is None else value

    workers = annotated("workers", defaults[2])
    if isinstance(workers, str):
        workers = (workers,)
    return (
        annotated("priority", defaults[0]),
        annotated("retries", defaults[1]),
        None if workers is None else tuple(workers),
        bool(annotated("allow_other_workers", defaults[3])),
        annotated("resources", defaults[4]),
    )


class _Pieces:
    """How a graph, in priority order, is cut into pieces of ``size`` tasks.

    ``last_use`` is the position of the last task that depends on each key, among the
    tasks the wanted keys need. A key that a later piece still depends on is held by
    the client until the piece of its last use is sent: otherwise the scheduler, seeing
    no dependent yet, would forget it or drop its value.
    """

    __slots__ = ("last_use", "size")

    def __init__(self, size: int, last_use: dict[Key, int]) -> None:
        self.size = size
        self.last_use = last_use

    def piece(self, position: int) -> int:
        """The index of the piece that holds ``position``."""
        return position // self.size

    def ends_piece(self, position: int) -> bool:
        """Whether the task at ``position`` is the last of its piece."""
        return position % self.size == self.size - 1

    def needed_later(self, key: Key, position: int) -> int | None:
        """The piece of the last task that needs ``key`` (at ``position``), when it is
        a later piece than ``key``'s own; else ``None``."""
        last = self.last_use.get(key)
        if last is None or last // self.size == position // self.size:
            return None
        return last // self.size


def _plan_pieces(
    graph: Mapping[Key, GraphNode], ordered: list[Key], wanted: Iterable[Key], size: int
) -> _Pieces | None:
    """The pieces to send ``graph`` in, or ``None`` for a single message: when it fits in
    one piece, or when ``ordered`` (the priority order) is not a topological order, which a
    piece relies on (every dependency in it or in an earlier one).

    Only what the ``wanted`` keys need counts as a use: a task no wanted key needs runs
    no more than it would with the graph sent whole (never), however it is cut.
    """
    if size <= 0 or len(ordered) <= size:
        return None
    position = {key: i for i, key in enumerate(ordered)}
    needed = {key for key in wanted if key in position}
    last_use: dict[Key, int] = {}
    for i in range(len(ordered) - 1, -1, -1):  # dependents before their dependencies
        key = ordered[i]
        use = key in needed
        for dep in graph[key].dependencies:
            j = position.get(dep)
            if j is None:
                continue  # on the cluster already, held by a future
            if j >= i:
                return None
            if use:
                needed.add(dep)
                last_use.setdefault(dep, i)  # the first seen, going down, is the last
    return _Pieces(size, last_use)


class CollectionsMixin:
    """The part of :class:`~shoal.Client` that runs dask graphs and collections."""

    _sync: Callable[..., Any]
    _lock: Any
    _refs: Any
    _generation: Any
    _send: Callable[..., None]
    _check_running: Callable[[], None]
    gather: Callable[..., Any]
    _gather: Callable[..., Any]

    def _graph_to_futures(
        self,
        dsk: Any,
        keys: Iterable[Key],
        *,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool | None = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
    ) -> dict[Key, Future]:
        """Submit every task of ``dsk``; return futures for ``keys``."""
        self._check_running()
        annotations: Mapping[str, Mapping[Key, Any]] = {}
        if hasattr(dsk, "__dask_annotations__"):
            annotations = dsk.__dask_annotations__() or {}
        if hasattr(dsk, "__dask_graph__"):
            dsk = dsk.__dask_graph__()
        keys = list(dict.fromkeys(keys))
        graph: dict[Any, GraphNode] = convert_legacy_graph(dict(dsk))
        if isinstance(workers, str):
            workers = (workers,)
        check_options(
            [priority, *annotations.get("priority", {}).values()],
            [retries, *annotations.get("retries", {}).values()],
            [workers, *annotations.get("workers", {}).values()],
            [resources, *annotations.get("resources", {}).values()],
        )
        defaults: _Options = (
            priority,
            retries or 0,
            tuple(workers) if workers is not None else None,
            bool(allow_other_workers),
            resources,
        )
        if len(graph) < LARGE_GRAPH:
            return self._submit_graph(graph, keys, annotations, defaults)
        with collector_paused(then="promote"):
            return self._submit_graph(graph, keys, annotations, defaults)

    def _submit_graph(
        self,
        graph: dict[Any, GraphNode],
        keys: list[Key],
        annotations: Mapping[str, Mapping[Key, Any]],
        defaults: _Options,
    ) -> dict[Key, Future]:
        """Order ``graph``, send it (in pieces when large), return futures for ``keys``."""
        check_keys(list(graph))
        priorities = order(graph)
        generation = next(self._generation)
        threshold = int(config.get("client.large-object-warning-bytes"))
        functions: dict[int, tuple[Any, bytes]] = {}

        def spec(key: Key) -> Any:
            node = graph[key]
            dependencies = node.dependencies
            if isinstance(node, Task):
                external = [k for k in dependencies if k not in graph]
                if external:
                    # a Future inside a task (``dask.delayed(f)(future)``) is a TaskRef to
                    # a key already on the cluster: ship a plain TaskRef, not the Future
                    node = node.substitute({k: TaskRef(k) for k in external})  # type: ignore[misc]
                    dependencies = node.dependencies
            run_spec = _dumps_node(node, functions)
            if run_spec.nbytes >= threshold:
                warnings.warn(
                    f"Large object of size {format_bytes(run_spec.nbytes)} detected in the "
                    f"task graph, in task {key!r}. Consider scattering it first "
                    "(client.scatter) and passing the future instead, or loading the data "
                    "inside a task.",
                    UserWarning,
                    stacklevel=_outside_libraries(),
                )
            user_priority, task_retries, task_workers, loose, task_resources = (
                _options(annotations, key, defaults) if annotations else defaults
            )
            return TaskSpec.wire(
                key,
                tuple(dependencies),
                run_spec,
                (-user_priority, generation, priorities[key]),
                task_retries,
                task_workers,
                loose,
                task_resources,
            )

        # Futures for keys on the cluster already say so at once; the others are made
        # just before the piece that holds their task goes (the scheduler's answer to
        # that piece needs them).
        made: dict[Key, Future] = {}
        wanted = set(keys)
        # keys later pieces depend on, held until the piece of their last use is sent
        holds: dict[int, list[Future]] = {}
        specs: list[Any] = []
        piece_keys: list[Key] = []  # the keys of this piece the client wants (or holds)
        held_until: list[int | None] = []  # for each: the piece it is held until, if held

        def send_piece() -> None:
            futures = Future._each(piece_keys, self)  # type: ignore[arg-type]
            for key, last, future in zip(piece_keys, held_until, futures, strict=True):
                if last is None:
                    made[key] = future
                else:
                    holds.setdefault(last, []).append(future)
            self._send(UpdateGraph(tasks=tuple(specs), keys=tuple(piece_keys)))

        try:
            made.update((k, Future(k, self, inform=True)) for k in keys if k not in graph)  # type: ignore[arg-type]
            ordered = sorted(graph, key=priorities.__getitem__)
            plan = _plan_pieces(graph, ordered, keys, int(config.get("client.graph-piece-tasks")))
            for i, key in enumerate(ordered):
                specs.append(spec(key))
                if key in wanted:
                    piece_keys.append(key)
                    held_until.append(None)
                elif plan is not None and (last := plan.needed_later(key, i)) is not None:
                    piece_keys.append(key)
                    held_until.append(last)
                if plan is not None and plan.ends_piece(i) and i + 1 < len(ordered):
                    send_piece()
                    specs, piece_keys, held_until = [], [], []
                    for future in holds.pop(plan.piece(i), ()):
                        future.release()  # after the piece that uses it last, in order
            if specs:
                send_piece()
        except BaseException:
            for future in made.values():
                future.release()  # what earlier pieces started stops: nobody wants it
            raise
        finally:
            for futures in holds.values():
                for future in futures:
                    future.release()
        return {k: made[k] for k in keys}

    # ------------------------------------------------------------------ get

    def get(
        self,
        dsk: Any,
        keys: Any,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool | None = None,
        resources: dict[str, float] | None = None,
        sync: bool = True,
        asynchronous: bool | None = None,
        direct: bool | None = None,
        retries: int | None = None,
        priority: int = 0,
        fifo_timeout: str = "60s",
        actors: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Compute a dask graph: the dask scheduler protocol (``scheduler=client.get``).

        ``keys`` may be nested lists of keys; the result has the same structure. With
        ``sync=False`` futures are returned instead of values.
        """
        futures = self._graph_to_futures(
            dsk,
            flatten(keys) if isinstance(keys, list) else [keys],
            workers=workers,
            allow_other_workers=allow_other_workers,
            resources=resources,
            retries=retries,
            priority=priority,
        )
        packed = _pack(keys, futures)
        if not sync:
            return packed
        return self._sync(self._gather_and_release, packed, list(futures.values()))

    async def _gather_and_release(self, packed: Any, futures: list[Future]) -> Any:
        try:
            return await self._gather(packed)
        finally:
            for f in futures:
                f.release()

    def _as_scheduler(self, **submit: Any) -> Callable[..., Any]:
        """A dask scheduler function that submits graphs and returns futures."""

        def schedule(dsk: Any, keys: Any, **kwargs: Any) -> Any:
            futures = self._graph_to_futures(
                dsk, flatten(keys) if isinstance(keys, list) else [keys], **submit
            )
            return _pack(keys, futures)

        return schedule

    # ------------------------------------------------------------------ compute / persist

    def compute(
        self,
        collections: Any,
        sync: bool = False,
        optimize_graph: bool = True,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool = False,
        resources: dict[str, float] | None = None,
        retries: int = 0,
        priority: int = 0,
        fifo_timeout: str = "60s",
        actors: Any = None,
        traverse: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Start computing dask collections; return a future per collection.

        A single collection gives a single future, a list gives a list. ``sync=True``
        waits and returns the values instead.
        """
        single = not isinstance(collections, (list, tuple))
        items = [collections] if single else list(collections)
        submit = {
            "workers": workers,
            "allow_other_workers": allow_other_workers,
            "resources": resources,
            "retries": retries,
            "priority": priority,
        }
        results: list[Any] = []
        with dask_config.set(TASK_BASED_METHODS):
            if any(is_dask_collection(c) for c in items):
                results = list(
                    dask_compute(  # type: ignore[no-untyped-call]
                        *items,
                        scheduler=self._as_scheduler(**submit),
                        optimize_graph=optimize_graph,
                        traverse=traverse,
                    )
                )
            else:
                results = items
        out = results[0] if single else type(collections)(results)
        if sync:
            return self.gather(out)
        return out

    def persist(
        self,
        collections: Any,
        optimize_graph: bool = True,
        workers: str | Iterable[str] | None = None,
        allow_other_workers: bool | None = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
        fifo_timeout: str = "60s",
        actors: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Start computing collections; return them backed by futures on the cluster."""
        single = not isinstance(collections, (list, tuple))
        items = [collections] if single else list(collections)
        submit = {
            "workers": workers,
            "allow_other_workers": allow_other_workers,
            "resources": resources,
            "retries": retries,
            "priority": priority,
        }
        with dask_config.set(TASK_BASED_METHODS):
            results = dask_persist(  # type: ignore[no-untyped-call]
                *items, scheduler=self._as_scheduler(**submit), optimize_graph=optimize_graph
            )
        return results[0] if single else type(collections)(results)


def flatten(keys: Any) -> list[Key]:
    """The keys of a nested list of keys, in order."""
    return list(_flatten(keys))  # type: ignore[no-untyped-call]


def _pack(keys: Any, futures: Mapping[Key, Future]) -> Any:
    """Arrange futures in the (nested list) structure of ``keys``."""
    if isinstance(keys, list):
        return [_pack(k, futures) if isinstance(k, list) else futures[k] for k in keys]
    return futures[keys]


def futures_of(obj: Any) -> list[Future]:
    """Every future inside ``obj``: collections backed by futures, lists, dicts, futures."""
    return futures_in(obj)
