"""Child process of the replica_rss scenario: load a saved crdt-mls Group, report memory."""

from __future__ import annotations

import json
import sys
import time

from benchmarks.harness import peak_rss_bytes


def main(path: str) -> None:
    from crdt_mls.mls.group import Group

    baseline = peak_rss_bytes()
    with open(path, "rb") as f:
        data = f.read()
    t0 = time.perf_counter()
    g = Group.from_bytes(data)
    g.tree.tree_hash()  # a replica holding the group keeps its tree hashes
    load_s = time.perf_counter() - t0
    print(json.dumps({"load_s": load_s, "peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline}))


if __name__ == "__main__":
    main(sys.argv[1])
