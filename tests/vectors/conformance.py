"""Print the README's conformance table: entries passed / total per vector file.

Usage: ``python -m tests.vectors.conformance`` (runs the vector tests with a JUnit report
and counts outcomes per test file; an xfail counts as not passed).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from tests.vectors.loader import DATA, load

# vector file -> test module that runs it
FILES = {
    "tree-math": "test_tree_math",
    "deserialization": "test_deserialization",
    "crypto-basics": "test_crypto_basics",
    "secret-tree": "test_secret_tree",
    "message-protection": "test_message_protection",
    "key-schedule": "test_key_schedule",
    "psk_secret": "test_psk_secret",
    "transcript-hashes": "test_transcript_hashes",
    "welcome": "test_welcome",
    "tree-operations": "test_tree_operations",
    "tree-validation": "test_tree_validation",
    "treekem": "test_treekem",
    "messages": "test_messages",
    "passive-client-welcome": "test_passive_client",
    "passive-client-handling-commit": "test_passive_client",
    "passive-client-random": "test_passive_client",
}


def main() -> int:
    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here), f"--junitxml={report}"],
            check=False,
            stdout=subprocess.DEVNULL,
        )
        tree = ET.parse(report)
    passed: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for case in tree.iter("testcase"):
        name = case.get("name", "")
        module = case.get("classname", "").split(".")[-1]
        key = f"{module}::{name}"
        seen[key.split("[")[0] + "[" + name.split("[", 1)[-1]] += 1
        ok = not any(child.tag in ("failure", "error", "skipped") for child in case)
        if ok:
            passed[module + "|" + name] = 1
    rows = []
    vector_names = sorted({p.name.removesuffix(".json.gz") for p in DATA.glob("*.json.gz")}) + sorted(
        "interop-passive/" + p.name.removesuffix(".json.gz") for p in (DATA / "interop-passive").glob("*.json.gz")
    )
    for name in vector_names:
        entries = load(name)
        suites = sorted({e.get("cipher_suite") for e in entries if e.get("cipher_suite") is not None})
        tag = name.replace("-", "_").replace("/", "_")
        ok = sum(1 for k in passed if tag in k.split("|")[1] or FILES.get(name, "\0") == k.split("|")[0] and tag in k)
        rows.append((name, ",".join(map(str, suites)) or "-", ok, len(entries)))
    print("| file | cipher suites | passed / total |")
    print("|---|---|---|")
    for name, suites, ok, total in rows:
        print(f"| {name} | {suites} | {ok} / {total} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
