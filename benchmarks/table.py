"""``python -m benchmarks table results.json ...``: the Markdown table of docs/benchmarks.md.

One row per scenario and size: crdt-mls and mls-rs medians (CPU seconds, all threads of the
process), crdt-mls's wall-clock median next to it (the O(n) operations use both cores, so
their wall time is below their CPU time), the ratio ours/peer, the crypto floor, and at
50,000 members the issue-5 goal with met/missed.  Ratio and verdict use the time the caller
waits on an idle machine: the smaller of CPU and wall (CPU for single-threaded steps, where
wall only adds other processes' load; wall for threaded ones).
"""

from __future__ import annotations

from typing import Any

from benchmarks.floor import floor_s
from benchmarks.harness import OURS, PEER
from benchmarks.plot import load

#: issue 5 goals at 50,000 members (median seconds; replica_rss in bytes)
GOALS_50K: dict[str, float] = {
    "full_commit_create": 5e-3,
    "full_commit_process": 2e-3,
    "steady_commit_create": 10e-3,
    "steady_commit_process": 3e-3,
    "sparse_commit_create": 3.1,
    "sparse_commit_process": 0.25,
    "add_one": 5e-3,
    "remove_one": 10e-3,
    "join": 3.5,
    "create_add_all": 7.5,
    "merge_2": 20e-3,
    "app_message": 0.2e-3,
    "replica_rss": 400e6,
}


def _t(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def _mb(b: float) -> str:
    return f"{b / 1e6:.0f} MB"


def table(paths: list[str]) -> str:
    rows = load(paths)
    by: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["scenario"], r["members"]), {})[r["impl"]] = r
    out = [
        "| scenario | members | crdt-mls CPU | crdt-mls wall | mls-rs | ours/peer | crypto floor | goal (50k) | met? |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (scenario, n), impls in sorted(by.items()):
        ours, peer = impls.get(OURS), impls.get(PEER)
        goal = GOALS_50K.get(scenario) if n == 50_000 else None
        if scenario == "replica_rss":
            o = _mb(ours["peak_rss_bytes"]) if ours else "-"
            ow = "-"
            p = _mb(peer["peak_rss_bytes"]) if peer else "-"
            ratio = "-"
            g = _mb(goal) if goal else ""
            met = "" if goal is None or ours is None else _verdict(ours["peak_rss_bytes"], goal)
            fl = "-"
        else:
            o = _t(ours["median_s"]) if ours else "-"
            ow = _t(ours.get("median_wall_s")) if ours else "-"
            p = _t(peer["median_s"]) if peer else "-"
            waited = _waited(ours) if ours else None
            ratio = f"{waited / _waited(peer):.2f}" if waited is not None and peer else "-"
            g = _t(goal) if goal else ""
            met = "" if goal is None or waited is None else _verdict(waited, goal)
            fl = _t(floor_s(scenario, n))
        out.append(f"| {scenario} | {n:,} | {o} | {ow} | {p} | {ratio} | {fl} | {g} | {met} |")
    return "\n".join(out)


def _waited(record: dict[str, Any]) -> float:
    """The time a caller waits on an idle machine: min(CPU, wall) median (see module docstring)."""
    cpu = float(record["median_s"])
    wall = record.get("median_wall_s")
    return cpu if wall is None else min(cpu, float(wall))


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else f"missed x{value / goal:.1f}"
