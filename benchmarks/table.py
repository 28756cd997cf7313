"""``python -m benchmarks table results.json ...``: the Markdown table of docs/benchmarks.md
(and of the README).

One row per scenario and size: for crdt-mls and mls-rs the median wall-clock time (what the
caller waits for) and the median CPU time of the same calls (all threads of the process: the
O(n) operations use both cores, so their CPU time is above their wall time), the ratio
ours/peer, the crypto floor, and at 50,000 members the issue-5 goal with met/missed.  Ratio
and verdict are judged on wall time; the goals assume an otherwise idle machine, so wall
times measured while other processes compete for the cores overstate what a user waits for
(compare the CPU column).  Files written before the records switched to wall time
(``median_s`` = CPU, ``median_wall_s`` = wall) are read too (`benchmarks.plot.wall_cpu`).
"""

from __future__ import annotations

from typing import Any

from benchmarks.floor import floor_s
from benchmarks.harness import OURS, PEER
from benchmarks.plot import load, wall_cpu

#: issue 5 goals at 50,000 members (median wall seconds; replica_rss in bytes)
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


HEADER = (
    "| scenario | members | crdt-mls wall | crdt-mls CPU | mls-rs wall | mls-rs CPU | ours/peer (wall)"
    " | crypto floor | goal (50k, wall) | met? |"
)


def table(paths: list[str]) -> str:
    rows = load(paths)
    by: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["scenario"], r["members"]), {})[r["impl"]] = r
    out = [HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (scenario, n), impls in sorted(by.items()):
        ours, peer = impls.get(OURS), impls.get(PEER)
        goal = GOALS_50K.get(scenario) if n == 50_000 else None
        if scenario == "replica_rss":
            ow = _mb(ours["peak_rss_bytes"]) if ours else "-"
            pw = _mb(peer["peak_rss_bytes"]) if peer else "-"
            oc = pc = ratio = fl = "-"
            g = _mb(goal) if goal else ""
            met = "" if goal is None or ours is None else _verdict(ours["peak_rss_bytes"], goal)
        else:
            o_wall, o_cpu = wall_cpu(ours) if ours else (None, None)
            p_wall, p_cpu = wall_cpu(peer) if peer else (None, None)
            ow, oc, pw, pc = _t(o_wall), _t(o_cpu), _t(p_wall), _t(p_cpu)
            ratio = f"{o_wall / p_wall:.2f}" if o_wall is not None and p_wall else "-"
            g = _t(goal) if goal else ""
            met = "" if goal is None or o_wall is None else _verdict(o_wall, goal)
            fl = _t(floor_s(scenario, n))
        out.append(f"| {scenario} | {n:,} | {ow} | {oc} | {pw} | {pc} | {ratio} | {fl} | {g} | {met} |")
    return "\n".join(out)


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else f"missed x{value / goal:.1f}"
