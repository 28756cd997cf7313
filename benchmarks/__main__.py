"""``python -m benchmarks <scenario|all|plot> [--members N ...] [--impl ours|peer|both] [--json FILE]``.

Each (group size, implementation) runs in its own child process, so ``peak_rss_bytes`` is that
run's own peak and one failure does not lose the other results.  Results are written to the
JSON file after every finished run: ``{"results": [records]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks.harness import OURS, PEER, Record, log
from benchmarks.scenarios import GROUP_SCENARIOS

DEFAULT_SIZES = (1000, 10_000, 50_000)
#: the Replica facade end to end over SQLite (benchmarks.replica_bench), crdt-mls only
REPLICA = "replica"
COMMANDS = (*GROUP_SCENARIOS, "sync_10k", REPLICA, "all", "plot", "table", "combine")


def _child(args: argparse.Namespace) -> None:
    """Run one implementation at one size in this process and write the records as JSON lines."""
    records: list[Record] = []

    def emit(r: Record) -> None:
        records.append(r)
        log(
            f"  {r.impl:9s} {r.scenario:22s} n={r.members:<6d} median {r.median_s * 1000:11.3f} ms wall"
            f" {r.median_cpu_s * 1000:11.3f} ms CPU  ({r.samples} samples)"
        )
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(r.to_json()) + "\n")

    wanted = args.scenarios.split(",")
    force = args.progress
    if args.impl == OURS:
        group = [s for s in wanted if s in GROUP_SCENARIOS]
        if group:
            from benchmarks.impl_ours import OursImpl
            from benchmarks.scenarios import run_group

            run_group(OursImpl(args.n), group, emit, force_progress=force, reps=args.reps)
        if "sync_10k" in wanted:
            from benchmarks.sync_bench import run_sync

            run_sync(emit, force_progress=force)
        if REPLICA in wanted:
            from benchmarks.replica_bench import run_replica

            run_replica(args.n, emit, reps=args.reps, force_progress=force)
    else:
        from benchmarks.impl_peer import PeerImpl
        from benchmarks.scenarios import run_group

        group = [s for s in wanted if s in GROUP_SCENARIOS and s not in ("full_commit", "merge")]
        if group:
            run_group(PeerImpl(args.n), group, emit, force_progress=force, reps=args.reps)


def _run_child(impl: str, n: int, scenarios: list[str], progress: bool, reps: int | None) -> list[dict[str, Any]]:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        out = f.name
    cmd = [sys.executable, "-m", "benchmarks", "_child", "--impl", impl, "--n", str(n)]
    cmd += ["--scenarios", ",".join(scenarios), "--out", out]
    if progress:
        cmd.append("--progress")
    if reps:
        cmd += ["--reps", str(reps)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rc = subprocess.run(cmd, cwd=root).returncode
        with open(out, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    finally:
        os.unlink(out)
    if rc != 0:
        log(f"!! {impl} n={n} exited with status {rc}; kept {len(rows)} records")
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("command", help=f"one of {', '.join(COMMANDS)}, or a comma-separated list of scenarios")
    ap.add_argument("inputs", nargs="*", help="plot/table/combine: result JSON files")
    ap.add_argument("--members", type=int, nargs="+", default=list(DEFAULT_SIZES), help="group sizes")
    ap.add_argument("--impl", choices=("ours", "peer", "both", OURS, PEER), default="both")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--png", default="docs/benchmarks.png", help="plot: output image")
    ap.add_argument("--reps", type=int, help="samples per path operation (default: 7 / 5 / 3 by size)")
    ap.add_argument("--progress", action="store_true", help="draw progress bars even when not on a terminal")
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--scenarios", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    names = args.command.split(",")
    bad = [c for c in names if c not in (*COMMANDS, "_child")]
    if bad or (len(names) > 1 and not set(names) <= {*GROUP_SCENARIOS, "sync_10k", REPLICA}):
        ap.error(f"unknown command {args.command!r}; choose from {', '.join(COMMANDS)}")

    if args.command == "_child":
        args.impl = OURS if args.impl in ("ours", OURS) else PEER
        _child(args)
        return 0
    if args.command == "table":
        from benchmarks.table import table

        print(table(args.inputs or ["results.json"]))
        return 0
    if args.command == "combine":
        from benchmarks.combine import combine

        if not args.json:
            ap.error("combine writes its result with --json FILE")
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"results": combine(args.inputs)}, f, indent=1)
        return 0
    if args.command == "plot":
        from benchmarks.plot import plot

        plot(args.inputs or ["results.json"], args.png)
        return 0

    scenarios = [*GROUP_SCENARIOS, "sync_10k", REPLICA] if args.command == "all" else names
    impls = {"ours": [OURS], OURS: [OURS], "peer": [PEER], PEER: [PEER], "both": [OURS, PEER]}[args.impl]
    if PEER in impls:
        from benchmarks.impl_peer import available

        if not available():
            log("mls_rs_uniffi is not installed (pip install 'crdt-mls[bench]'): the peer is not run")
            impls = [i for i in impls if i != PEER]
    results: list[dict[str, Any]] = []

    def save() -> None:
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"results": results}, f, indent=1)

    if "sync_10k" in scenarios and OURS in impls:
        log("== crdt-mls sync_10k")
        results += _run_child(OURS, 10_000, ["sync_10k"], args.progress, args.reps)
        save()
    group = [s for s in scenarios if s != "sync_10k"]
    if group:
        for n in args.members:
            for impl in impls:
                todo = [s for s in group if not (impl == PEER and s in ("full_commit", "merge", REPLICA))]
                if not todo:
                    continue
                log(f"== {impl} n={n}: {', '.join(todo)}")
                results += _run_child(impl, n, todo, args.progress, args.reps)
                save()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
