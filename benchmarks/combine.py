"""``python -m benchmarks combine run1.json run2.json ... --json combined.json``: several whole
runs of the same scenarios merged into one result file whose records are the **median over
the runs** of each run's median (one record per scenario, size and implementation, in the
usual format), for machines whose speed drifts between runs by more than the effects measured.

Per record: ``median_s`` / ``median_cpu_s`` = median of the runs' medians; ``min_s`` /
``max_s`` (and the CPU ones) = the extremes over all runs' samples; ``peak_rss_bytes`` = the
largest; ``samples`` = their sum; ``runs`` = how many runs had the record; ``run_medians_s`` =
each run's wall median, in input order.  Ratios computed from a combined file compare medians
of runs that were each measured side by side.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.plot import load

Key = tuple[str, int, str]


def combine(paths: list[str]) -> list[dict[str, Any]]:
    """The combined records of the result files ``paths`` (see the module docstring)."""
    if not paths:
        raise ValueError("combine needs at least one result file")
    groups: dict[Key, list[dict[str, Any]]] = {}
    for p in paths:
        seen: set[Key] = set()
        for r in load([p]):
            key = (r["scenario"], int(r["members"]), r["impl"])
            if key in seen:
                raise ValueError(f"{p} has two records for {key}")
            seen.add(key)
            groups.setdefault(key, []).append(r)
    out: list[dict[str, Any]] = []
    for (scenario, members, impl), recs in sorted(groups.items()):
        rec: dict[str, Any] = {
            "scenario": scenario,
            "members": members,
            "impl": impl,
            "median_s": statistics.median(r["median_s"] for r in recs),
            "min_s": min(r["min_s"] for r in recs),
            "max_s": max(r["max_s"] for r in recs),
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in recs),
            "samples": sum(int(r.get("samples", 1)) for r in recs),
            "runs": len(recs),
            "run_medians_s": [r["median_s"] for r in recs],
        }
        if all("median_cpu_s" in r for r in recs):
            rec["median_cpu_s"] = statistics.median(r["median_cpu_s"] for r in recs)
            rec["min_cpu_s"] = min(r["min_cpu_s"] for r in recs)
            rec["max_cpu_s"] = max(r["max_cpu_s"] for r in recs)
        out.append(rec)
    return out
