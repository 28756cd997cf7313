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
    "replica_load_rss": 400e6,
}

#: issue 5 goals for the ratio ours/mls-rs at 50,000 members (wall medians, side by side)
RATIO_GOALS_50K: dict[str, float] = {
    "steady_commit_create": 1 / 100,
    "steady_commit_process": 1 / 100,
    "sparse_commit_create": 1.0,
    "sparse_commit_process": 1 / 2,
    "add_one": 1 / 100,
    "remove_one": 1 / 100,
    "join": 1.0,
    "create_add_all": 1.0,
    "app_message": 1.0,
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
    " | ratio goal | crypto floor | goal (50k, wall) | met? |"
)


def table(paths: list[str]) -> str:
    rows = load(paths)
    by: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["scenario"], r["members"]), {})[r["impl"]] = r
    out = [HEADER, "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for (scenario, n), impls in sorted(by.items()):
        ours, peer = impls.get(OURS), impls.get(PEER)
        goal = GOALS_50K.get(scenario) if n == 50_000 else None
        if scenario.endswith("_rss"):
            ow = _mb(ours["peak_rss_bytes"]) if ours else "-"
            pw = _mb(peer["peak_rss_bytes"]) if peer else "-"
            oc = pc = ratio = fl = "-"
            rgoal = ""
            g = _mb(goal) if goal else ""
            met = "" if goal is None or ours is None else _verdict(ours["peak_rss_bytes"], goal)
        else:
            o_wall, o_cpu = wall_cpu(ours) if ours else (None, None)
            p_wall, p_cpu = wall_cpu(peer) if peer else (None, None)
            ow, oc, pw, pc = _t(o_wall), _t(o_cpu), _t(p_wall), _t(p_cpu)
            ratio = _ratio(o_wall / p_wall) if o_wall is not None and p_wall else "-"
            rg = RATIO_GOALS_50K.get(scenario) if n == 50_000 else None
            rgoal = ""
            if rg is not None:
                rgoal = f"<= {_ratio(rg)}"
                if o_wall is not None and p_wall:
                    rgoal += ": " + ("met" if o_wall / p_wall <= rg else f"missed x{o_wall / p_wall / rg:.1f}")
            g = _t(goal) if goal else ""
            met = "" if goal is None or o_wall is None else _verdict(o_wall, goal)
            fl = _t(floor_s(scenario, n))
        out.append(f"| {scenario} | {n:,} | {ow} | {oc} | {pw} | {pc} | {ratio} | {rgoal} | {fl} | {g} | {met} |")
    return "\n".join(out)


def _verdict(value: float, goal: float) -> str:
    if value <= goal:
        return "met"
    over = value / goal
    return f"missed by {(over - 1) * 100:.0f}%" if over < 2 else f"missed x{over:.1f}"


def _ratio(r: float) -> str:
    """A ratio as ``0.58`` or, below 0.1, as ``1/596``."""
    return f"{r:.2f}" if r >= 0.1 or r <= 0 else f"1/{1 / r:.0f}"
