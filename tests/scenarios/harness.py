"""A small world of MLS members over one GroupDag, for the merge scenario tests.

Every member keeps its `Group` in every epoch it is in (``states[(name, epoch)]``), like a
replica's per-epoch cache; commits are RFC 9420 commits made with `Group.commit` and merge
commits with `crdt_mls.merge.mlsmerge`.  Records go into one `GroupDag` (the convergence
test builds several replicas from the same records in different orders).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from crdt_mls.errors import CrdtMlsError
from crdt_mls.merge.dag import GroupDag
from crdt_mls.merge.mlsmerge import (
    ParentEpoch,
    create_merge_commit,
    join_merge,
    merged_base_tree,
    process_merge_commit,
)
from crdt_mls.merge.records import commit_record, genesis_record
from crdt_mls.merge.rules import MutualRemoval, OpRecord
from crdt_mls.mls.group import Group
from crdt_mls.mls.messages import GroupContext
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.welcome import KeyPackagePrivate, make_key_package

SUITE = 1


def cid_of(tag: str, data: bytes) -> bytes:
    return b"\x01\x71\x12\x20" + hashlib.sha256(tag.encode() + b"\x00" + data).digest()


@dataclass
class World:
    names: list[str]
    seed: int = 1
    mode: MutualRemoval = MutualRemoval.BOTH
    rng: random.Random = field(init=False)
    kps: dict[str, KeyPackagePrivate] = field(default_factory=dict)
    states: dict[tuple[str, bytes], Group] = field(default_factory=dict)
    trees: dict[bytes, RatchetTree] = field(default_factory=dict)
    gcs: dict[bytes, GroupContext] = field(default_factory=dict)
    records: list[OpRecord] = field(default_factory=list)
    seq: dict[str, int] = field(default_factory=dict)
    last: dict[str, bytes] = field(default_factory=dict)
    seen: dict[str, set[bytes]] = field(default_factory=dict)
    #: every secret a member ever held: epoch id -> epoch_authenticator (for adversary tests)
    knowledge: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    dag: GroupDag = field(init=False)
    genesis: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for n in self.names:
            self.new_person(n)
        creator, *others = self.names
        g = Group.create(SUITE, self.kps[creator], group_id=b"merge-scenario", rng=self.r)
        _, welcome, g = g.commit(add=[self.kps[o].key_package for o in others], rng=self.r)
        assert welcome is not None
        self.genesis = cid_of("genesis", g.group_context.to_bytes())
        self._keep(creator, self.genesis, g)
        for o in others:
            self._keep(o, self.genesis, Group.join_from_welcome(welcome, self.kps[o]))
        self.trees[self.genesis] = g.tree
        self.gcs[self.genesis] = g.group_context
        key = g.leaf_node.signature_key
        rec = genesis_record(self.genesis, key, g.tree)
        self.seq[creator] = 0
        self.last[creator] = self.genesis
        self.records.append(rec)
        self.dag = GroupDag(rec, mutual_removal=self.mode)
        for n in self.names:
            self.seen[n] = {self.genesis}

    def r(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def new_person(self, name: str) -> KeyPackagePrivate:
        kp = make_key_package(SUITE, name.encode(), rng=self.r)
        self.kps[name] = kp
        self.seen.setdefault(name, set())
        return kp

    def key(self, name: str) -> bytes:
        return self.kps[name].key_package.leaf_node.signature_key

    def name_of(self, key: bytes) -> str:
        return next(n for n, kp in self.kps.items() if kp.key_package.leaf_node.signature_key == key)

    def _keep(self, name: str, epoch: bytes, g: Group) -> None:
        self.states[(name, epoch)] = g
        self.knowledge.setdefault(name, {})[epoch] = g.epoch_authenticator

    def _node(self, name: str, extra: tuple[bytes, ...]) -> tuple[int, bytes | None, tuple[bytes, ...]]:
        s = self.seq.get(name, -1) + 1
        prev = self.last.get(name)
        parents = tuple(sorted(set(extra)))
        return s, prev, parents

    def _emit(self, name: str, rec: OpRecord) -> None:
        self.seq[name] = rec.seq
        self.last[name] = rec.cid
        self.records.append(rec)
        self.dag.add(rec)

    # ------------------------------------------------------------------ operations

    def commit(
        self,
        name: str,
        epoch: bytes,
        *,
        add: tuple[str, ...] = (),
        remove: tuple[str, ...] = (),
        evict: tuple[str, ...] = (),
        deliver: bool = True,
    ) -> bytes:
        """``name`` commits in ``epoch`` (adds, removes, evictions, always with a fresh path)."""
        g = self.states[(name, epoch)]
        kps = [self.new_person(a).key_package for a in add]
        leaves = {lf.signature_key: i for i, lf in g.tree.members()}
        rm = [leaves[self.key(x)] for x in (*remove, *evict)]
        msg, welcome, g2 = g.commit(add=kps, remove=rm, rng=self.r)
        cid = cid_of("commit", msg)
        self._keep(name, cid, g2)
        self.trees[cid] = g2.tree
        self.gcs[cid] = g2.group_context
        s, prev, parents = self._node(name, (epoch,))
        rec = commit_record(
            cid, g.leaf_node.signature_key, s, prev, parents, (epoch,), g.tree, g2.tree, evicted=map(self.key, evict)
        )
        self._emit(name, rec)
        if deliver:
            for other in self.names:
                og = self.states.get((other, epoch))
                if other == name or og is None or not og.active:
                    continue
                ng, _ = og.process(msg)
                if ng.active:
                    self._keep(other, cid, ng)
            for a in add:
                self._keep(a, cid, Group.join_from_welcome(welcome or b"", self.kps[a]))
        self.names.extend(a for a in add if a not in self.names)
        return cid

    def activity(self, name: str, epoch: bytes) -> bytes:
        """An application/ack node by ``name`` in ``epoch`` (only its causal position matters)."""
        s, prev, parents = self._node(name, (epoch,))
        cid = cid_of("app", name.encode() + s.to_bytes(8, "big") + epoch)
        rec = OpRecord(cid, self.key(name), s, prev, parents, (epoch,))
        self._emit(name, rec)
        return cid

    def parent_epochs(self, name: str, heads: tuple[bytes, ...]) -> list[ParentEpoch]:
        out = []
        for h in heads:
            g = self.states.get((name, h))
            out.append(ParentEpoch(h, self.trees[h], self.gcs[h], g if g is not None and g.active else None))
        return out

    def merge(self, name: str, heads: tuple[bytes, ...] | None = None) -> bytes:
        """``name`` issues a merge commit over ``heads`` (default: the DAG heads); every member of
        the merged group processes it or joins it from the merge Welcome."""
        hs = tuple(sorted(self.dag.heads() if heads is None else heads))
        st = self.dag.state(hs)
        parents = self.parent_epochs(name, hs)
        msg, g = create_merge_commit(parents, st.membership, rng=self.r)
        cid = cid_of("merge", msg)
        self._keep(name, cid, g)
        self.trees[cid] = g.tree
        self.gcs[cid] = g.group_context
        base = merged_base_tree(g.suite, parents, st.membership)
        s, prev, nparents = self._node(name, hs)
        rec = commit_record(cid, g.leaf_node.signature_key, s, prev, nparents, hs, base, g.tree)
        self._emit(name, rec)
        self.merge_messages[cid] = msg
        members = {self.name_of(m.key) for m in st.membership.members}
        for other in members - {name}:
            ps = self.parent_epochs(other, hs)
            if all(p.group is not None for p in ps):
                ng = process_merge_commit(ps, st.membership, msg)
            else:
                own = [gg for (n, _e), gg in self.states.items() if n == other and gg.active]
                ng = join_merge(msg, own)
            self._keep(other, cid, ng)
        return cid

    merge_messages: dict[bytes, bytes] = field(default_factory=dict)

    # ------------------------------------------------------------------ checks

    def members(self, epoch: bytes) -> set[str]:
        return {self.name_of(lf.signature_key) for _, lf in self.trees[epoch].members()}

    def holders(self, epoch: bytes) -> set[str]:
        """Members holding a Group in ``epoch``."""
        return {n for (n, e) in self.states if e == epoch}

    def check_epoch(self, epoch: bytes) -> None:
        """Everyone in the epoch's tree holds the same secrets and tree; nobody else holds it."""
        ms = self.members(epoch)
        assert self.holders(epoch) == ms, (self.holders(epoch), ms)
        gs = [self.states[(n, epoch)] for n in sorted(ms)]
        ref = gs[0]
        for g in gs[1:]:
            assert g.group_context == ref.group_context
            assert g.epoch_authenticator == ref.epoch_authenticator
            assert g.export_secret("test", b"", 32) == ref.export_secret("test", b"", 32)
            assert g.tree.tree_hash() == ref.tree.tree_hash()
        # every member can talk in the epoch
        raw, _ = ref.protect_application(b"hello", rng=self.r)
        for g in gs[1:]:
            data, _ = g.unprotect(raw)
            assert data == b"hello"

    def knows(self, name: str, epoch: bytes) -> bool:
        """Did ``name`` ever learn the epoch secret (by any means in this world)?"""
        return epoch in self.knowledge.get(name, {})


def expect_error(fn: object, *args: object) -> CrdtMlsError:
    try:
        fn(*args)  # type: ignore[operator]
    except CrdtMlsError as e:
        return e
    raise AssertionError("expected a CrdtMlsError")
