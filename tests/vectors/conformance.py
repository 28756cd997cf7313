"""Print the README's conformance table: per vector file, entries whose every test passed.

Usage: ``python -m tests.vectors.conformance`` (runs ``tests/vectors`` once; an entry counts
as passed only if every test that exercised it passed; xfail and skip count as not passed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "conformance.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:xdist",
                *sys.argv[1:],
                str(here),
                f"--conformance-json={out}",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        table = json.loads(out.read_text())
    print("| file | cipher suites | entries passed / total |")
    print("|---|---|---|")
    for name, row in table.items():
        suites = ", ".join(map(str, row["suites"])) or "none (suite-independent)"
        note = "" if row["run"] == row["total"] else f" ({row['total'] - row['run']} not run)"
        print(f"| {name}.json | {suites} | {row['passed']} / {row['total']}{note} |")
    complete = all(row["passed"] == row["total"] for row in table.values())
    return proc.returncode or (0 if complete else 1)


if __name__ == "__main__":
    raise SystemExit(main())
