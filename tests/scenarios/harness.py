"""A small world of MLS members over one GroupDag, for the merge scenario tests.

Every member keeps its `Group` in every epoch it is in (``states[(name, epoch)]``), like a
replica's per-epoch cache; commits are RFC 9420 commits made with `Group.commit` and merge
commits with `crdt_mls.merge.mlsmerge`.  Records go into one `GroupDag` (the convergence
test builds several replicas from the same records in different orders).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace

from crdt_mls.errors import CrdtMlsError
from crdt_mls.merge.dag import GroupDag
from crdt_mls.merge.mlsmerge import (
    BaseEpoch,
    ParentEpoch,
    create_merge_commit,
    join_merge,
    merged_base_tree,
    parents_hash,
    process_merge_commit,
)
from crdt_mls.merge.provenance import open_history, open_provenance, seal_history, seal_provenance
from crdt_mls.merge.records import commit_record, evicted_from_aad, eviction_aad, genesis_record, merge_record
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
    #: epoch id -> the provenance its committer sealed for members joining there (docs/merge.md 3.5)
    provenance: dict[bytes, bytes] = field(default_factory=dict)
    #: merge epoch id -> the history its committer sealed for members joining from the merge Welcome
    history: dict[bytes, bytes] = field(default_factory=dict)
    _prov_rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._prov_rng = random.Random(self.seed ^ 0x5EED)  # its own stream: histories stay as they were
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

    def new_person(self, name: str, *, same_key: bool = False) -> KeyPackagePrivate:
        old = self.kps.get(name)
        sig = old.signature_priv if same_key and old is not None else None
        kp = make_key_package(SUITE, name.encode(), signature_priv=sig, rng=self.r)
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
        proposals: tuple[bytes, ...] = (),
        same_key: bool = False,
        deliver: bool = True,
    ) -> bytes:
        """``name`` commits in ``epoch`` (adds, removes, evictions, the given proposals by
        reference, always with a fresh path).  ``same_key``: added people keep their signature key."""
        g = self._with_proposals(name, epoch, proposals)
        kps = [self.new_person(a, same_key=same_key).key_package for a in add]
        leaves = {lf.signature_key: i for i, lf in g.tree.members()}
        rm = [leaves[self.key(x)] for x in (*remove, *evict)]
        aad = eviction_aad(self.key(x) for x in evict) if evict else b""
        msg, welcome, g2 = g.commit(add=kps, remove=rm, authenticated_data=aad, rng=self.r)
        cid = cid_of("commit", msg)
        if add:  # the joiners get the provenance of everyone in the new epoch with the Welcome
            self.provenance[cid] = seal_provenance(g2, self.dag.state({epoch}).membership, rng=self._prov_rng.randbytes)
        self.commit_messages[cid] = (msg, g.group_context.confirmed_transcript_hash)
        self._keep(name, cid, g2)
        self.trees[cid] = g2.tree
        self.gcs[cid] = g2.group_context
        s, prev, parents = self._node(name, (epoch, *self._extra))
        rec = commit_record(
            cid, g.leaf_node.signature_key, s, prev, parents, (epoch,), g.tree, g2.tree, evicted=evicted_from_aad(aad)
        )
        self._emit(name, rec)
        if deliver:
            for other in self.names:
                og = self.states.get((other, epoch))
                if other == name or og is None or not og.active:
                    continue
                og = self._with_proposals(other, epoch, proposals)
                ng, _ = og.process(msg)
                if ng.active:
                    self._keep(other, cid, ng)
            for a in add:
                self._keep(a, cid, Group.join_from_welcome(welcome or b"", self.kps[a]))
        self.names.extend(a for a in add if a not in self.names)
        return cid

    def propose(self, name: str, epoch: bytes, *, update: bool = False, remove: str | None = None) -> bytes:
        """``name`` proposes an Update of its leaf or a Remove in ``epoch``; returns the message."""
        g = self.states[(name, epoch)]
        if update:
            msg, g2 = g.propose_update(rng=self.r)
        else:
            assert remove is not None
            leaves = {lf.signature_key: i for i, lf in g.tree.members()}
            msg, g2 = g.propose_remove(leaves[self.key(remove)], rng=self.r)
        self.states[(name, epoch)] = g2
        self.proposer[msg] = name
        return msg

    proposer: dict[bytes, str] = field(default_factory=dict)

    def _with_proposals(self, name: str, epoch: bytes, proposals: tuple[bytes, ...]) -> Group:
        g = self.states[(name, epoch)]
        for msg in proposals:
            if self.proposer[msg] != name:
                g, _ = g.process(msg)
        return g

    def adversary_opens(self, keys: list[bytes], merge_cid: bytes) -> int:
        """How many path-secret ciphertexts of a merge commit the HPKE private ``keys`` open
        (the adversary is given the commit's plaintext content, the strongest position)."""
        from crdt_mls.merge.mlsmerge import _open  # the test reads the sealed content directly
        from crdt_mls.mls.suites import get_cipher_suite

        suite = get_cipher_suite(SUITE)
        msg = self.merge_messages[merge_cid]
        name = next(n for (n, e) in self.states if e == merge_cid)
        holder = [(e, g) for (n, e), g in self.states.items() if n == name]
        commit = _open(msg, holder)
        opened = 0
        for node in commit.content.path.nodes:
            for ct in node.encrypted_path_secret:
                for k in keys:
                    try:
                        suite.decrypt_with_label(
                            k, "UpdatePathNode", self.path_context[merge_cid], ct.kem_output, ct.ciphertext
                        )
                    except CrdtMlsError:
                        pass
                    else:
                        opened += 1
        return opened

    def adversary_opens_commit(self, keys: list[bytes], cid: bytes) -> int:
        """Like `adversary_opens` for an ordinary (RFC 9420, PublicMessage) commit."""
        from crdt_mls.mls.messages import Commit, MLSMessage, PublicMessage
        from crdt_mls.mls.suites import get_cipher_suite

        suite = get_cipher_suite(SUITE)
        raw, old_confirmed = self.commit_messages[cid]
        body = MLSMessage.from_bytes(raw).body
        assert isinstance(body, PublicMessage)
        commit = body.content.content
        assert isinstance(commit, Commit) and commit.path is not None
        ctx = replace(self.gcs[cid], confirmed_transcript_hash=old_confirmed).to_bytes()
        opened = 0
        for node in commit.path.nodes:
            for ct in node.encrypted_path_secret:
                for k in keys:
                    try:
                        suite.decrypt_with_label(k, "UpdatePathNode", ctx, ct.kem_output, ct.ciphertext)
                    except CrdtMlsError:
                        pass
                    else:
                        opened += 1
        return opened

    def stolen_keys(self, name: str) -> list[bytes]:
        """Every HPKE private key ``name`` ever held in any epoch (an adversary that keeps all)."""
        out: list[bytes] = []
        for (n, _e), g in self.states.items():
            if n == name:
                out.extend(g.private_keys.get(x) or b"" for x in g.private_keys)
        return [k for k in out if k]

    def activity(self, name: str, epoch: bytes) -> bytes:
        """An application/ack node by ``name`` in ``epoch`` (only its causal position matters)."""
        s, prev, parents = self._node(name, (epoch,))
        cid = cid_of("app", name.encode() + s.to_bytes(8, "big") + epoch)
        rec = OpRecord(cid, self.key(name), s, prev, parents, (epoch,))
        self._emit(name, rec)
        return cid

    def own_states(self, name: str) -> list[Group]:
        """Every state ``name`` still holds in which it is a member (its merged leaf key may be in
        one from before its voided commits, `merged_private_keys`)."""
        return [g for (n, _e), g in self.states.items() if n == name and g.active]

    def parent_epochs(self, name: str, heads: tuple[bytes, ...]) -> list[ParentEpoch]:
        out = []
        for h in heads:
            g = self.states.get((name, h))
            out.append(ParentEpoch(h, self.trees[h], self.gcs[h], g if g is not None and g.active else None))
        return out

    def merge(
        self,
        name: str,
        heads: tuple[bytes, ...] | None = None,
        *,
        seen: tuple[bytes, ...] = (),
        view: GroupDag | None = None,
    ) -> bytes:
        """``name`` issues a merge commit over ``heads`` (default: the DAG heads); every member of
        the merged group processes it or joins it from the merge Welcome.  ``seen``: more nodes
        the merger has seen (activity); ``view``: the merger's own DAG (what it can read), by
        default the omniscient one."""
        hs = tuple(sorted(self.dag.heads() if heads is None else heads))
        seen_nodes = self.dag.frontier() if heads is None else frozenset((*hs, *seen))
        dag = view or self.dag
        st = dag.state(seen_nodes)
        seen = tuple(seen_nodes)
        parents = self.parent_epochs(name, hs)
        # the merge's base: the latest cut, from the merger's own DAG (docs/merge.md 5)
        cut = None if st.base is None else BaseEpoch(st.base, self.trees[st.base], dag.state({st.base}).membership)
        msg, g = create_merge_commit(parents, st.membership, base=cut, rng=self.r, own_states=self.own_states(name))
        cid = cid_of("merge", msg)
        self._keep(name, cid, g)
        self.trees[cid] = g.tree
        self.gcs[cid] = g.group_context
        base = merged_base_tree(g.suite, parents, st.membership, cut)
        self.bases[cid] = cut
        # the merged epoch's tree passes a joiner's checks (RFC 9420 12.4.3.1: parent hashes,
        # unmerged leaves), so later members can join it from an ordinary Welcome
        g.tree.verify_unmerged_leaves()
        g.tree.verify_parent_hashes()
        g.tree.verify_key_uniqueness()
        s, prev, nparents = self._node(name, seen)
        rec = commit_record(cid, g.leaf_node.signature_key, s, prev, nparents, hs, base, g.tree)
        # a member who joined from the merge Welcome builds the same record from the new tree alone
        assert rec == merge_record(cid, g.leaf_node.signature_key, s, prev, nparents, hs, g.tree)
        # members joining from the merge Welcome get the history S came from (docs/merge.md 4.2)
        links = (*rec.parents, *((rec.prev,) if rec.prev is not None else ()))
        history = (view or self.dag).history(links)
        self.history[cid] = seal_history(g, history, rng=self._prov_rng.randbytes)
        self.provenance[cid] = seal_provenance(g, st.membership, rng=self._prov_rng.randbytes)
        self._emit(name, rec)
        self.merge_messages[cid] = msg
        phash = parents_hash(g.suite, parents)
        self.path_context[cid] = replace(g.group_context, confirmed_transcript_hash=phash).to_bytes()
        members = {self.name_of(m.key) for m in st.membership.members}
        for other in members - {name}:
            ps = self.parent_epochs(other, hs)
            if all(p.group is not None for p in ps):
                ng = process_merge_commit(ps, st.membership, msg, base=self.base_of, own_states=self.own_states(other))
            else:
                ng = join_merge(msg, self.own_states(other))
            self._keep(other, cid, ng)
        return cid

    merge_messages: dict[bytes, bytes] = field(default_factory=dict)
    #: the base each merge commit was built on (None: no common cut in the merger's view)
    bases: dict[bytes, BaseEpoch | None] = field(default_factory=dict)

    def base_of(self, epoch: bytes) -> BaseEpoch | None:
        """A receiver's lookup of a merge's base epoch: every member keeps every public tree here."""
        tree = self.trees.get(epoch)
        return None if tree is None else BaseEpoch(epoch, tree, self.dag.state({epoch}).membership)

    path_context: dict[bytes, bytes] = field(default_factory=dict)
    commit_messages: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)

    # ------------------------------------------------------------------ checks

    def view(self, name: str, *, provenance: bool = True, history: bool = True, until: bytes | None = None) -> GroupDag:
        """``name``'s own DAG: what it can read is a record, the rest opaque, the epoch it joined
        by Welcome is a pinned root (docs/merge.md section 4.1) whose members' provenance comes
        from the committer's sealed provenance (3.5; ``provenance=False``: the root for everyone,
        as `membership_from_tree`); a merge it joined from the merge Welcome comes with the
        merge's sealed history (4.2; ``history=False``: pinned from the tree, the old way).
        ``until``: stop before that record."""
        dag = GroupDag.for_joiner(mutual_removal=self.mode)
        for rec in self.records:
            if rec.cid == until:
                break
            self.feed(dag, name, rec, provenance=provenance, history=history)
        return dag

    def feed(self, dag: GroupDag, name: str, rec: OpRecord, *, provenance: bool = True, history: bool = True) -> None:
        """Give one record to ``name``'s own DAG (`view`), as that member sees it: a record if it
        can read it, a pinned root (or a merge with its history) where it joined, else opaque."""
        from crdt_mls.merge.records import membership_from_tree

        def mine(e: bytes) -> bool:
            return (name, e) in self.states

        joined_here = mine(rec.cid) and rec.is_commit and not (rec.epochs and all(mine(e) for e in rec.epochs))
        if joined_here and rec.is_merge and history:
            g = self.states[(name, rec.cid)]
            hist = open_history(g, self.history[rec.cid], rec.author)
            dag.add_joined_merge(rec, hist, membership_from_tree(self.trees[rec.cid], rec.cid))
        elif joined_here:
            sealed = self.provenance.get(rec.cid) if provenance else None
            if sealed is not None:
                ms = open_provenance(self.states[(name, rec.cid)], sealed, rec.cid, rec.author)
            else:
                ms = membership_from_tree(self.trees[rec.cid], rec.cid)
            dag.add_root(rec, ms)
        elif rec.epochs and all(mine(e) for e in rec.epochs) and (rec.is_commit or mine(rec.epochs[0])):
            dag.add(rec)
        else:
            dag.add_opaque(rec.cid, rec.author, rec.seq, rec.prev, rec.parents, commit=rec.is_commit)

    def members_of(self, st: object) -> set[str]:
        from crdt_mls.merge.dag import MergeState

        assert isinstance(st, MergeState)
        return {self.name_of(m.key) for m in st.membership.members}

    def commit_after(self, name: str, epoch: bytes, seen: tuple[bytes, ...], **kw: object) -> bytes:
        """Like `commit`, but the commit node also has ``seen`` nodes as causal parents."""
        self._extra = seen
        try:
            return self.commit(name, epoch, **kw)  # type: ignore[arg-type]
        finally:
            self._extra = ()

    _extra: tuple[bytes, ...] = ()
    seen_extra: bytes = b""

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
        # key knowledge: every member holds the private key of every non-blank node above it
        # where it is not unmerged, and of its own leaf (design sketch section 6, property 2)
        from crdt_mls.mls import treemath

        for g in gs:
            tree = g.tree
            own = g.own_leaf
            assert (2 * own) in g.private_keys
            for x in treemath.direct_path(2 * own, tree.n_leaves):
                node = tree.parent_node(x)
                if node is not None and own not in node.unmerged_leaves:
                    assert x in g.private_keys, (x, own)
            g.private_keys.verify(g.suite, tree)
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
