"""The workloads: each is a generator taking the flavor's module (``shoal`` or ``distributed``).

A workload gets ``mod`` (the flavor's module: both export ``Client``, ``LocalCluster``,
``wait`` and ``as_completed``) and a :class:`Bench` holding the client of a cluster started
for it (unless it starts its own). It loops over ``bench.runs()``, which yields ``True``
for the warm-up and then ``False`` once per repetition, and yields one dict of metrics per
run, in that order. Only code in this module, identical for both flavors, is timed.

Task functions live at module level so that both flavors pickle them by reference.
"""

from __future__ import annotations

import gc
import importlib
import operator
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from time import perf_counter
from types import ModuleType
from typing import Any

Sample = dict[str, float]

#: the cluster every workload runs on, unless it says otherwise
CLUSTER_KWARGS: dict[str, Any] = {
    "n_workers": 2,
    "threads_per_worker": 1,
    "processes": True,
    "dashboard_address": None,
}


@dataclass(frozen=True)
class Metric:
    """One number a workload reports per run."""

    key: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Workload:
    """A registered workload: its generator, what it reports, how often it repeats."""

    name: str
    fn: Callable[[ModuleType, Bench], Iterator[Sample]]
    metrics: tuple[Metric, ...]
    description: str
    own_cluster: bool = False
    repeat: int = 3
    timeout: float = 300.0


WORKLOADS: dict[str, Workload] = {}


def workload(
    name: str, *metrics: Metric, own_cluster: bool = False, repeat: int = 3, timeout: float = 300
) -> Callable[[Callable[[ModuleType, Bench], Iterator[Sample]]], Any]:
    """Register a workload: its default repetitions, its time limit (seconds, per flavor).

    Its docstring's first line is its description.
    """

    def register(fn: Callable[[ModuleType, Bench], Iterator[Sample]]) -> Any:
        doc = (fn.__doc__ or name).strip().splitlines()[0]
        WORKLOADS[name] = Workload(name, fn, metrics, doc, own_cluster, repeat, timeout)
        return fn

    return register


@dataclass
class Bench:
    """What a workload runs with: the flavor, the sizes to use, the cluster's client."""

    mod: ModuleType
    quick: bool
    repeat: int
    client: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    #: keys a workload keeps on the cluster across runs (its input), ignored by settle()
    keep: set[Any] = field(default_factory=set)

    def size(self, full: Any, quick: Any) -> Any:
        """``full`` normally, ``quick`` with ``--quick``."""
        return quick if self.quick else full

    def runs(self) -> Iterator[bool]:
        """``True`` for the warm-up, then ``False`` for each timed repetition."""
        yield True
        for _ in range(self.repeat):
            yield False

    def settle(self, timeout: float = 30.0) -> None:
        """Wait (untimed) until the scheduler has forgotten every task of the last run."""
        gc.collect()
        deadline = time.monotonic() + timeout
        while set(self.client.who_has()) - self.keep:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster still holds tasks {timeout} s after a run")
            time.sleep(0.05)


def rss() -> int:
    """Resident memory of this process (the client's, which also holds the scheduler)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


# ---------------------------------------------------------------------- task functions


def noop(x: Any = None) -> Any:
    return x


def inc(x: int) -> int:
    return x + 1


def make_array(nbytes: int) -> Any:
    import numpy as np

    return np.ones(nbytes // 8, dtype="float64")


def started_nbytes_where(arr: Any, flavor: str) -> tuple[float, int, str]:
    """The time this task started (after its input arrived), its size, and the worker."""
    started = time.time()
    address = importlib.import_module(flavor).get_worker().address
    return started, int(arr.nbytes), address


# ---------------------------------------------------------------------- workloads


@workload("map-noop", Metric("10k", "tasks/s", True), Metric("50k", "tasks/s", True), repeat=2)
def map_noop(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """client.map of a no-op over 10,000 and over 50,000 items, then gather."""
    sizes = {"10k": bench.size(10_000, 1_000), "50k": bench.size(50_000, 5_000)}
    bench.info["sizes"] = sizes
    for warmup in bench.runs():
        sample = {}
        for label, n in sizes.items():
            n = min(n, 1_000) if warmup else n
            t0 = perf_counter()
            futures = bench.client.map(noop, range(n), pure=False)
            results = bench.client.gather(futures)
            elapsed = perf_counter() - t0
            assert results == list(range(n))
            del futures, results
            bench.settle()
            sample[label] = n / elapsed
        yield sample


@workload("round-trip", Metric("median", "ms", False), Metric("p99", "ms", False))
def round_trip(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """Sequential client.submit(noop, i).result(): the latency of one task."""
    n = bench.size(1_000, 100)
    bench.info["n"] = n
    for warmup in bench.runs():
        times = []
        for i in range(50 if warmup else n):
            t0 = perf_counter()
            assert bench.client.submit(noop, i, pure=False).result() == i
            times.append(perf_counter() - t0)
        yield {
            "median": 1e3 * statistics.median(times),
            "p99": 1e3 * statistics.quantiles(times, n=100, method="inclusive")[98],
        }


def delayed_tree(n_leaves: int) -> tuple[Any, int]:
    """``n_leaves`` inc tasks summed by a binary tree of adds: 2 n - 1 tasks in all."""
    import dask

    layer = [dask.delayed(inc)(i) for i in range(n_leaves)]
    while len(layer) > 1:
        pairs = [dask.delayed(operator.add)(a, b) for a, b in zip(layer[::2], layer[1::2])]
        layer = pairs + ([layer[-1]] if len(layer) % 2 else [])
    return layer[0], n_leaves * (n_leaves + 1) // 2


@workload(
    "delayed-tree",
    Metric("throughput", "tasks/s", True),
    Metric("memory per task", "bytes", False),
    timeout=900,
)
def delayed_tree_run(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """A 100,000-task dask.delayed tree end to end, and the scheduler's memory per task.

    The tree (50k incs summed by a binary tree of adds, 99,999 tasks) goes in as a graph
    through the dask scheduler protocol, ``client.get(dsk, keys, sync=False)`` (what
    ``.compute()`` calls), asking for every key so that the scheduler holds all of them
    at the end. Throughput is tasks / (submit to every task in memory, then the root's
    value gathered); building the graph is outside the timing (recorded as ``build_s``).

    Memory: in both LocalClusters the scheduler runs inside the client process, so this
    reads that process's RSS with the graph built and nothing submitted, then with every
    task in memory (after a gc), and divides the growth by the number of tasks. It counts
    the scheduler's state, the client's 100k futures and whatever the allocator kept
    from submitting; the method is the same for both. Measured on the first timed run
    only, in a process that has not run a graph that size (a later run would reuse the
    memory the first freed).
    """
    n_leaves = bench.size(50_000, 2_000)
    measured_memory = False
    for warmup in bench.runs():
        t0 = perf_counter()
        root, expected = delayed_tree(1_000 if warmup else n_leaves)
        dsk = dict(root.__dask_graph__())
        keys = list(dsk)
        root_index = keys.index(root.key)
        del root
        gc.collect()
        bench.info.update(ntasks=len(keys), build_s=perf_counter() - t0)
        before = rss()
        start = perf_counter()
        futures = bench.client.get(dsk, keys, sync=False)
        mod.wait(futures)
        assert futures[root_index].result() == expected
        elapsed = perf_counter() - start
        sample = {"throughput": len(keys) / elapsed}
        if not warmup and not measured_memory:
            gc.collect()
            held = rss()
            sample["memory per task"] = (held - before) / len(keys)
            bench.info.update(rss_before=before, rss_held=held)
            measured_memory = True
        del futures
        bench.settle()
        yield sample


TRANSFER_METRICS = (
    Metric("bandwidth", "GB/s", True),
    Metric("of memcpy", "%", True),
    Metric("memcpy", "GB/s", True),
    Metric("make", "ms", False),
    Metric("make and move", "ms", False),
    Metric("make 8 on 2 workers", "ms", False),
)


@workload("transfer", *TRANSFER_METRICS)
def transfer(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """A 256 MiB numpy array made on worker A, read by a task on worker B.

    The time is from just before the dependent task is submitted to the moment it starts
    on B (a timestamp taken inside the task: both processes read the same clock), so it
    is the scheduling plus the transfer. Next to it, a memcpy of an array of the same
    size in this process (np.copyto into a touched buffer, best of three). "make" is
    from submitting the task that makes the array to its future being done; "make and
    move" from there to the start of the task that reads it; "make 8 on 2 workers": eight
    such arrays made at once, four per worker, until all are done.
    """
    yield from _transfer_runs(mod, bench)


@workload("transfer-shared", *TRANSFER_METRICS, own_cluster=True)
def transfer_shared(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """``transfer`` with shoal's shared memory on (``comm.shared-memory``, off by default).

    shoal writes the array into a sealed memory file as the task that makes it finishes
    (so "make" grows), and worker B maps that file instead of receiving the bytes.
    distributed has no such mode: its rows are the plain transfer again.
    """
    if mod.__name__ == "shoal":
        os.environ["SHOAL_COMM__SHARED_MEMORY"] = "true"  # the worker processes inherit it
        importlib.import_module("shoal.config").refresh()
    cluster = mod.LocalCluster(**CLUSTER_KWARGS)
    bench.client = mod.Client(cluster)
    try:
        yield from _transfer_runs(mod, bench)
    finally:
        bench.client.close()
        cluster.close()


def _transfer_runs(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    import numpy as np

    nbytes = bench.size(256 * 2**20, 16 * 2**20)
    a, b = sorted(bench.client.nthreads())[:2]
    bench.info.update(nbytes=nbytes, source=a, destination=b)
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    for _ in bench.runs():
        made = time.time()
        arr = bench.client.submit(make_array, nbytes, workers=[a], pure=False)
        mod.wait([arr])
        t0 = time.time()
        dep = bench.client.submit(started_nbytes_where, arr, mod.__name__, workers=[b], pure=False)
        started, n, where = dep.result()
        assert n == nbytes and where == b, (n, where)
        del arr, dep
        bench.settle()
        copies = []
        for _ in range(3):
            c0 = perf_counter()
            np.copyto(dst, src)
            copies.append(perf_counter() - c0)
        m0 = perf_counter()
        many = bench.client.map(make_array, [nbytes] * 8, pure=False)
        mod.wait(many)
        made_many = perf_counter() - m0
        del many
        bench.settle()
        bandwidth = nbytes / (started - t0) / 1e9
        memcpy = nbytes / min(copies) / 1e9
        yield {
            "bandwidth": bandwidth,
            "of memcpy": 100 * bandwidth / memcpy,
            "memcpy": memcpy,
            "make": 1000 * (t0 - made),
            "make and move": 1000 * (started - made),
            "make 8 on 2 workers": 1000 * made_many,
        }


@workload(
    "dataframe-workflow",
    Metric("total", "s", False),
    Metric("persist", "s", False),
    Metric("head", "s", False),
    Metric("groupby-mean", "s", False),
)
def dataframe_workflow(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """The Dask-architecture workflow: timeseries, assign x**2, persist, head, groupby-mean."""
    import dask.datasets

    end = bench.size("2000-03-01", "2000-01-05")
    bench.info["timeseries"] = {"start": "2000-01-01", "end": end, "freq": "1s", "partition": "1d"}
    for seed, warmup in enumerate(bench.runs()):
        t0 = perf_counter()
        ddf = dask.datasets.timeseries(
            start="2000-01-01",
            end="2000-01-03" if warmup else end,
            freq="1s",
            partition_freq="1d",
            seed=seed,  # fresh keys for every run
        )
        ddf = ddf.assign(x=ddf.x**2)
        ddf = bench.client.persist(ddf)
        mod.wait(ddf)
        t1 = perf_counter()
        head = ddf.head()
        t2 = perf_counter()
        means = ddf.groupby("name").x.mean().compute()
        t3 = perf_counter()
        assert len(head) == 5 and len(means) > 0
        bench.info["npartitions"] = ddf.npartitions
        del ddf
        bench.settle()
        yield {"total": t3 - t0, "persist": t1 - t0, "head": t2 - t1, "groupby-mean": t3 - t2}


@workload("shuffle", Metric("set_index", "s", False), Metric("rate", "MB/s", True))
def shuffle(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """ddf.set_index("x") of a persisted ~1 GB timeseries, persisted (divisions included).

    The shuffle method is dask's choice for the flavor (recorded): shoal makes dask use
    the task-based shuffle, distributed gets its default (p2p).
    """
    import dask.datasets
    import pandas as pd
    from dask.utils import get_default_shuffle_method

    days = bench.size(256, 8)
    end = pd.Timestamp("2000-01-01") + pd.Timedelta(days=days)
    ddf = dask.datasets.timeseries(
        start="2000-01-01", end=end.strftime("%Y-%m-%d"), freq="1s", partition_freq="2d", seed=0
    )
    ddf = bench.client.persist(ddf)
    mod.wait(ddf)
    bench.keep = set(bench.client.who_has())
    small = ddf.partitions[:2]
    nbytes = int(ddf.memory_usage(deep=True).sum().compute())
    small_nbytes = int(small.memory_usage(deep=True).sum().compute())
    bench.info.update(
        input_bytes=nbytes,
        npartitions=ddf.npartitions,
        rows=days * 86_400,
        shuffle_method=get_default_shuffle_method(),
    )
    for warmup in bench.runs():
        t0 = perf_counter()
        out = bench.client.persist((small if warmup else ddf).set_index("x"))
        mod.wait(out)
        elapsed = perf_counter() - t0
        assert len(out) == (2 if warmup else days // 2) * 2 * 86_400
        del out
        bench.settle()
        yield {"set_index": elapsed, "rate": (small_nbytes if warmup else nbytes) / elapsed / 1e6}
    bench.info["shuffle_classes"] = sorted(
        {type(e).__name__ for e in small.set_index("x").expr.lower_completely().walk()}
        & {"TaskShuffle", "P2PShuffle", "DiskShuffle", "DiskShuffleGroupPartitioned"}
    )


@workload(
    "startup",
    Metric("total", "s", False),
    Metric("start", "s", False),
    Metric("first result", "s", False),
    Metric("close", "s", False),
    own_cluster=True,
    repeat=5,
)
def startup(mod: ModuleType, bench: Bench) -> Iterator[Sample]:
    """A LocalCluster's start (with its Client), first result of a no-op, and close."""
    for _ in bench.runs():
        t0 = perf_counter()
        cluster = mod.LocalCluster(**CLUSTER_KWARGS)
        client = mod.Client(cluster)
        t1 = perf_counter()
        assert client.submit(noop, 1).result() == 1
        t2 = perf_counter()
        client.close()
        cluster.close()
        t3 = perf_counter()
        yield {"total": t3 - t0, "start": t1 - t0, "first result": t2 - t1, "close": t3 - t2}
