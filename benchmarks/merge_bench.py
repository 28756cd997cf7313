"""merge_2 / merge_8: the CRDT merge of 2 or 8 concurrent commits (crdt_mls.merge.mlsmerge).

Run inside the crdt-mls group run (`benchmarks.scenarios.run_group`) right after the 8
steady-state commits, when the creator (leaf 0), the receiver (leaf n-1) and the 8
steady-state committers share one epoch E.  The tree of E is then filled like the
`full_commit` scenario's (every blank parent node above a member gets a key: random public
keys, real key pairs on the receiver's direct path), the state of a long-lived group in which
members have committed before: so the merge commit's UpdatePath costs what the merge rule
makes it cost (docs/merge.md section 5), not what a sparse tree costs any commit.

The first k of the steady-state committers each make an empty commit from that epoch
concurrently.  Timed, CPU and wall:

* ``merge_k``: what the issue names for the merger (leaf 0): processing each of the k
  concurrent commits, then creating the merge commit (merged tree from the base, UpdatePath,
  merge key schedule, sealing);
* ``merge_k_create``: the `create_merge_commit` call alone (included in ``merge_k``);
* ``merge_k_process``: the receiver (leaf n-1, a member of every parent epoch) processing the
  merge commit;
* ``merge_k_state``: the merge engine's part, not included above: `GroupDag.add` of the k
  commit records and ``GroupDag.state(heads)`` (the merged membership S(heads) and the base).

The membership and the base come from the real engine: a `GroupDag` whose genesis is epoch E
(records built from the trees outside the timers); ``S(heads)`` is ``dag.state(heads)`` and the
base is ``MergeState.base`` with its tree and membership.  The merge commit's HPKE ciphertext
count is logged (O(log n): docs/merge.md 8).  mls-rs has no merge, so these scenarios have no
peer figure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.harness import Record, Timer, log, record
from crdt_mls.merge.dag import GroupDag, MergeState
from crdt_mls.merge.mlsmerge import BaseEpoch, ParentEpoch, _open, create_merge_commit, process_merge_commit
from crdt_mls.merge.records import commit_record, genesis_record
from crdt_mls.merge.rules import Membership, OpRecord
from crdt_mls.mls import treemath
from crdt_mls.mls.group import Group
from crdt_mls.mls.messages import ParentNode
from crdt_mls.mls.ratchet_tree import RatchetTree


def fill_tree(tree: RatchetTree, holder: int) -> tuple[RatchetTree, dict[int, bytes]]:
    """A copy of ``tree`` with every blank parent node above a member filled: random public
    keys, except real key pairs on ``holder``'s direct path (returned, node -> private key)."""
    suite = tree.suite
    out = tree.copy()
    occupied = [False] * out.width
    for i, _leaf in out.members():
        occupied[2 * i] = True
    for lvl in range(1, treemath.level(out.root) + 1):
        step = 1 << lvl
        for x in range((1 << lvl) - 1, out.width, 2 * step):
            left, right = x - (step >> 1), x + (step >> 1)
            occupied[x] = occupied[left] or (right < out.width and occupied[right])
    hpath = set(treemath.direct_path(2 * holder, out.n_leaves))
    keys: dict[int, bytes] = {}
    for x in range(1, out.width, 2):
        if out.node(x) is not None or not occupied[x]:
            continue
        if x in hpath:
            priv, pub = suite.generate_hpke_key_pair()
            keys[x] = priv
        else:
            pub = os.urandom(32)
        out.set_node(x, ParentNode(pub, b"", ()))
    # warm the caches a long-lived replica's tree has (hashes, resolutions, key index, leaf summary)
    out.tree_hash()
    out.resolution(out.root)
    out.has_encryption_key(b"")
    out._summary()
    return out, keys


def ciphertexts(message: bytes, groups: list[tuple[bytes, Group]]) -> int:
    """HPKE ciphertexts in a merge commit's UpdatePath."""
    commit = _open(message, groups)
    return sum(len(node.encrypted_path_secret) for node in commit.content.path.nodes)


def _cid(tag: bytes, data: bytes) -> bytes:
    return b"\x01\x71\x12\x20" + hashlib.sha256(tag + b"\x00" + data).digest()


@dataclass
class Situation:
    """The benchmark's merge of ``k`` concurrent commits (module docstring), ready to run."""

    merger: Group
    base: BaseEpoch
    messages: list[bytes]
    epoch_ids: list[bytes]
    records: list[OpRecord]
    genesis: OpRecord
    receiver_parents: list[ParentEpoch]

    def engine(self) -> tuple[GroupDag, MergeState, BaseEpoch]:
        """A fresh merge engine fed the k commits, S(heads), and the base with the membership
        S(heads) was replayed from (so that `Membership.diff` is O(changes))."""
        dag = GroupDag(self.genesis)
        for rec in self.records:
            dag.add(rec)
        st = dag.state({r.cid for r in self.records})
        assert st.base == self.genesis.cid
        return dag, st, BaseEpoch(st.base, self.base.tree, dag.state({st.base}).membership)

    def merge(self, membership: Membership, base: BaseEpoch | None) -> tuple[list[ParentEpoch], bytes, Group]:
        """The merger's work: process each concurrent commit, then create the merge commit."""
        parents = [
            ParentEpoch.of(e, self.merger.process(m)[0]) for e, m in zip(self.epoch_ids, self.messages, strict=True)
        ]
        msg, group = create_merge_commit(parents, membership, base=base)
        return parents, msg, group


def situation(state: dict[int, Any], committers: list[int], receiver: int) -> Situation:
    """Fill the tree of the epoch all of ``state`` share and let ``committers`` commit from it."""
    tree, rkeys = fill_tree(state[0].tree, receiver)
    merger = replace(state[0], tree=tree)
    recv = replace(state[receiver], tree=tree, private_keys=state[receiver].private_keys.with_keys(rkeys))
    base_cid = _cid(b"base", tree.tree_hash())
    genesis = genesis_record(base_cid, merger.leaf_node.signature_key, tree)
    made = [replace(state[c], tree=tree).commit() for c in committers]
    eids = [_cid(b"commit", msg) for msg, _, _ in made]
    records = [
        commit_record(e, g.leaf_node.signature_key, 0, None, (base_cid,), (base_cid,), tree, g.tree)
        for e, (_, _, g) in zip(eids, made, strict=True)
    ]
    receiver_parents = [ParentEpoch.of(e, recv.process(msg)[0]) for e, (msg, _, _) in zip(eids, made, strict=True)]
    dag = GroupDag(genesis)
    base = BaseEpoch(base_cid, tree, dag.state({base_cid}).membership)
    return Situation(merger, base, [m for m, _, _ in made], eids, records, genesis, receiver_parents)


def run_merge(
    state: dict[int, Any], committers: list[int], receiver: int, n: int, reps: int, emit: Callable[[Record], None]
) -> None:
    """Emit the merge_2 and merge_8 records (fewer parents if the group has fewer committers)."""
    for k in (2, 8):
        chosen = committers[:k]
        if len(chosen) < 2:
            return
        name = f"merge_{len(chosen)}"
        sit = situation(state, chosen, receiver)
        tm, tc, tp, ts = Timer(), Timer(), Timer(), Timer()
        count = 0
        for _ in range(reps):
            dag = GroupDag(sit.genesis)
            base = BaseEpoch(sit.base.epoch_id, sit.base.tree, dag.state({sit.genesis.cid}).membership)
            with ts:
                for rec in sit.records:
                    dag.add(rec)
                st = dag.state({r.cid for r in sit.records})
            with tm:
                parents_m = [
                    ParentEpoch.of(e, sit.merger.process(m)[0])
                    for e, m in zip(sit.epoch_ids, sit.messages, strict=True)
                ]
                with tc:
                    msg, merged = create_merge_commit(parents_m, st.membership, base=base)
            with tp:
                got = process_merge_commit(sit.receiver_parents, st.membership, msg, base=base)
            if got.export_secret(b"bench", b"", 16) != merged.export_secret(b"bench", b"", 16):
                raise AssertionError(f"{name}: receiver disagrees with the merger")
            count = ciphertexts(msg, [(p.epoch_id, p.group) for p in parents_m if p.group is not None])
        log(
            f"  {name}: {count} HPKE ciphertexts in the merge commit's UpdatePath (n={n}, tree depth {(n - 1).bit_length()})"
        )
        emit(record(name, n, "crdt-mls", tm))
        emit(record(f"{name}_create", n, "crdt-mls", tc))
        emit(record(f"{name}_process", n, "crdt-mls", tp))
        emit(record(f"{name}_state", n, "crdt-mls", ts))
