"""The Replica end to end at scale, over SQLite (benchmarks.replica_bench.run_replica): create,
add everyone in commits of at most 10,000, a member joins from the chunked Welcome, messages,
commits, reload; every step checks that the joiner and the creator agree (exporter secrets)."""

from __future__ import annotations

import pytest

from benchmarks.harness import Record
from benchmarks.replica_bench import REPLICA_SCENARIOS, run_replica


def _run(n: int, **kw: int) -> dict[str, Record]:
    out: dict[str, Record] = {}
    run_replica(n, lambda r: out.__setitem__(r.scenario, r), **kw)
    assert set(out) == set(REPLICA_SCENARIOS)
    return out


def test_replica_end_to_end_small() -> None:
    """300 members added in commits of 100 (the Welcome of the last one carries the tree)."""
    out = _run(300, reps=2, msg_reps=3, batch=100)
    sent = out["replica_message"].bytes_written
    assert sent is not None and sent < 8_000  # a message writes kilobytes


@pytest.mark.slow
def test_replica_end_to_end_50000_members() -> None:
    """The 50,000-member run (about 10 CPU-minutes on the 2-core reference machine)."""
    out = _run(50_000, reps=2, msg_reps=5)
    sent = out["replica_message"].bytes_written
    assert sent is not None and sent < 16_000
