"""The `Replica` facade at scale, over SQLite (``python -m benchmarks replica --members N``).

One end-to-end run per group size: alice creates a group on a SQLite store and adds n-1
members in a few commits (at most ``BATCH`` per commit, bob in the last one, so his Welcome
carries the full tree: commit, Welcome and sealed tree travel as chunk blocks); bob, on his
own SQLite store, joins from the blocks; then application messages, update commits, and a
reload of alice's store.  Every step is checked (bob and alice agree on the epoch's exporter
secret; the reloaded replica too), so the run is also the 50,000-member end-to-end test
(``tests/unit/test_replica_scale.py`` runs it, marked slow).

Records (CPU medians, wall medians, peak RSS, and ``bytes_written``: what the store was asked
to write by that call: blocks, meta keys and values, sealed):

* ``replica_add_all``: all of alice's add commits (one sample: their sum);
* ``replica_join``: bob's ``receive`` of the whole history (he reads the last Welcome);
* ``replica_message`` / ``replica_message_receive``: alice's ``send`` of 100 bytes / bob's
  ``receive`` of it; ``group_message`` / ``group_message_receive``: the bare `Group`
  ``protect_application`` / ``process`` of the same state (the facade's own cost is the
  difference);
* ``replica_commit`` / ``replica_commit_process``: alice's ``update`` (a commit with a path) /
  bob's ``receive`` of it; ``group_commit`` / ``group_commit_process``: the same on bare `Group`s.
  Right after an add-all the tree is sparse, so these commits encrypt to O(n) nodes in both;
* ``replica_reload``: ``Replica.load`` of alice's store;
* ``replica_load_rss``: the same load in a fresh process (`benchmarks.rss_child`): its peak RSS
  is the memory of one replica holding the group (``median_s`` is that load's time).
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from benchmarks.harness import OURS, Progress, Record, Timer, record
from crdt_mls.mls.welcome import make_key_package
from crdt_mls.replica import Joined, MessageReceived, Replica
from crdt_mls.stores import SqliteStore

REPLICA_SCENARIOS = (
    "replica_add_all",
    "replica_join",
    "replica_message",
    "replica_message_receive",
    "group_message",
    "group_message_receive",
    "replica_commit",
    "replica_commit_process",
    "group_commit",
    "group_commit_process",
    "replica_reload",
    "replica_load_rss",
)
#: members added per commit ("add everyone in a few commits")
BATCH = 10_000
STATE_KEY = bytes(range(32))


class CountingStore(SqliteStore):
    """A SqliteStore that remembers how many bytes the last batch asked to write."""

    last_written = 0

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None:
        self.last_written = sum(len(c) + len(b) for c, b in blocks) + sum(
            len(k) + len(v or b"") for k, v in meta.items()
        )
        super().write_batch(blocks, meta)


def _rec(name: str, n: int, t: Timer, written: list[int] | None = None) -> Record:
    r = record(name, n, OURS, t)
    if written:
        r = dataclasses.replace(r, bytes_written=sorted(written)[len(written) // 2])
    return r


def run_replica(
    n: int,
    emit: Callable[[Record], None],
    *,
    reps: int | None = None,
    msg_reps: int | None = None,
    batch: int = BATCH,
    workdir: str | None = None,
    force_progress: bool = False,
) -> None:
    """The end-to-end run at ``n`` members; raises AssertionError if any check fails."""
    if n < 3:
        raise ValueError("use at least 3 members")
    reps = reps or (7 if n <= 1000 else 5 if n <= 10_000 else 3)
    msg_reps = msg_reps or (50 if n <= 10_000 else 20)
    tmp = tempfile.TemporaryDirectory(dir=workdir)
    root = Path(tmp.name)
    rng = random.Random(n)
    try:
        astore, bstore = CountingStore(root / "alice.sqlite"), CountingStore(root / "bob.sqlite")
        alice = Replica.create("alice", astore, state_key=STATE_KEY, rng=rng.randbytes)
        bob = Replica.new_member("bob", bstore, state_key=STATE_KEY, rng=rng.randbytes)
        p = Progress(f"replica n={n} key packages", n - 2, force=force_progress)
        kps: list[bytes] = []
        for i in range(n - 2):
            kps.append(make_key_package(1, b"member-%d" % i, rng=rng.randbytes).public_message())
            p.update(i + 1)
        p.done()
        kps.append(bob.key_package())
        history = alice.take_outgoing()

        t = Timer()
        p = Progress(f"replica n={n} add commits", len(kps), force=force_progress)
        added = 0
        with t:
            while added < len(kps):
                alice.add(kps[added : added + batch])
                added = min(len(kps), added + batch)
                history += alice.take_outgoing()
                p.update(added)
        p.done()
        emit(_rec("replica_add_all", n, t, [astore.last_written]))
        assert len(alice.members()) == n

        t = Timer()
        with t:
            events = bob.receive(history)
        assert any(isinstance(e, Joined) for e in events), "bob did not join"
        assert bob.export_secret("bench") == alice.export_secret("bench")
        emit(_rec("replica_join", n, t, [bstore.last_written]))

        # application messages: the facade, then the bare Group on the same states
        ts, tr, gs, gr = Timer(), Timer(), Timer(), Timer()
        ws: list[int] = []
        wr: list[int] = []
        data = bytes(100)
        for _ in range(msg_reps):
            g0, g1 = alice.group, bob.group
            with gs:
                msg, _ = g0.protect_application(data)
            with gr:
                g1.process(msg)
            with ts:
                alice.send(data)
            ws.append(astore.last_written)
            out = alice.take_outgoing()
            with tr:
                events = bob.receive(out)
            wr.append(bstore.last_written)
            assert [e.data for e in events if isinstance(e, MessageReceived)] == [data]
        emit(_rec("replica_message", n, ts, ws))
        emit(_rec("replica_message_receive", n, tr, wr))
        emit(_rec("group_message", n, gs))
        emit(_rec("group_message_receive", n, gr))

        # commits with a path (alice updates, bob processes)
        tc, tp, gc, gp = Timer(), Timer(), Timer(), Timer()
        wc: list[int] = []
        wp: list[int] = []
        for _ in range(reps):
            g0, g1 = alice.group, bob.group
            with gc:
                msg, _, _ = g0.commit(private=True)
            with gp:
                g1.process(msg)
            with tc:
                alice.update()
            wc.append(astore.last_written)
            out = alice.take_outgoing()
            with tp:
                bob.receive(out)
            wp.append(bstore.last_written)
            assert bob.epoch_id == alice.epoch_id and bob.export_secret("c") == alice.export_secret("c")
        emit(_rec("replica_commit", n, tc, wc))
        emit(_rec("replica_commit_process", n, tp, wp))
        emit(_rec("group_commit", n, gc))
        emit(_rec("group_commit_process", n, gp))

        t = Timer()
        for _ in range(min(3, reps)):
            with t:
                again = Replica.load(SqliteStore(root / "alice.sqlite"), state_key=STATE_KEY)
            assert again.epoch_id == alice.epoch_id and again.export_secret("r") == alice.export_secret("r")
            assert len(again.members()) == n
        emit(_rec("replica_reload", n, t))
        astore.close()
        bstore.close()
        emit(_replica_load_rss(root / "alice.sqlite", n))
    finally:
        tmp.cleanup()


def _replica_load_rss(path: Path, n: int) -> Record:
    """Load alice's store as a `Replica` in a fresh process: its peak RSS."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.rss_child", "--replica", str(path), STATE_KEY.hex()],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["members"] != n:
        raise AssertionError(f"the reloaded replica has {res['members']} members, not {n}")
    return record("replica_load_rss", n, OURS, [res["load_s"]], rss=res["peak_rss_bytes"])
