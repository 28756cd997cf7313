"""`benchmarks.combine`: several benchmark runs merged into medians over the runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.combine import combine


def _run(path: Path, medians: dict[tuple[str, str], float], rss: int = 100) -> str:
    records = [
        {
            "scenario": scenario,
            "members": 1000,
            "impl": impl,
            "median_s": m,
            "min_s": m / 2,
            "max_s": m * 2,
            "median_cpu_s": m * 1.5,
            "min_cpu_s": m,
            "max_cpu_s": m * 3,
            "peak_rss_bytes": rss,
            "samples": 3,
        }
        for (scenario, impl), m in medians.items()
    ]
    path.write_text(json.dumps({"results": records}))
    return str(path)


def test_combined_records_are_medians_over_runs(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path / "a.json", {("join", "crdt-mls"): 3.0, ("join", "mls-rs"): 9.0}, rss=10),
        _run(tmp_path / "b.json", {("join", "crdt-mls"): 1.0, ("join", "mls-rs"): 7.0}, rss=30),
        _run(tmp_path / "c.json", {("join", "crdt-mls"): 2.0}, rss=20),
    ]
    out = {(r["scenario"], r["impl"]): r for r in combine(runs)}
    ours, peer = out[("join", "crdt-mls")], out[("join", "mls-rs")]
    assert ours["median_s"] == 2.0 and ours["runs"] == 3 and ours["run_medians_s"] == [3.0, 1.0, 2.0]
    assert ours["min_s"] == 0.5 and ours["max_s"] == 6.0 and ours["median_cpu_s"] == 3.0
    assert ours["peak_rss_bytes"] == 30 and ours["samples"] == 9
    assert peer["median_s"] == 8.0 and peer["runs"] == 2


def test_a_run_with_duplicate_records_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "dup.json"
    rec = {
        "scenario": "join",
        "members": 1,
        "impl": "crdt-mls",
        "median_s": 1,
        "min_s": 1,
        "max_s": 1,
        "peak_rss_bytes": 1,
    }
    p.write_text(json.dumps({"results": [rec, rec]}))
    with pytest.raises(ValueError, match="two records"):
        combine([str(p)])
    with pytest.raises(ValueError, match="at least one"):
        combine([])
