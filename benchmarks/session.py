"""One workload on one flavor, in a process of its own; the runner starts it.

``python -m benchmarks.session --workload NAME --flavor MOD --out EVENTS.jsonl ...``
starts the flavor's ``LocalCluster`` (unless the workload starts its own), runs the
workload, and appends one JSON line per event to ``--out`` as it goes, so that the runner
keeps the repetitions done before a hang or a crash:

- ``start``: versions of the flavor and its libraries;
- ``cluster``: seconds to start the cluster and connect;
- ``sample``: one run's metrics (the first is the warm-up);
- ``error``: the traceback of an exception out of the workload;
- ``workers``: where the workers imported the flavor from, and which of its modules they
  imported compiled;
- ``end``: what the workload recorded (``info``), whether ``distributed`` got imported,
  and which of the flavor's modules were compiled extensions (``shoal-compiled``'s).

With ``--dump-stacks-after S``, every thread's stack goes to stderr after S seconds
(faulthandler), so a run the runner has to kill says where it hung.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import importlib.machinery
import json
import sys
import traceback
from importlib.metadata import version
from time import perf_counter
from typing import Any

from benchmarks.workloads import CLUSTER_KWARGS, WORKLOADS, Bench


def versions(flavor: str) -> dict[str, str]:
    names = dict.fromkeys([flavor, "dask", "numpy", "pandas", "pyarrow", "msgpack", "tornado"])
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except Exception:
            continue
    found["python"] = sys.version.split()[0]
    return found


def module_file(name: str) -> str:
    """Where a worker imported the flavor from (the runner's snapshot, for shoal)."""
    return str(importlib.import_module(name).__file__)


def compiled_modules(package: str) -> list[str]:
    """The modules of ``package`` this process imported as C extensions."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if (name == package or name.startswith(package + "."))
        and isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.session")
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--flavor", required=True)
    parser.add_argument("--repeat", type=int, default=None, help="default: the workload's")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dump-stacks-after", type=float, default=0)
    args = parser.parse_args(argv)

    with open(args.out, "a", encoding="utf-8") as out:

        def emit(event: str, **fields: Any) -> None:
            out.write(json.dumps({"event": event, **fields}, default=str) + "\n")
            out.flush()

        if args.dump_stacks_after > 0:
            faulthandler.dump_traceback_later(args.dump_stacks_after, exit=False)
        wl = WORKLOADS[args.workload]
        mod = importlib.import_module(args.flavor)
        emit("start", versions=versions(args.flavor), module=mod.__file__)
        repeat = wl.repeat if args.repeat is None else args.repeat
        bench = Bench(mod=mod, quick=args.quick, repeat=repeat)
        cluster = client = None
        status = 0
        try:
            if not wl.own_cluster:
                t0 = perf_counter()
                cluster = mod.LocalCluster(**CLUSTER_KWARGS)
                client = bench.client = mod.Client(cluster)
                emit("cluster", seconds=perf_counter() - t0)
                where = client.run(module_file, args.flavor)
                compiled = client.run(compiled_modules, args.flavor)
                emit(
                    "workers",
                    module_files=sorted(set(where.values())),
                    compiled=sorted({m for names in compiled.values() for m in names}),
                )
            for i, sample in enumerate(wl.fn(mod, bench)):
                emit("sample", warmup=i == 0, metrics=sample)
        except BaseException:
            emit("error", traceback=traceback.format_exc())
            status = 1
        finally:
            try:
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()
            except BaseException:
                emit("error", traceback="closing the cluster:\n" + traceback.format_exc())
                status = 1
            emit(
                "end",
                info=bench.info,
                distributed_imported="distributed" in sys.modules,
                compiled=compiled_modules(args.flavor),
            )
        faulthandler.cancel_dump_traceback_later()
    return status


if __name__ == "__main__":
    sys.exit(main())
