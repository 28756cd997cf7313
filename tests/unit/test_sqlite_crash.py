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


# ------------------------------------------------------------------ a replica killed mid-call

REPLICA_CHILD = r"""
import random, sys
from crdt_mls import Replica
from crdt_mls.mls.welcome import make_key_package
from crdt_mls.stores import SqliteStore

path, run = sys.argv[1], int(sys.argv[2])
rng = random.Random(run)
store = SqliteStore(path)
key = bytes(range(32))
try:
    alice = Replica.load(store, state_key=key, rng=rng.randbytes)
except Exception as e:
    if "no replica saved" not in str(e):
        raise
    alice = Replica.create("alice", store, state_key=key, rng=rng.randbytes)
    kps = [make_key_package(1, f"m{i}".encode(), rng=rng.randbytes).public_message() for i in range(80)]
    alice.add(kps)
    alice.take_outgoing()
sys.stdout.write(f"ready {alice._seq}\n")
sys.stdout.flush()
i = 0
while True:
    if i % 3 == 2:
        alice.update()
    else:
        alice.send(f"message {run}/{i}")
    alice.take_outgoing()
    sys.stdout.write(f"done {alice._seq}\n")
    sys.stdout.flush()
    i += 1
"""


def replica_kill_loop(path: Path, kills: int, seed: int) -> None:
    """SIGKILL a process whose replica (SQLite, sealed) sends messages and commits (each call one
    batch: node, header, epoch secrets, tree chunks, journal entries, deletions): every reload
    finds the state of the last completed call or the next, whole, and the tree matches its
    group context."""
    from crdt_mls import Replica

    print(f"replica_kill_loop seed={seed}")
    rng = random.Random(seed)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    for run in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", REPLICA_CHILD, str(path), str(run)], stdout=subprocess.PIPE, env=env
        )
        done = -1
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(b"ready "), line
            start = int(line.split()[1])
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.stdout is not None
            for out in proc.stdout.read().splitlines():
                if out.startswith(b"done "):
                    done = int(out.split()[1])
        assert proc.returncode == -signal.SIGKILL
        with SqliteStore(path) as store:
            assert store.integrity_check()
            alice = Replica.load(store, state_key=bytes(range(32)))
            # a call that returned is durable; the one in flight is whole or absent
            assert alice._seq >= max(done, start) and alice._seq <= max(done, start) + 1
            assert alice.group.tree.tree_hash() == alice.group.group_context.tree_hash
            assert len(alice.members()) == 81
            print(f"run {run}: seq {alice._seq}")


def test_sigkill_replica_state_whole_or_absent(tmp_path: Path) -> None:
    replica_kill_loop(tmp_path / "replica.db", kills=6, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_sigkill_replica_many_times(tmp_path: Path) -> None:
    replica_kill_loop(tmp_path / "replica.db", kills=40, seed=random.randrange(1 << 30))
