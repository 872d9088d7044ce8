"""Statistics over the timed repetitions, and the side-by-side table."""

from __future__ import annotations

import statistics
from typing import Any


def stats(values: list[float]) -> dict[str, float] | None:
    """Median, min, max and count of the timed repetitions (the warm-up is left out)."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def baseline(flavors: list[str]) -> str | None:
    """The flavor the others are compared with: distributed, else the last one named."""
    if len(flavors) < 2:
        return None
    return "distributed" if "distributed" in flavors else flavors[-1]


def summarize(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per workload and metric: each flavor's stats, and how they compare.

    ``vs`` holds, for each flavor but the :func:`baseline`, ``ratio`` (its median over
    the baseline's: shoal/distributed), ``better`` (the flavor whose median is better,
    given the metric's direction) and ``factor`` (by how much, always >= 1).
    """
    flavors = report["flavors"]
    base = baseline(flavors)
    by_key = {(r["workload"], r["flavor"]): r for r in report["results"]}
    rows = []
    for name, wl in report["workloads"].items():
        for metric in wl["metrics"]:
            row: dict[str, Any] = {
                "workload": name,
                "metric": metric["key"],
                "unit": metric["unit"],
                "higher_is_better": metric["higher_is_better"],
                "baseline": base,
                "vs": {},
            }
            for flavor in flavors:
                r = by_key.get((name, flavor))
                values = [s[metric["key"]] for s in r["samples"] if metric["key"] in s] if r else []
                row[flavor] = stats(values)
            b = row.get(base) if base else None
            for flavor in flavors:
                a = row[flavor]
                if flavor == base or not (a and b and a["median"] > 0 and b["median"] > 0):
                    continue
                ratio = a["median"] / b["median"]
                first_better = (ratio >= 1) == metric["higher_is_better"]
                row["vs"][flavor] = {
                    "ratio": ratio,
                    "better": flavor if first_better else base,
                    "factor": ratio if ratio >= 1 else 1 / ratio,
                }
            rows.append(row)
    return rows


def fmt(value: float) -> str:
    """Three significant digits, thousands separated."""
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cell(s: dict[str, float] | None, status: str) -> str:
    if s is None:
        return "-" if status == "ok" else status.split(" after")[0].upper()
    text = fmt(s["median"])
    if s["n"] > 1:
        text += f" [{fmt(s['min'])}..{fmt(s['max'])}]"
    if status != "ok":
        text += " *"
    return text


def table(report: dict[str, Any]) -> str:
    """The comparison as an aligned text table, with a legend."""
    flavors = report["flavors"]
    base = baseline(flavors)
    compared = [f for f in flavors if base and f != base]
    status = {(r["workload"], r["flavor"]): r["status"] for r in report["results"]}
    counts = {(r["workload"], r["flavor"]): len(r["samples"]) for r in report["results"]}
    header = ["workload", "metric", "unit", "better"]
    header += [f"{f} median [min..max]" for f in flavors]
    header += ["n"]
    for f in compared:
        header += [f"{f}/{base}", "verdict"]
    lines = [header]
    for row in summarize(report):
        name = row["workload"]
        line = [name, row["metric"], row["unit"], "higher" if row["higher_is_better"] else "lower"]
        line += [cell(row[f], status.get((name, f), "ok")) for f in flavors]
        ns = [str(row[f]["n"]) if row[f] else str(counts.get((name, f), 0)) for f in flavors]
        line.append(ns[0] if len(set(ns)) == 1 else "/".join(ns))
        for f in compared:
            vs = row["vs"].get(f)
            line += (
                [f"{vs['ratio']:.3g}", f"{vs['better']} {vs['factor']:.2f}x"] if vs else ["", ""]
            )
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    verdicts = {i for i, h in enumerate(header) if h == "verdict"}
    out = []
    for i, line in enumerate(lines):
        cells = [
            c.rjust(w) if j >= 4 and j not in verdicts else c.ljust(w)
            for j, (c, w) in enumerate(zip(line, widths))
        ]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    legend = [
        "",
        "median over the timed repetitions ([min..max] when more than one); the warm-up is not "
        "counted; n = repetitions.",
    ]
    if compared:
        legend.append(
            f"X/{base} = ratio of the medians; with 'better' = higher it favors X above 1, "
            "with 'better' = lower below 1; the verdict names the better flavor and by how "
            "many times."
        )
    if "shoal-compiled" in flavors:
        legend.append(
            "shoal-compiled = shoal with its scheduler's and workers' state machines compiled "
            "by mypyc (SHOAL_COMPILE=1 pip install .)."
        )
    if any(s != "ok" for s in status.values()):
        legend.append(
            "* = the session failed or timed out; the numbers are its finished repetitions."
        )
    return "\n".join(out + legend)
