"""Child process of the RSS measurements: load a saved crdt-mls `Group` (``replica_rss``) or a
whole `Replica` from its SQLite store (``replica_load_rss``, `benchmarks.replica_bench`) in a
fresh interpreter and report its peak memory."""

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


def main_replica(path: str, state_key_hex: str) -> None:
    from crdt_mls.replica import Replica
    from crdt_mls.stores import SqliteStore

    baseline = peak_rss_bytes()
    t0 = time.perf_counter()
    replica = Replica.load(SqliteStore(path), state_key=bytes.fromhex(state_key_hex))
    members = len(replica.members())
    replica.export_secret("rss")  # the current epoch is usable
    load_s = time.perf_counter() - t0
    print(
        json.dumps(
            {"load_s": load_s, "peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline, "members": members}
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "--replica":
        main_replica(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1])
