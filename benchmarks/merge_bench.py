"""merge_2 / merge_8: the CRDT merge of 2 or 8 concurrent commits (crdt_mls.merge.mlsmerge).

Run inside the crdt-mls group run (`benchmarks.scenarios.run_group`) right after the 8
steady-state commits, when the creator (leaf 0), the receiver (leaf n-1) and the 8
steady-state committers share one epoch E.  The first k of those committers each make an
empty commit from E concurrently; leaf 0 and leaf n-1 process each of them separately (so
they are members of every parent epoch); the merged membership S(heads) is the members of
E with each committer's new leaf.  Timed: leaf 0's `create_merge_commit` (merged base tree,
UpdatePath, merge key schedule, sealing) and leaf n-1's `process_merge_commit`.  mls-rs has
no merge, so these scenarios have no peer figure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Record, Timer, record
from crdt_mls.merge.mlsmerge import ParentEpoch, create_merge_commit, process_merge_commit
from crdt_mls.merge.rules import Member, Membership
from crdt_mls.mls import codec
from crdt_mls.mls.group import Group
from crdt_mls.mls.messages import LeafNode


def _membership(base: Group, committed: dict[int, LeafNode]) -> Membership:
    members = []
    for i, leaf in base.tree.members():
        lf = committed.get(i, leaf)
        members.append(Member(lf.signature_key, i, codec.encode(lf), b"", b""))
    return Membership.of(members)


def run_merge(
    state: dict[int, Any], committers: list[int], receiver: int, n: int, reps: int, emit: Callable[[Record], None]
) -> None:
    """Emit merge_2 and merge_8 records (fewer parents if the group has fewer committers)."""
    for k in (2, 8):
        chosen = committers[:k]
        if len(chosen) < 2:
            return
        made = [state[c].commit() for c in chosen]
        eids = [hashlib.sha256(b"epoch" + msg).digest() for msg, _, _ in made]
        committed = {c: g.leaf_node for c, (_, _, g) in zip(chosen, made, strict=True)}
        membership = _membership(state[0], committed)
        parents_m = [ParentEpoch.of(e, state[0].process(msg)[0]) for e, (msg, _, _) in zip(eids, made, strict=True)]
        parents_r = [
            ParentEpoch.of(e, state[receiver].process(msg)[0]) for e, (msg, _, _) in zip(eids, made, strict=True)
        ]
        tc, tp = Timer(), Timer()
        for _ in range(reps):
            with tc:
                msg, merged = create_merge_commit(parents_m, membership)
            with tp:
                got = process_merge_commit(parents_r, membership, msg)
            if got.export_secret(b"bench", b"", 16) != merged.export_secret(b"bench", b"", 16):
                raise AssertionError(f"merge_{k}: receiver disagrees with the merger")
        name = f"merge_{len(chosen)}"
        emit(record(name, n, "crdt-mls", tc))
        emit(record(f"{name}_process", n, "crdt-mls", tp))
