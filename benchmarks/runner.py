"""The runner: every workload on every flavor, each in a process of its own, with a time limit.

The runner first copies ``shoal/`` and ``benchmarks/`` into a temporary folder and runs
every session from there, so that all of them measure the same code even while the work
tree changes under the run (the JSON records the commit and a hash of that copy). The
``shoal-compiled`` flavor is shoal with its state machines compiled by mypyc (what
``SHOAL_COMPILE=1 pip install .`` installs): the runner compiles a second copy with
``buildtools/shoal_build.py`` and runs that flavor's sessions from it.

For each workload and each flavor the runner starts ``python -m benchmarks.session`` in a
new session (process group), waits up to the workload's time limit, and reads back the
events it wrote. A session that outlives its limit has dumped every thread's stack to
its log a few seconds before; the runner then kills it and every process under it (by
pid), and keeps the repetitions it had finished. Then it prints the table and writes
the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import summarize, table
from benchmarks.workloads import CLUSTER_KWARGS, WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
#: The module each flavor imports, where it is not the flavor's own name.
MODULE_OF = {"shoal-compiled": "shoal"}
#: Flavors run when none is named; shoal-compiled only where it compiles.
DEFAULT_FLAVORS = ["shoal", "shoal-compiled", "distributed"]
RESULTS = Path(__file__).resolve().parent / "results"
#: the session's stacks go to its log this long before the runner kills it
STACKS_BEFORE_KILL = 10.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run shoal's benchmark workloads on shoal and on dask.distributed.",
    )
    parser.add_argument(
        "--flavor",
        action="append",
        help="shoal, shoal-compiled (its state machines compiled with mypyc) or distributed; "
        "or any module exporting Client, LocalCluster, wait (repeatable; default: all three, "
        "shoal-compiled where a C compiler is found)",
    )
    parser.add_argument(
        "--workload",
        action="append",
        choices=list(WORKLOADS),
        help="run only this workload (repeatable; default: all)",
    )
    parser.add_argument(
        "--repeat", type=int, help="timed repetitions after the warm-up (default: per workload)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "latest.json",
        help="where to write the results (default: benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds allowed to each workload on each flavor (default: per workload)",
    )
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument(
        "--show", type=Path, metavar="JSON", help="print the table of an earlier run and exit"
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.flavor_named = bool(args.flavor)
    args.flavor = list(dict.fromkeys(args.flavor or DEFAULT_FLAVORS))
    args.workload = list(dict.fromkeys(args.workload or WORKLOADS))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for wl in WORKLOADS.values():
            print(f"{wl.name:<20} {wl.description}")
        return 0
    if args.show:
        report = json.loads(args.show.read_text(encoding="utf-8"))
        print(f"{report['started']}: {describe_machine(report['machine'])}; {report['source']}")
        print(table(report))
        print(noise_line(report["results"]))
        print(f"whole run: {report['duration_s']:.0f} s")
        return 0
    args.json = args.json.resolve()  # sessions run from the snapshot's folder
    logs = args.json.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    t0 = time.perf_counter()
    print(f"shoal benchmarks on {describe_machine(machine())}; flavors: {', '.join(args.flavor)}")
    print(f"cluster: LocalCluster({', '.join(f'{k}={v!r}' for k, v in CLUSTER_KWARGS.items())})")
    source = source_state()
    results = []
    problems = []
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        snapshot = Path(tmp) / "plain"
        copy_sources(snapshot)
        source["snapshot_sha256"] = tree_hash(snapshot / "shoal")
        print(
            f"shoal from commit {source['commit'][:10]}"
            + (" + uncommitted changes" if source["shoal_dirty"] else "")
            + f", copied to {snapshot}"
        )
        folders = {flavor: snapshot for flavor in args.flavor}
        if "shoal-compiled" in args.flavor:
            compiled = Path(tmp) / "compiled"
            copy_sources(compiled)
            error, source["compile_s"] = compile_copy(compiled, logs / "compile.log")
            if error is None:
                folders["shoal-compiled"] = compiled
                print(f"shoal-compiled: state machines compiled in {source['compile_s']:.0f} s")
            else:
                args.flavor.remove("shoal-compiled")
                print(f"shoal-compiled left out: {error}")
                if args.flavor_named:
                    problems.append(f"shoal-compiled: {error}")
        for name in args.workload:
            for flavor in args.flavor:
                result = run_session(name, flavor, args, logs, folders[flavor])
                results.append(result)
                print(progress_line(result), flush=True)
    duration = time.perf_counter() - t0
    report = {
        "started": datetime.datetime.fromtimestamp(started).astimezone().isoformat(),
        "duration_s": round(duration, 1),
        "command": [Path(sys.executable).name, "-m", "benchmarks", *(argv or sys.argv[1:])],
        "machine": machine(),
        "source": source,
        "cluster": CLUSTER_KWARGS,
        "options": {"quick": args.quick, "repeat": args.repeat, "timeout": args.timeout},
        "flavors": args.flavor,
        "workloads": {
            name: {
                "description": WORKLOADS[name].description,
                "metrics": [vars(m) for m in WORKLOADS[name].metrics],
            }
            for name in args.workload
        },
        "results": results,
    }
    report["comparison"] = summarize(report)
    print()
    print(table(report))
    print(noise_line(results))
    for r in results:
        if r["flavor"] != "distributed" and r.get("distributed_imported"):
            print(f"note: the {r['flavor']} session of {r['workload']} imported distributed")
    failures = [r for r in results if r["status"] != "ok"]
    for r in failures:
        print(f"\n{r['workload']} on {r['flavor']}: {r['status']} (log: {r['log']})")
        if r.get("error"):
            print(r["error"].rstrip())
        elif r.get("stderr_tail"):
            print(r["stderr_tail"].rstrip())
    for problem in problems:
        print(f"\n{problem}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\nwhole run: {duration:.0f} s; results in {args.json}")
    return 1 if failures or problems else 0


def copy_sources(folder: Path) -> None:
    """Copy ``shoal/`` and ``benchmarks/`` into ``folder``: sources only, no build outputs."""
    for package in ("shoal", "benchmarks"):
        shutil.copytree(
            ROOT / package,
            folder / package,
            ignore=shutil.ignore_patterns("__pycache__", "results", "*.so"),
        )


def compile_copy(folder: Path, log_path: Path) -> tuple[str | None, float]:
    """Compile the state machines in ``folder`` (a copy); why it failed, if so, and seconds.

    mypyc's output goes to ``log_path``.
    """
    cmd = [sys.executable, str(ROOT / "buildtools" / "shoal_build.py"), str(folder)]
    print("shoal-compiled: compiling the state machines with mypyc ...", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=900)
        except subprocess.TimeoutExpired:
            return f"mypyc ran over 900 s (log: {log_path})", time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        last = tail(log_path, 1).strip()
        return (
            f"mypyc failed ({last}; log: {log_path}); it needs mypy (the bench extra has it), "
            "a C compiler and Python's headers (apt install gcc python3-dev)",
            seconds,
        )
    return None, seconds


def run_session(
    name: str, flavor: str, args: argparse.Namespace, logs: Path, cwd: Path
) -> dict[str, Any]:
    """Run one workload on one flavor in a new process; what it reported, and how it ended.

    The session runs in ``cwd`` (the snapshot), which comes first on its import path.
    """
    wl = WORKLOADS[name]
    limit = args.timeout if args.timeout is not None else wl.timeout
    events_path = logs / f"{name}-{flavor}.jsonl"
    log_path = logs / f"{name}-{flavor}.log"
    events_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.session", "--workload", name]
    cmd += ["--flavor", MODULE_OF.get(flavor, flavor)]
    cmd += ["--out", str(events_path), "--dump-stacks-after", str(limit - STACKS_BEFORE_KILL)]
    if args.repeat is not None:
        cmd += ["--repeat", str(args.repeat)]
    if args.quick:
        cmd.append("--quick")
    t0 = time.perf_counter()
    cpu0 = cpu_seconds()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        timed_out = False
        try:
            returncode = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_tree(proc.pid)
            returncode = proc.wait()
        leftovers = kill_group(proc.pid)
    elapsed = time.perf_counter() - t0
    busy, own = (b - a for a, b in zip(cpu0, cpu_seconds()))
    result = collect(events_path)
    result.update(
        workload=name,
        flavor=flavor,
        returncode=returncode,
        elapsed_s=round(elapsed, 2),
        time_limit_s=limit,
        log=str(log_path),
        leftover_processes=leftovers,
        cpu_s=round(own, 1),
        others_cores=round(max(0.0, busy - own) / elapsed, 2),
    )
    if MODULE_OF.get(flavor, flavor) == "shoal":
        wanted = flavor == "shoal-compiled"
        for side in ("compiled", "workers_compiled"):
            if side in result and bool(result[side]) != wanted:
                who = "session" if side == "compiled" else "session's workers"
                have = "with" if result[side] else "without"
                wrong = f"the {flavor} {who} ran {have} compiled modules"
                result["error"] = "\n".join(filter(None, [result["error"], wrong]))
    if timed_out:
        result["status"] = f"timed out after {limit:.0f} s"
    elif result.get("error") or returncode != 0:
        result["status"] = "failed"
    else:
        result["status"] = "ok"
    if result["status"] != "ok":
        result["stderr_tail"] = tail(log_path, 120)
    return result


def collect(events_path: Path) -> dict[str, Any]:
    """Fold a session's events into one result."""
    result: dict[str, Any] = {"warmup": None, "samples": [], "info": {}, "error": None}
    if not events_path.exists():
        return result
    errors = []
    for line in events_path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        kind = event.pop("event")
        if kind == "start":
            result.update(event)
        elif kind == "cluster":
            result["cluster_start_s"] = event["seconds"]
        elif kind == "workers":
            result["worker_module_files"] = event["module_files"]
            result["workers_compiled"] = event.get("compiled", [])
        elif kind == "sample":
            if event["warmup"]:
                result["warmup"] = event["metrics"]
            else:
                result["samples"].append(event["metrics"])
        elif kind == "error":
            errors.append(event["traceback"])
        elif kind == "end":
            result["info"] = event["info"]
            result["distributed_imported"] = event["distributed_imported"]
            result["compiled"] = event.get("compiled", [])
    result["error"] = "\n".join(errors) or None
    return result


def kill_tree(pid: int) -> None:
    """Kill a session and every process under it, by pid, children first."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def kill_group(pgid: int) -> list[str]:
    """Kill what is left of a finished session's process group; describe what was."""
    import psutil

    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(p.pid) == pgid and p.pid != os.getpid():
                left.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])[:200]}")
                p.kill()
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return left


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far: by the whole machine, and by this process's children.

    A session's own use is the second's growth (it waits for its workers, so theirs is
    in it); what the machine used beyond that went to other programs, which the run
    reports as noise (``others_cores``: the average number of cores they kept busy).
    """
    import resource

    import psutil

    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, children.ru_utime + children.ru_stime


def tree_hash(folder: Path) -> str:
    """SHA-256 over the paths and contents of the .py files under ``folder``."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def tail(path: Path, lines: int) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


def progress_line(r: dict[str, Any]) -> str:
    n = len(r["samples"])
    first = next(iter(r["samples"][0].items())) if n else None
    shown = f"{first[0]} {first[1]:,.3g}" if first else "no samples"
    return (
        f"  {r['workload']:<20} {r['flavor']:<14} {r['status']:<22} "
        f"{n} rep(s), {r['elapsed_s']:.1f} s; {shown}; other programs kept "
        f"{r['others_cores']:.2f} cores busy"
    )


def noise_line(results: list[dict[str, Any]]) -> str:
    """How busy other programs kept the machine while the sessions ran."""
    if not results:
        return ""
    total = sum(r["elapsed_s"] for r in results)
    mean = sum(r["others_cores"] * r["elapsed_s"] for r in results) / max(total, 1e-9)
    worst = max(results, key=lambda r: r["others_cores"])
    return (
        f"other programs on this machine kept {mean:.2f} cores busy on average during the "
        f"sessions (most: {worst['others_cores']:.2f}, during {worst['workload']} on "
        f"{worst['flavor']})"
    )


def machine() -> dict[str, Any]:
    """The cores and memory of this machine."""
    import platform

    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def describe_machine(m: dict[str, Any]) -> str:
    return f"{m['cpus']} CPUs, {m['memory_bytes'] / 2**30:.0f} GiB, Python {m['python']}"


def source_state() -> dict[str, Any]:
    """The commit benchmarked, and whether shoal/ had uncommitted changes."""

    def git(*a: str) -> str:
        try:
            out = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "shoal_dirty": bool(git("status", "--porcelain", "--", "shoal")),
    }
