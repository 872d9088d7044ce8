"""The demo (``make demo``): futures, then the Dask-architecture dataframe workflow.

1. a small map/reduce with futures;
2. the workflow from the introduction to Dask's architecture: a timeseries dataframe,
   square a column, persist it on the cluster, see which worker holds which partition,
   look at the head, and a groupby-mean.
"""

import time

import dask

from shoal import Client, LocalCluster, wait


def square(x: int) -> int:
    return x * x


def total(values: list[int]) -> int:
    return sum(values)


def main() -> None:
    started = time.perf_counter()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        ready = time.perf_counter()
        print(
            f"LocalCluster with {len(client.nthreads())} worker processes started in "
            f"{ready - started:.2f} s; scheduler at {cluster.scheduler_address}"
        )

        # 1. map/reduce with futures
        squares = client.map(square, range(1_000))
        result = client.submit(total, squares).result()
        assert result == sum(x * x for x in range(1_000))
        print(
            f"\nsum of squares of 0..999 = {result} "
            f"(1,001 tasks in {time.perf_counter() - ready:.2f} s)"
        )

        # 2. the Dask-architecture workflow
        t0 = time.perf_counter()
        ddf = dask.datasets.timeseries(
            start="2000-01-01", end="2000-01-31", freq="1s", partition_freq="6d", seed=42
        )
        ddf = ddf.assign(x=ddf.x**2)
        ddf = client.persist(ddf)
        wait(ddf)
        print(
            f"\npersisted {ddf.npartitions} partitions in {time.perf_counter() - t0:.2f} s; "
            "who holds which partition:"
        )
        for key, workers in sorted(client.who_has(ddf).items(), key=lambda kv: str(kv[0])):
            print(f"  {key!s:<45} {', '.join(workers)}")
        print("\nddf.head():")
        print(ddf.head())
        print("\nddf.groupby('name').x.mean().head():")
        print(ddf.groupby("name").x.mean().compute().head())
        print(f"\nworkflow done in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
