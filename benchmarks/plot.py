"""``python -m benchmarks plot results.json [--png docs/benchmarks.png]``: log-log scaling curves.

One panel per operation: crdt-mls (solid), mls-rs (dashed) and the crypto floor (dotted)
against the group size; median wall-clock seconds.  Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from benchmarks.floor import floor_s
from benchmarks.harness import OURS, PEER, log


def load(paths: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            rows += json.load(f)["results"]
    return rows


def wall_cpu(record: dict[str, Any]) -> tuple[float, float | None]:
    """(wall, CPU) median seconds of a JSON record.  Current records: ``median_s`` is wall
    time and ``median_cpu_s`` CPU time; earlier files had ``median_s`` = CPU time and
    ``median_wall_s`` = wall time (read the same way here)."""
    if "median_cpu_s" in record:
        return float(record["median_s"]), float(record["median_cpu_s"])
    if "median_wall_s" in record:
        return float(record["median_wall_s"]), float(record["median_s"])
    return float(record["median_s"]), None


def plot(paths: list[str], png: str) -> None:
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    rows = [r for r in load(paths) if not r["scenario"].endswith("_rss")]  # memory, not time
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        series[r["scenario"]][r["impl"]].append((r["members"], wall_cpu(r)[0]))
    names = sorted(series)
    cols = 4
    rws = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rws, cols, figsize=(4 * cols, 3.2 * rws), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        sizes: set[int] = set()
        for impl, style in ((OURS, "-o"), (PEER, "--s")):
            pts = sorted(series[name].get(impl, []))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=impl)
                sizes |= {p[0] for p in pts}
        fl = sorted((n, f) for n in sizes if (f := floor_s(name, n)) is not None)
        if fl:
            ax.plot([p[0] for p in fl], [p[1] for p in fl], ":", color="grey", label="crypto floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("members" if name != "sync_10k" else "operations", fontsize=8)
        ax.set_ylabel("median wall seconds", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=60)
    log(f"wrote {png}")
