"""The client side of tests/integration/test_netns.py, run in its own network namespace.

``python netns_client.py SCHEDULER_ADDRESS`` connects, runs the phases below and prints
one ``RESULT {json}`` line per phase; before the last computation it prints
``CUT-NOW`` and waits for a line on standard input (the test cuts a worker's link in
the meantime). Any failure raises, so the process exits non-zero with a traceback.
"""

from __future__ import annotations

import json
import operator
import sys
import time
import urllib.request
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd

from shoal import Client, as_completed
from shoal.worker.execute import get_worker


def report(phase: str, **data: Any) -> None:
    print("RESULT " + json.dumps({"phase": phase, **data}), flush=True)


def where(x: int, delay: float = 0.0) -> tuple[int, str]:
    """Sleep ``delay`` seconds; return ``x`` squared and the name of the worker."""
    time.sleep(delay)
    return x * x, str(get_worker().name)


def total(*parts: tuple[int, str]) -> int:
    return sum(p[0] for p in parts)


N_PARTS = 8
ROWS = 500


def make_part(i: int) -> pd.DataFrame:
    """Partition ``i`` of the input, labelled with the worker that made it."""
    time.sleep(0.05)  # long enough for the scheduler to spread the partitions
    rows = range(i * ROWS, (i + 1) * ROWS)
    return pd.DataFrame(
        {"k": [r * 7919 % 97 for r in rows], "v": list(rows), "made_on": get_worker().name}
    )


def label(part: pd.DataFrame) -> pd.DataFrame:
    return part.assign(shuffled_on=str(get_worker().name) if len(part) else "")


def expected_sums() -> dict[int, int]:
    sums: dict[int, int] = {}
    for r in range(N_PARTS * ROWS):
        sums[r * 7919 % 97] = sums.get(r * 7919 % 97, 0) + r
    return sums


def shuffle(client: Client) -> dict[str, Any]:
    """A dask dataframe shuffle on column k; where the rows were made and shuffled to."""
    meta = pd.DataFrame(
        {"k": pd.Series(dtype="int64"), "v": pd.Series(dtype="int64"), "made_on": "str"}
    )
    ddf = dd.from_map(make_part, range(N_PARTS), meta=meta)
    out = ddf.shuffle("k", npartitions=6).map_partitions(label, meta=meta.assign(shuffled_on="str"))
    df = client.compute(out).result(timeout=60)
    sums = {int(k): int(v) for k, v in df.groupby("k")["v"].sum().items()}
    assert sums == expected_sums()
    # each k is in one output partition only: it was shuffled
    assert df.groupby("k")["shuffled_on"].nunique().max() == 1
    return {
        "made_on": sorted(set(df["made_on"])),
        "shuffled_on": sorted(set(df["shuffled_on"])),
        "moved_between_workers": int((df["made_on"] != df["shuffled_on"]).sum()),
    }


def main(address: str) -> None:
    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        workers = sorted(client.scheduler_info()["workers"])
        # what Kubernetes' probes ask: the dashboard's /health, from another host
        host = address.rpartition("://")[2].rpartition(":")[0]
        with urllib.request.urlopen(f"http://{host}:8787/health", timeout=10) as r:
            health = r.read().decode()
        report("connected", workers=workers, health=health)
        assert dask.config.get("dataframe.shuffle.method") == "tasks"

        # 1. futures across both workers, and a dependency moved between them
        ran = client.gather(client.map(where, range(40), delay=0.02, pure=False))
        assert [r[0] for r in ran] == [x * x for x in range(40)]
        a, b = workers
        x = client.submit(operator.mul, 3, 4, workers=[a])
        y = client.submit(operator.mul, 5, 6, workers=[b])
        z = client.submit(operator.add, x, y, workers=[a])
        assert z.result(timeout=30) == 42
        report("futures", ran_on=sorted({r[1] for r in ran}), moved=z.result())
        del x, y, z

        # 2. a dask dataframe shuffle across both workers
        report("shuffle", **shuffle(client))

        # 3. a computation during which one worker's link is cut
        leaves = client.map(where, range(60), delay=0.15, pure=False)
        groups = [client.submit(total, *leaves[i : i + 6], pure=False) for i in range(0, 60, 6)]
        final = client.submit(lambda *g: sum(g), *groups, pure=False)
        names = set()
        for done, fut in enumerate(as_completed(leaves), 1):
            names.add(fut.result()[1])
            if done >= 12 and len(names) == 2:
                break
        print("CUT-NOW", flush=True)
        sys.stdin.readline()  # the test has cut the link
        unfinished = sum(not leaf.done() for leaf in leaves)
        assert final.result(timeout=60) == sum(i * i for i in range(60))
        remaining = sorted(client.scheduler_info()["workers"])
        report("cut", before=sorted(names), unfinished=unfinished, remaining=remaining)

        # 4. the cluster goes on with the workers left
        report("after", **shuffle(client))


if __name__ == "__main__":
    main(sys.argv[1])
