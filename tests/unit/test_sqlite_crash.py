"""Crash safety of SqliteStore: SIGKILL a writer at random points, batches stay whole.

A child process writes large batches (many blocks + meta updates + a meta delete) in a
loop; the parent kills it with SIGKILL after a random delay, reopens the file and checks
that every batch is either entirely present (blocks, their bytes, meta) or entirely
absent, that ``PRAGMA integrity_check`` passes, and that committed batches survived.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crdt_mls.dag.cid import cid_for_raw, verify_block
from crdt_mls.stores import SqliteStore

BLOCKS_PER_BATCH = 24
BLOCK_SIZE = 16_000

CHILD = r"""
import random, sys
from crdt_mls.dag.cid import cid_for_raw
from crdt_mls.stores import SqliteStore

path, run, per, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = SqliteStore(path)
sys.stdout.write("ready\n")
sys.stdout.flush()
i = 0
while True:
    rng = random.Random(f"{run}/{i}")
    blocks = []
    for j in range(per):
        data = rng.randbytes(size)
        blocks.append((cid_for_raw(data), data))
    meta = {
        f"r{run}/b{i}": b"".join(c for c, _ in blocks),
        f"r{run}/last": str(i).encode(),
        f"r{run}/tmp{i}": b"x",
        f"r{run}/tmp{i - 1}": None,
    }
    store.write_batch(blocks, meta)
    i += 1
"""


def batch_cids(run: int, i: int) -> list[bytes]:
    rng = random.Random(f"{run}/{i}")
    return [cid_for_raw(rng.randbytes(BLOCK_SIZE)) for _ in range(BLOCKS_PER_BATCH)]


def check_run(store: SqliteStore, run: int, full: bool) -> int:
    """Check every batch of ``run``; return the number of committed batches."""
    raw_last = store.get_meta(f"r{run}/last")
    last = -1 if raw_last is None else int(raw_last)
    for i in range(last + 1) if full else range(max(0, last - 1), last + 1):
        listed = store.get_meta(f"r{run}/b{i}")
        assert listed is not None, f"run {run}: batch {i} meta lost"
        cids = [listed[k : k + 36] for k in range(0, len(listed), 36)]
        assert len(cids) == BLOCKS_PER_BATCH
        for cid in cids:
            data = store.get_block(cid)
            assert data is not None, f"run {run}: block of committed batch {i} missing"
            verify_block(cid, data)
    # the batch in flight when the writer died is entirely absent
    nxt = last + 1
    assert store.get_meta(f"r{run}/b{nxt}") is None
    assert not any(store.has_block(c) for c in batch_cids(run, nxt)), f"run {run}: partial batch {nxt}"
    # meta deletions are atomic with the rest of the batch
    assert (store.get_meta(f"r{run}/tmp{last}") is not None) == (last >= 0)
    assert store.get_meta(f"r{run}/tmp{last - 1}") is None
    return last + 1


def kill_loop(path: Path, kills: int, seed: int) -> None:
    print(f"kill_loop seed={seed}")  # shown by pytest on failure, for reproduction
    rng = random.Random(seed)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    committed = 0
    for run in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(run), str(BLOCKS_PER_BATCH), str(BLOCK_SIZE)],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
            time.sleep(rng.uniform(0.0, 0.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with SqliteStore(path) as store:
            assert store.integrity_check()
            n = check_run(store, run, full=True)
            print(f"run {run}: {n} batches committed")
            committed += n
    with SqliteStore(path) as store:
        assert store.integrity_check()
        total = sum(check_run(store, run, full=False) for run in range(kills))
        assert total == committed
        assert len(list(store.iter_cids())) == committed * BLOCKS_PER_BATCH
    assert committed > 0, f"seed {seed}: the writer never committed a batch"


def test_sigkill_batches_whole_or_absent(tmp_path: Path) -> None:
    kill_loop(tmp_path / "crash.db", kills=12, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_sigkill_many_times(tmp_path: Path) -> None:
    kill_loop(tmp_path / "crash.db", kills=80, seed=random.randrange(1 << 30))
