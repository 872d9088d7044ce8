"""The demo: a small map/reduce with futures on a LocalCluster (``make demo``)."""

import time

from shoal import Client, LocalCluster


def square(x: int) -> int:
    return x * x


def total(values: list[int]) -> int:
    return sum(values)


def main() -> None:
    started = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        with Client(cluster) as client:
            ready = time.perf_counter()
            squares = client.map(square, range(1_000))
            result = client.submit(total, squares).result()
            done = time.perf_counter()
            print(f"sum of squares of 0..999 = {result}")
            print(
                f"cluster of {len(client.nthreads())} workers started in "
                f"{ready - started:.2f} s; 1,001 tasks ran in {done - ready:.2f} s"
            )
    assert result == sum(x * x for x in range(1_000))


if __name__ == "__main__":
    main()
