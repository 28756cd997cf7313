"""The epoch DAG and S(heads), computed incrementally (design doc section 5.2, docs/merge.md section 4).

`GroupDag` is sans-I/O: it takes delivered `OpRecord`s (already in causal order, as
:mod:`crdt_mls.causal` hands them out) and returns events.  It keeps a vector clock per node
(the highest sequence number of every author in the node's causal past), which answers
"is a in the causal past of b" in O(1) because every author's log is linear.

``S(heads)`` (`GroupDag.state`) is the membership of the commits in the causal past of the
heads:

* one head: the head's own state, computed once when the commit arrives by applying its
  changes to its parent epoch's state (a linear extension never replays history);
* several heads: the commits of the causal past replayed in the deterministic order
  (height, then CID) with the conflict rules of :mod:`crdt_mls.merge.rules`, starting from
  the latest common *cut* epoch (an epoch in every head's past that every later commit has in
  its past) so only the concurrent region is replayed.

Per-epoch states live in a bounded LRU cache (``max_states``); an evicted state is recomputed
on demand from the nearest cached ancestor.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from crdt_mls.errors import DecodeError, InvalidArgument, InvalidState, ProtocolError, UnknownParentError
from crdt_mls.merge.rules import (
    Change,
    ChangeKind,
    Member,
    Membership,
    MutualRemoval,
    OpRecord,
    ReplayResult,
    apply_commit,
    replay,
)
from crdt_mls.mls.codec import Reader, Writer

__all__ = [
    "EpochAdded",
    "GroupDag",
    "HeadsChanged",
    "MergeHistory",
    "MergeState",
    "OperationVoided",
    "decode_member",
    "decode_record",
    "encode_member",
    "encode_record",
]


@dataclass(frozen=True, slots=True)
class EpochAdded:
    """A commit was accepted: ``cid`` is a new epoch with ``membership``."""

    cid: bytes
    parents: tuple[bytes, ...]
    membership: Membership


@dataclass(frozen=True, slots=True)
class HeadsChanged:
    """The set of epoch heads changed; several heads mean a merge commit is due."""

    heads: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class OperationVoided:
    """Commits void in the state of ``heads`` (strong remove, docs/merge.md section 3.2)."""

    heads: frozenset[bytes]
    void: frozenset[bytes]


Event = EpochAdded | HeadsChanged | OperationVoided


@dataclass(frozen=True, slots=True)
class MergeState:
    """S(heads): the membership plus what the merges decided: ``void`` every commit of the causal
    past voided by a merge (cumulative), ``moved`` the joiners the last merge moved, ``base`` the
    cut the merge's replay started from."""

    heads: frozenset[bytes]
    membership: Membership
    void: frozenset[bytes]
    moved: frozenset[bytes]
    #: the latest cut the replay of several heads started from, when it is in the past of every
    #: head: the merge commit's base epoch (docs/merge.md 5); ``None`` for one head, or when the
    #: replay started from a pinned root that some head does not descend from (section 4.1)
    base: bytes | None = None


@dataclass(frozen=True, slots=True)
class MergeHistory:
    """What S(heads) is computed from (docs/merge.md section 4.2): the latest ``cut``, its state
    ``base`` and the ``records`` of the commits above it in the heads' past, in the
    deterministic order.  A merge committer hands it (sealed) to the members who join the
    merge from its Welcome, so that they compute every later S(heads) like everyone else."""

    cut: bytes
    base: Membership
    records: tuple[OpRecord, ...]


@dataclass(slots=True)
class _Node:
    rec: OpRecord
    height: int
    clock: dict[bytes, int]
    frontier: frozenset[bytes]  #: maximal commits in the causal past, the node itself included


class GroupDag:
    """Epoch DAG of one group with S(heads) (design doc sections 5.1-5.4).

    ``genesis`` is the group's first node: a commit record with no epochs whose ADD changes
    are the founding members.  ``max_states`` bounds the per-epoch state cache.
    """

    def __init__(
        self,
        genesis: OpRecord | None,
        *,
        mutual_removal: MutualRemoval = MutualRemoval.BOTH,
        max_states: int = 256,
    ) -> None:
        if max_states < 2:
            raise InvalidArgument("max_states must be at least 2")
        self.mutual_removal = mutual_removal
        self.max_states = max_states
        self._nodes: dict[bytes, _Node] = {}
        self._commits: list[bytes] = []
        self._children: dict[bytes, list[bytes]] = {}
        self._heads: set[bytes] = set()
        self._tips: set[bytes] = set()
        self._rtips: set[bytes] = set()
        self._by_author: dict[bytes, dict[int, bytes]] = {}
        self._states: OrderedDict[frozenset[bytes], MergeState] = OrderedDict()
        self._roots: dict[bytes, MergeState] = {}
        self._opaque: set[bytes] = set()
        #: roots whose own record this replica cannot replay (pinned from a Welcome): a region walk
        #: stops there; a merge's history (`add_joined_merge`) supplies their records
        self._opaque_roots: set[bytes] = set()
        #: heights of commits dropped by a checkpoint that kept members name as provenance
        self._ranks: dict[bytes, int] = {}
        #: states of merge commits kept by a checkpoint (their causal parents may be dropped)
        self._fixed: dict[bytes, MergeState] = {}
        self.genesis = b""
        if genesis is None:
            return
        if not genesis.is_commit or genesis.epochs or genesis.parents or genesis.prev is not None:
            raise InvalidArgument("the genesis record is a commit with no parents, epochs or prev")
        assert genesis.changes is not None
        if any(c.kind != ChangeKind.ADD for c in genesis.changes):
            raise InvalidArgument("the genesis only adds the founding members")
        self.genesis = genesis.cid
        self._accept(genesis, 0, {genesis.author: genesis.seq}, frozenset())
        founders = apply_commit(Membership(()), genesis)
        self._roots[genesis.cid] = MergeState(frozenset({genesis.cid}), founders, frozenset(), frozenset())

    @classmethod
    def for_joiner(cls, *, mutual_removal: MutualRemoval = MutualRemoval.BOTH, max_states: int = 256) -> GroupDag:
        """A DAG for a member that joined after the genesis: feed the history it cannot read with
        `add_opaque`, the epoch it joined with `add_root`, then records with `add`
        (docs/merge.md section 4.1)."""
        return cls(None, mutual_removal=mutual_removal, max_states=max_states)

    # ------------------------------------------------------------------ queries

    def heads(self) -> frozenset[bytes]:
        """The epoch heads: commits that are no other commit's epoch parent."""
        return frozenset(self._heads)

    def frontier(self) -> frozenset[bytes]:
        """Every node (of any kind) that no other node has as a parent or prev: what a new
        operation, in particular a merge commit, names as its causal parents."""
        return frozenset(self._tips)

    def readable_frontier(self) -> frozenset[bytes]:
        """The latest nodes this replica can read (no opaque node): what a new node of this
        member names as causal parents (docs/merge.md section 4.1, facade rule)."""
        return self._maximal(self._rtips)

    def __contains__(self, cid: object) -> bool:
        return cid in self._nodes

    def epoch_heads(self, nodes: Iterable[bytes] | None = None) -> frozenset[bytes]:
        """The latest commits in the causal past of ``nodes`` (default: every node held): the
        epochs a merge commit naming ``nodes`` as its causal parents merges (docs/merge.md 4)."""
        ns = self._tips if nodes is None else nodes
        return self._maximal(c for h in ns for c in self._node(h).frontier)

    def complete(self) -> bool:
        """True iff this replica reads every commit it holds and pins no state but its first root:
        its S(heads) are then exactly those of a replica that read the whole history from there
        (void sets included), not only the same members (docs/merge.md 4.1-4.2)."""
        return not self._opaque and set(self._roots) <= {self.genesis}

    def node_count(self) -> int:
        """Number of nodes held (after a checkpoint: those not before its cut)."""
        return len(self._nodes)

    def record(self, cid: bytes) -> OpRecord:
        n = self._nodes.get(cid)
        if n is None:
            raise InvalidArgument("unknown operation")
        return n.rec

    def height(self, cid: bytes) -> int:
        return self._node(cid).height

    def commits(self) -> tuple[bytes, ...]:
        """Every accepted commit, in arrival order."""
        return tuple(self._commits)

    def in_past(self, a: bytes, b: bytes) -> bool:
        """True iff node ``a`` is in the causal past of node ``b`` (strictly)."""
        na, nb = self._node(a), self._node(b)
        return a != b and nb.clock.get(na.rec.author, -1) >= na.rec.seq

    def concurrent(self, a: bytes, b: bytes) -> bool:
        return a != b and not self.in_past(a, b) and not self.in_past(b, a)

    def rank(self, cid: bytes) -> tuple[int, bytes]:
        """Position key of the deterministic order: (height, CID)."""
        n = self._nodes.get(cid)
        if n is None:
            h = self._ranks.get(cid)  # a commit before a checkpoint's cut that provenance names
            if h is None:
                raise InvalidArgument("unknown operation")
            return h, cid
        return n.height, cid

    def state(self, heads: Iterable[bytes] | None = None) -> MergeState:
        """S(heads) (default: everything delivered).

        ``heads`` may name any nodes: the epochs merged are the latest commits in their causal
        past, and non-commit nodes among them count as activity for weak evictions.
        """
        hs = frozenset(self._tips if heads is None else heads)
        if not hs:
            raise InvalidArgument("S(heads) needs at least one head")
        for h in hs:
            if h not in self._nodes:
                raise InvalidArgument("unknown head")
        hs = self._maximal(hs)
        commits = self._maximal(c for h in hs for c in self._nodes[h].frontier)
        if len(commits) == 1:
            hs = commits
        if any(c in self._opaque for c in commits):
            raise InvalidState("S(heads) needs commits this replica cannot read; wait for a merge Welcome")
        if len(hs) == 1 and next(iter(hs)) in self._roots:
            return self._roots[next(iter(hs))]
        if len(hs) == 1 and next(iter(hs)) in self._fixed:
            return self._fixed[next(iter(hs))]
        cached = self._states.get(hs)
        if cached is not None:
            self._states.move_to_end(hs)
            return cached
        if len(commits) == 1:
            # walk back along single-parent commits to a cached state, then apply forward
            chain: list[OpRecord] = []
            cur = hs
            while cur not in self._states:
                (h,) = cur
                if h in self._roots or h in self._fixed:
                    break
                rec = self._nodes[h].rec
                chain.append(rec)
                if rec.is_merge:
                    break
                cur = frozenset(rec.epochs)
            if cur in self._states:
                st = self._states[cur]
            elif next(iter(cur)) in self._roots:
                st = self._roots[next(iter(cur))]
            elif next(iter(cur)) in self._fixed:
                st = self._fixed[next(iter(cur))]
            else:  # the walk stopped at an uncached merge commit: S(parents) then the commit
                m = chain.pop()
                merged = self.state(_links(m))
                st = MergeState(cur, apply_commit(merged.membership, m), merged.void, merged.moved)
                self._cache(st)
            for rec in reversed(chain):
                st = MergeState(frozenset({rec.cid}), apply_commit(st.membership, rec), st.void, frozenset())
                self._cache(st)
            return st
        st = self._merge(hs)
        self._cache(st)
        return st

    def merge_rank(self, key: bytes, heads: Iterable[bytes] | None = None) -> int | None:
        """This member's turn to issue the merge of ``heads`` (0 = first), ``None`` if it is not
        in S(heads) (design sketch section 4: a deterministic "who merges first" order, so a
        quiet group needs one merge per round).  The order is by SHA-256(sorted head CIDs ||
        signature key); the facade waits ``rank x delay`` before merging and skips if a merge
        arrived meanwhile."""
        order = self.merge_order(heads)
        return order.index(key) if key in order else None

    def merge_order(self, heads: Iterable[bytes] | None = None) -> list[bytes]:
        """The members who can issue the merge of ``heads`` (default: everything delivered), in
        turn order (design sketch 6.5, liveness): members of S(heads) that are members of at
        least one epoch head (a merge needs the committer's state in one parent epoch,
        docs/merge.md 6.2), ordered by SHA-256(sorted epoch head CIDs || signature key)."""
        st = self.state(heads)
        epochs = self._maximal(c for h in st.heads for c in self._nodes[h].frontier)
        in_a_head: set[bytes] = set()
        for e in epochs:
            in_a_head |= self.state({e}).membership.keys()
        salt = b"".join(sorted(epochs))
        eligible = st.membership.keys() & in_a_head
        return sorted(eligible, key=lambda k: hashlib.sha256(salt + k).digest())

    def members(self, heads: Iterable[bytes] | None = None) -> Membership:
        return self.state(heads).membership

    # ------------------------------------------------------------------ input

    def _check_log(self, rec: OpRecord) -> tuple[int, dict[bytes, int], frozenset[bytes]]:
        """Common checks of a new node; returns its height, clock (without itself) and frontier."""
        for p in (*rec.parents, *((rec.prev,) if rec.prev is not None else ())):
            if p not in self._nodes:
                raise UnknownParentError("operation names an unknown causal parent")
        log = self._by_author.get(rec.author, {})
        if rec.seq in log:
            raise ProtocolError(f"author already has an operation with seq {rec.seq} (equivocation)")
        if rec.prev is not None:
            prev = self._nodes[rec.prev].rec
            if prev.author != rec.author or prev.seq != rec.seq - 1:
                raise ProtocolError("prev is not the author's previous operation")
        elif rec.seq != 0:
            raise ProtocolError("an operation with seq > 0 needs prev")
        clock: dict[bytes, int] = {}
        height = 0
        seen: set[bytes] = set()
        for p in _links(rec):
            n = self._nodes[p]
            height = max(height, n.height + 1)
            seen |= n.frontier
            for a, s in n.clock.items():
                if clock.get(a, -1) < s:
                    clock[a] = s
        return height, clock, self._maximal(seen)

    def add_opaque(
        self, cid: bytes, author: bytes, seq: int, prev: bytes | None, parents: tuple[bytes, ...], *, commit: bool
    ) -> None:
        """A node this replica cannot read (before it joined, or of a branch it is not in): it
        takes part in causality (clocks, heights), counts as its author's activity and, for a
        commit (the node kind is public), is an epoch head whose state is unknown: S of heads
        that need it raises `InvalidState` until a merge Welcome pins a later root."""
        if cid in self._nodes:
            return
        probe = OpRecord(cid, author, seq, prev, tuple(parents), ())
        height, clock, frontier = self._check_log(probe)
        clock[author] = seq
        rec = probe
        if commit:  # a commit's epoch parents are its commit frontier (section 2)
            rec = OpRecord(cid, author, seq, prev, tuple(parents), tuple(sorted(frontier)))
            self._opaque.add(cid)
            frontier = frozenset({cid})
            for e in rec.epochs:
                self._heads.discard(e)
            self._heads.add(cid)
        self._nodes[cid] = _Node(rec, height, clock, frontier)
        self._by_author.setdefault(author, {})[seq] = cid
        for p in _links(rec):
            self._tips.discard(p)
        self._tips.add(cid)  # not a readable tip: readable parents stay in _rtips

    def add_root(self, rec: OpRecord, membership: Membership) -> list[Event]:
        """A commit whose state this replica got from a Welcome (it joined there, or joined a
        merge it could not compute): its state is pinned to ``membership``; history before it is
        never replayed.  Its epoch parents may be opaque."""
        if rec.cid in self._nodes:
            raise InvalidArgument("the root is already known")
        if not rec.is_commit:
            raise InvalidArgument("a root is a commit")
        if not isinstance(membership, Membership) or rec.author not in membership:
            raise InvalidArgument("the root's membership must contain its committer")
        height, clock, _frontier = self._check_log(rec)
        for e in rec.epochs:
            if e not in self._nodes:
                raise UnknownParentError("the root names an unknown epoch")
        clock[rec.author] = rec.seq
        for m in membership.members:
            # provenance (docs/merge.md 3.5): the root itself or a commit of its causal past
            if m.added_in == rec.cid:
                continue
            n = self._nodes.get(m.added_in)
            if n is None or not self._is_commit(m.added_in):
                raise ProtocolError("the root's provenance names a commit this replica does not know")
            if clock.get(n.rec.author, -1) < n.rec.seq:
                raise ProtocolError("the root's provenance names a commit outside the root's causal past")
        self._accept(rec, height, clock, frozenset({rec.cid}))
        if not self.genesis:
            self.genesis = rec.cid
        self._roots[rec.cid] = MergeState(frozenset({rec.cid}), membership, frozenset(), frozenset())
        self._opaque_roots.add(rec.cid)
        return [EpochAdded(rec.cid, rec.epochs, membership), HeadsChanged(self.heads())]

    def add_joined_merge(self, rec: OpRecord, history: MergeHistory, expected: Membership) -> list[Event]:
        """A merge commit this member joined from its merge Welcome (it was not in every parent
        epoch), with the merge's history sealed by its committer (docs/merge.md section 4.2).

        The history is installed: the cut's state is pinned if this replica cannot compute it
        (else it must agree), every commit above the cut that is opaque here becomes a readable
        record (so is a pinned root's own record), each checked against the node this replica
        holds (author, seq, prev, parents, epochs) and validated like `add`.  Then the merge
        commit is added like any readable commit, and S of it must be ``expected`` (the members,
        leaves and LeafNodes of the Welcome's tree).  From then on this replica replays regions
        through the merge like the members who read everything, instead of stopping at a pinned
        root.  Raises `ProtocolError` (nothing changed) for a history that is not exactly that."""
        if rec.cid in self._nodes:
            return []
        if not rec.is_merge:
            raise InvalidArgument("add_joined_merge takes a merge commit")
        snapshot = self._snapshot()
        try:
            self._install_history(history)
            try:
                events = self.add(rec)
            except InvalidState:
                raise ProtocolError("the merge's history does not cover the commits its region needs") from None
            got = {(m.key, m.leaf, m.data) for m in self.state({rec.cid}).membership.members}
            if got != {(m.key, m.leaf, m.data) for m in expected.members}:
                raise ProtocolError("the merge's history does not give the members of the merge Welcome's tree")
        except BaseException:
            self._restore(snapshot)
            raise
        return events

    def _install_history(self, h: MergeHistory) -> None:
        cut = self._nodes.get(h.cut)
        if cut is None or not self._is_commit(h.cut):
            raise ProtocolError("a merge history's cut is not a commit this replica holds")
        try:
            mine = self.state({h.cut}).membership
        except InvalidState:
            for m in h.base.members:  # provenance: the cut itself or a commit of its past
                n = self._nodes.get(m.added_in)
                if m.added_in != h.cut and (
                    n is None or not self._is_commit(m.added_in) or not self.in_past(m.added_in, h.cut)
                ):
                    raise ProtocolError("a merge history names a provenance outside the cut's past") from None
            self._opaque.discard(h.cut)
            self._opaque_roots.add(h.cut)
            self._roots[h.cut] = MergeState(frozenset({h.cut}), h.base, frozenset(), frozenset())
        else:
            if {(m.key, m.leaf, m.data) for m in mine.members} != {(m.key, m.leaf, m.data) for m in h.base.members}:
                raise ProtocolError("a merge history's cut state differs from this replica's")
        upgraded: list[OpRecord] = []
        last: tuple[int, bytes] | None = None
        for r in h.records:
            n = self._nodes.get(r.cid)
            if n is None or not r.is_commit:
                raise ProtocolError("a merge history names a commit this replica does not hold")
            if last is not None and self.rank(r.cid) <= last:
                raise ProtocolError("a merge history's records are not in the deterministic order")
            last = self.rank(r.cid)
            if not self.in_past(h.cut, r.cid):
                raise ProtocolError("a merge history's record is not above its cut")
            old = n.rec
            if (r.author, r.seq, r.prev, tuple(r.parents), frozenset(r.epochs)) != (
                old.author,
                old.seq,
                old.prev,
                tuple(old.parents),
                frozenset(old.epochs),
            ):
                raise ProtocolError("a merge history's record does not match the node this replica holds")
            if r.cid in self._opaque:
                self._nodes[r.cid] = _Node(r, n.height, n.clock, n.frontier)
                self._opaque.discard(r.cid)
                self._commits.append(r.cid)
                for e in r.epochs:
                    self._children.setdefault(e, []).append(r.cid)
                self._rtips.add(r.cid)
                upgraded.append(r)
            elif r.cid in self._opaque_roots:
                self._nodes[r.cid] = _Node(r, n.height, n.clock, n.frontier)
                self._opaque_roots.discard(r.cid)
            elif old != r:
                raise ProtocolError("a merge history's record differs from the commit this replica read")
        self._states.clear()
        for r in upgraded:  # validated like `add` once all of them are in
            try:
                base = self.state(_links(r) if r.is_merge else r.epochs)
            except InvalidState:
                raise ProtocolError("a merge history's record needs commits it does not supply") from None
            if r.author not in base.membership:
                raise ProtocolError("a merge history's commit is by a non-member of its parent state")
            assert r.changes is not None
            if r.is_merge and any(c.kind != ChangeKind.UPDATE or c.member != r.author for c in r.changes):
                raise ProtocolError("a merge commit only updates its committer's leaf")
            _check_changes(base.membership, r.changes)

    def _is_commit(self, cid: bytes) -> bool:
        """A commit node, readable, opaque or pinned (a pinned cut may have no readable record)."""
        return self._nodes[cid].rec.is_commit or cid in self._opaque or cid in self._roots

    def _snapshot(self) -> tuple[object, ...]:
        return (
            dict(self._nodes),
            list(self._commits),
            {k: list(v) for k, v in self._children.items()},
            set(self._heads),
            set(self._tips),
            set(self._rtips),
            {k: dict(v) for k, v in self._by_author.items()},
            OrderedDict(self._states),
            dict(self._roots),
            set(self._opaque),
            set(self._opaque_roots),
            self.genesis,
        )

    def _restore(self, snap: tuple[object, ...]) -> None:
        (
            self._nodes,
            self._commits,
            self._children,
            self._heads,
            self._tips,
            self._rtips,
            self._by_author,
            self._states,
            self._roots,
            self._opaque,
            self._opaque_roots,
            self.genesis,
        ) = snap  # type: ignore[assignment]

    def add(self, rec: OpRecord) -> list[Event]:
        """Accept one delivered operation; returns events.  Raises on invalid input, unchanged."""
        if rec.cid in self._nodes:
            return []
        height, clock, frontier = self._check_log(rec)
        if not rec.epochs:
            raise ProtocolError("an operation must name its epoch")
        if not rec.is_commit and len(rec.epochs) != 1:
            raise ProtocolError("a non-commit operation belongs to exactly one epoch")
        for e in rec.epochs:
            en = self._nodes.get(e)
            if en is None or not en.rec.is_commit:
                raise ProtocolError("an operation's epoch must be a known, readable commit")
            if clock.get(en.rec.author, -1) < en.rec.seq:
                raise ProtocolError("an operation's epoch must be in its causal past")
        if not rec.is_commit:
            clock[rec.author] = rec.seq
            self._accept(rec, height, clock, frontier)
            return []
        # a commit builds on exactly the commit heads of its causal past (docs/merge.md section 4.1)
        if frontier != frozenset(rec.epochs):
            raise ProtocolError("a commit's epoch parents must be exactly the latest commits it has seen")
        if len(rec.epochs) != len(set(rec.epochs)):
            raise ProtocolError("repeated epoch parent")
        base = self.state(_links(rec) if rec.is_merge else rec.epochs)
        if rec.author not in base.membership:
            raise ProtocolError("the committer is not a member of its parent state")
        assert rec.changes is not None
        if rec.is_merge and any(c.kind != ChangeKind.UPDATE or c.member != rec.author for c in rec.changes):
            raise ProtocolError("a merge commit only updates its committer's leaf")
        _check_changes(base.membership, rec.changes)
        clock[rec.author] = rec.seq
        self._accept(rec, height, clock, frozenset({rec.cid}))
        st = self.state({rec.cid})
        events: list[Event] = [EpochAdded(rec.cid, rec.epochs, st.membership), HeadsChanged(self.heads())]
        if len(self._heads) > 1:
            try:
                merged = self.state()
            except InvalidState:  # the merge needs history this replica cannot read
                return events
            if merged.void:
                events.append(OperationVoided(merged.heads, merged.void))
        return events

    # ------------------------------------------------------------------ internals

    def _node(self, cid: bytes) -> _Node:
        n = self._nodes.get(cid)
        if n is None:
            raise InvalidArgument("unknown operation")
        return n

    def _accept(self, rec: OpRecord, height: int, clock: dict[bytes, int], frontier: frozenset[bytes]) -> None:
        if rec.is_commit:
            frontier = frozenset({rec.cid})
        self._nodes[rec.cid] = _Node(rec, height, clock, frontier)
        for p in _links(rec):
            self._tips.discard(p)
            self._rtips.discard(p)
        self._tips.add(rec.cid)
        self._rtips.add(rec.cid)
        self._by_author.setdefault(rec.author, {})[rec.seq] = rec.cid
        if rec.is_commit:
            self._commits.append(rec.cid)
            for e in rec.epochs:
                self._children.setdefault(e, []).append(rec.cid)
                self._heads.discard(e)
            self._heads.add(rec.cid)

    def _cache(self, st: MergeState) -> None:
        self._states[st.heads] = st
        self._states.move_to_end(st.heads)
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)

    def _maximal(self, cids: Iterable[bytes]) -> frozenset[bytes]:
        cs = set(cids)
        return frozenset(c for c in cs if not any(self.in_past(c, d) for d in cs if d != c))

    def _region(self, heads: frozenset[bytes]) -> tuple[bytes, list[bytes], frozenset[bytes], bool]:
        """The latest cut of ``heads`` and the commits above it in their past, in the deterministic
        order (docs/merge.md section 4), the maximal commits of ``heads``, and whether the cut is
        a pinned root that some head does not descend from (the fallback of section 4.1)."""
        chs = self._maximal(c for h in heads for c in self._nodes[h].frontier)
        # walk the epoch DAG down from the heads by decreasing height; when a single commit is
        # left to visit, every path from the heads passes through it: it is the latest cut, and
        # its state cannot be affected by anything concurrent (docs/merge.md section 4)
        heap = [(-self._nodes[c].height, c) for c in chs]
        heapq.heapify(heap)
        queued = set(chs)
        above: list[bytes] = []
        root: bytes | None = None
        while len(heap) > 1 or (root is not None and heap):
            _, c = heapq.heappop(heap)
            if root is not None and self.in_past(c, root):
                continue  # covered by the pinned root's state
            if c in self._opaque_roots:
                if root is not None:
                    raise InvalidState("S(heads) spans two pinned roots; wait for a merge Welcome")
                # a root whose own record this replica cannot replay and that the other branches
                # do not pass through (legacy: a member that joined a merge from its Welcome without
                # the merge's history, docs/merge.md 4.1): its pinned state is the base, and the
                # commits this replica can read that are not in its past are replayed on top of it
                root = c
                continue
            if c in self._opaque:
                raise InvalidState("S(heads) needs commits this replica cannot read; wait for a merge Welcome")
            above.append(c)
            for e in self._nodes[c].rec.epochs:
                if e not in queued:
                    queued.add(e)
                    heapq.heappush(heap, (-self._nodes[e].height, e))
        if root is not None:
            above = [c for c in above if not self.in_past(c, root)]
        cut = root if root is not None else heap[0][1]
        return cut, sorted(above, key=self.rank), chs, root is not None

    def history(self, heads: Iterable[bytes]) -> MergeHistory:
        """What a replica needs to compute S(``heads``) the way this one does (docs/merge.md 4.2):
        the latest cut, its state, and the records of the commits above it.  A merge committer
        seals it (`crdt_mls.merge.provenance.seal_history`) for the members who join the merge from
        its Welcome; they install it with `add_joined_merge`."""
        hs = self._maximal(heads)
        cut, todo, _chs, _fallback = self._region(hs)
        base = self.state({cut})
        return MergeHistory(cut, base.membership, tuple(self._nodes[c].rec for c in todo))

    def _merge(self, heads: frozenset[bytes]) -> MergeState:
        """Replay the concurrent region of ``heads`` from the latest cut epoch (docs/merge.md section 4)."""
        cut, todo, _chs, fallback = self._region(heads)
        base = self.state({cut})
        recs = [self._nodes[c].rec for c in todo]

        def concurrent(a: OpRecord, b: OpRecord) -> bool:
            return self.concurrent(a.cid, b.cid)

        def eviction_void(r: OpRecord, ch: Change) -> bool:
            # weak eviction (docs/merge.md 3.9): void if the evicted member has an operation
            # concurrent with it in the past of the heads (every replay that re-examines the
            # eviction decides the same, whether the two met in this merge or an earlier one)
            log = self._by_author.get(ch.member, {})
            first = self._nodes[r.cid].clock.get(ch.member, -1) + 1
            n = log.get(first)
            if n is None or not any(n == h or self.in_past(n, h) for h in heads):
                return False
            return self.concurrent(n, r.cid)

        def log_position(r: OpRecord, member: bytes) -> int:
            # rule 3.7: an UPDATE in the member's own commit was made there; one in another's
            # commit (a committed Update proposal) no later than the member's last node in its past
            return r.seq if r.author == member else self._nodes[r.cid].clock.get(member, -1)

        result: ReplayResult = replay(
            base.membership,
            recs,
            concurrent=concurrent,
            eviction_void=eviction_void,
            rank=self.rank,
            mode=self.mutual_removal,
            log_position=log_position,
        )
        return MergeState(heads, result.membership, base.void | result.void, result.moved, None if fallback else cut)

    def _in_all(self, cid: bytes, heads: frozenset[bytes]) -> bool:
        return all(cid == h or self.in_past(cid, h) for h in heads)

    # ------------------------------------------------------------------ checkpoints
    #
    # Truncating the input log (the facade's merge log, docs/api.md "Merge log truncation"): at a
    # commit C that is a cut of everything delivered (comparable with every commit) and that
    # every author has seen (each author's latest node has C in its past), no valid later node
    # can name a node before C (its author has seen C, so its parents are C or later and its prev
    # is at or after that author's latest node).  The checkpoint keeps C (its state pinned as a
    # root) and every node not in C's past, with their heights, clocks and frontiers, so that
    # everything the DAG answers about them and about later nodes stays the same.

    def truncation_cut(self) -> bytes | None:
        """The latest commit at which the DAG can be checkpointed (see above), or ``None``.

        "Every author" includes every member added by a commit the DAG holds (or pinned in a
        root's state) who has no node yet: what it has seen is at least the commit that added
        it, so that commit stands for its latest node."""
        if not self._by_author:
            return None
        marks = {a: log[max(log)] for a, log in self._by_author.items()}
        added: dict[bytes, bytes] = {}
        for root, st in self._roots.items():
            for m in st.membership.members:
                added[m.key] = m.added_in if m.added_in in self._nodes else root
        for c in self._commits:
            for ch in self._nodes[c].rec.changes or ():
                if ch.kind == ChangeKind.ADD:
                    added[ch.member] = c
        tails = [*marks.values(), *(c for k, c in added.items() if k not in marks and c in self._nodes)]
        commits = [*self._commits, *self._opaque]
        for c in reversed(self._commits):
            if c in self._opaque or c not in self._nodes:
                continue
            if not all(t == c or self.in_past(c, t) for t in tails):
                continue
            if not all(x == c or self.in_past(c, x) or self.in_past(x, c) for x in commits):
                continue
            try:
                self.state({c})
            except (InvalidState, InvalidArgument):
                continue
            return c
        return None

    def checkpoint(self, cut: bytes) -> bytes:
        """The DAG truncated at ``cut`` (see `truncation_cut`), encoded; `from_checkpoint`
        restores it.  ``InvalidState`` if ``cut`` is not a readable commit comparable with every
        commit."""
        n = self._nodes.get(cut)
        if n is None or not n.rec.is_commit or cut in self._opaque:
            raise InvalidState("a checkpoint is taken at a readable commit")
        if not all(x == cut or self.in_past(cut, x) or self.in_past(x, cut) for x in [*self._commits, *self._opaque]):
            raise InvalidState("a checkpoint cut must be comparable with every commit")
        st = self.state({cut})
        keep = [c for c in self._nodes if c == cut or not self.in_past(c, cut)]
        kept = set(keep)
        w = Writer()
        w.u8(_CHECKPOINT_VERSION)
        w.u8(int(self.mutual_removal))
        w.u32(self.max_states)
        w.opaque(self.genesis)
        w.opaque(cut)
        roots = [(c, self._roots[c]) for c in keep if c in self._roots and c != cut]
        # kept merge commits: their states, as their causal parents may be dropped
        merges = [c for c in keep if c != cut and c not in self._roots and self._nodes[c].rec.is_merge]
        fixed = [(c, self.state({c})) for c in merges]
        # provenance of the kept memberships (seniority ranks the commit that added a member)
        named = {
            x
            for _, state in [(cut, st), *roots, *fixed]
            for m in state.membership.members
            for x in (m.added_in, m.updated_in)
        }
        ranks = sorted((c, self.rank(c)[0]) for c in named if c not in kept and (c in self._nodes or c in self._ranks))

        def root(ww: Writer, item: tuple[bytes, MergeState]) -> None:
            ww.opaque(item[0])
            _w_state(ww, item[1])

        def tick(ww: Writer, kv: tuple[bytes, int]) -> None:
            ww.opaque(kv[0])
            ww.u64(kv[1])

        w.vector([(cut, st), *roots], root)
        w.vector(ranks, tick)
        w.vector(fixed, root)

        def node(ww: Writer, c: bytes) -> None:
            nd = self._nodes[c]
            encode_record(ww, nd.rec)
            ww.u32(nd.height)
            ww.vector(sorted(nd.clock.items()), tick)
            # a node concurrent with the cut may have commits before it in its frontier: the cut
            # stands for them (only S of nodes that are all concurrent with the cut changes)
            front = {f if f in kept else cut for f in nd.frontier}
            ww.vector(sorted(front), Writer.opaque)
            ww.u8((c in self._opaque) | ((c in self._opaque_roots) << 1))

        w.vector(keep, node)
        return w.getvalue()

    @classmethod
    def from_checkpoint(cls, data: bytes) -> GroupDag:
        """Restore a DAG saved by `checkpoint`; `DecodeError` if malformed."""
        r = Reader(data)
        if r.u8() != _CHECKPOINT_VERSION:
            raise DecodeError("unknown GroupDag checkpoint version")
        try:
            mode = MutualRemoval(r.u8())
        except ValueError:
            raise DecodeError("unknown mutual removal mode in a checkpoint") from None
        dag = cls(None, mutual_removal=mode, max_states=max(2, r.u32()))
        dag.genesis = r.opaque()
        cut = r.opaque()
        roots = r.vector(lambda rr: (rr.opaque(), _r_state(rr)))
        dag._ranks = dict(r.vector(lambda rr: (rr.opaque(), rr.u64())))
        dag._fixed = dict(r.vector(lambda rr: (rr.opaque(), _r_state(rr))))
        opaque_roots: set[bytes] = set()

        def node(rr: Reader) -> tuple[_Node, bool]:
            rec = decode_record(rr)
            height = rr.u32()
            clock = dict(rr.vector(lambda x: (x.opaque(), x.u64())))
            frontier = frozenset(rr.vector(Reader.opaque))
            flags = rr.u8()
            if flags > 3:
                raise DecodeError("unknown node flags in a checkpoint")
            if flags & 2:
                opaque_roots.add(rec.cid)
            return _Node(rec, height, clock, frontier), bool(flags & 1)

        nodes = r.vector(node)
        r.finish()
        if not roots or roots[0][0] != cut:
            raise DecodeError("a checkpoint names its cut's state first")
        linked: set[bytes] = set()
        rlinked: set[bytes] = set()
        epochs: set[bytes] = set()
        commits: list[bytes] = []
        for nd, opaque in nodes:
            rec = nd.rec
            dag._nodes[rec.cid] = nd
            dag._by_author.setdefault(rec.author, {})[rec.seq] = rec.cid
            links = _links(rec)
            linked.update(links)
            if not opaque:
                rlinked.update(links)
            if rec.is_commit or opaque:
                epochs.update(rec.epochs)
                commits.append(rec.cid)
            if opaque:
                dag._opaque.add(rec.cid)
            elif rec.is_commit:
                dag._commits.append(rec.cid)
                for e in rec.epochs:
                    dag._children.setdefault(e, []).append(rec.cid)
        if cut not in dag._nodes:
            raise DecodeError("a checkpoint does not hold its cut")
        dag._heads = {c for c in commits if c not in epochs}
        dag._tips = {nd.rec.cid for nd, _ in nodes if nd.rec.cid not in linked}
        dag._rtips = {nd.rec.cid for nd, op in nodes if not op and nd.rec.cid not in rlinked}
        dag._roots = dict(roots)
        dag._opaque_roots = opaque_roots & dag._roots.keys()
        return dag


_CHECKPOINT_VERSION = 1


def encode_member(w: Writer, m: Member) -> None:
    """Encode a `Member` (a checkpoint's, a cut state's or a provenance's)."""
    w.opaque(m.key)
    w.u32(m.leaf)
    w.opaque(m.data)
    w.opaque(m.added_in)
    w.opaque(m.updated_in)


def _w_state(w: Writer, st: MergeState) -> None:
    w.vector(sorted(st.heads), Writer.opaque)
    w.vector(list(st.membership.members), encode_member)
    w.vector(sorted(st.void), Writer.opaque)
    w.vector(sorted(st.moved), Writer.opaque)
    w.optional(st.base, Writer.opaque)


def _r_state(r: Reader) -> MergeState:
    heads = frozenset(r.vector(Reader.opaque))
    members = r.vector(decode_member)
    void = frozenset(r.vector(Reader.opaque))
    moved = frozenset(r.vector(Reader.opaque))
    base = r.optional(Reader.opaque)
    try:
        membership = Membership.of(members)
    except InvalidArgument as e:
        raise DecodeError(f"a checkpoint's membership is invalid: {e}") from None
    return MergeState(heads=heads, membership=membership, void=void, moved=moved, base=base)


# The wire form of the engine's values, shared by its checkpoints, merge histories, provenance
# and the replica's state at rest:
# struct { uint8 kind; opaque member<V>; uint32 leaf; opaque data<V>; } Change;
# struct { opaque cid<V>; opaque author<V>; uint64 seq; optional<opaque prev<V>>;
#          opaque parents<V><V>; opaque epochs<V><V>; optional<Change changes<V>>; } OpRecord;
# struct { opaque key<V>; uint32 leaf; opaque data<V>; opaque added_in<V>; opaque updated_in<V>; } Member;


def _encode_change(w: Writer, ch: Change) -> None:
    w.u8(int(ch.kind))
    w.opaque(ch.member)
    w.u32(ch.leaf)
    w.opaque(ch.data)


def _decode_change(r: Reader) -> Change:
    kind = r.u8()
    try:
        k = ChangeKind(kind)
    except ValueError:
        raise DecodeError(f"unknown change kind {kind}") from None
    member, leaf, data = r.opaque(), r.u32(), r.opaque()
    try:
        return Change(k, member, leaf, data)
    except InvalidArgument as e:
        raise DecodeError(f"invalid change: {e}") from None


def encode_record(w: Writer, rec: OpRecord) -> None:
    """Encode an `OpRecord`."""
    w.opaque(rec.cid)
    w.opaque(rec.author)
    w.u64(rec.seq)
    w.optional(rec.prev, Writer.opaque)
    w.vector(rec.parents, Writer.opaque)
    w.vector(rec.epochs, Writer.opaque)
    w.optional(rec.changes, lambda ww, chs: ww.vector(chs, _encode_change))


def decode_record(r: Reader) -> OpRecord:
    """Decode an `OpRecord`; `DecodeError` for anything malformed."""
    cid, author, seq = r.opaque(), r.opaque(), r.u64()
    prev = r.optional(Reader.opaque)
    parents = tuple(r.vector(Reader.opaque))
    epochs = tuple(r.vector(Reader.opaque))
    changes = r.optional(lambda rr: tuple(rr.vector(_decode_change)))
    if not cid or not author or any(not p for p in (*parents, *epochs)) or prev == b"":
        raise DecodeError("empty identifier in a record")
    try:
        return OpRecord(cid, author, seq, prev, parents, epochs, changes)
    except InvalidArgument as e:
        raise DecodeError(f"invalid record: {e}") from None


def decode_member(r: Reader) -> Member:
    """Decode a `Member`; `DecodeError` for an empty field."""
    key, leaf, data, added_in, updated_in = r.opaque(), r.u32(), r.opaque(), r.opaque(), r.opaque()
    if not key or not data or not added_in or not updated_in:
        raise DecodeError("empty field in a member")
    return Member(key, leaf, data, added_in, updated_in)


def _links(rec: OpRecord) -> tuple[bytes, ...]:
    return (*rec.parents, *((rec.prev,) if rec.prev is not None else ()))


def _check_changes(state: Membership, changes: tuple[Change, ...]) -> None:
    """RFC 9420 validity of a commit's changes against its parent state (section 12.2)."""
    added: set[bytes] = set()
    for ch in changes:
        if ch.kind == ChangeKind.ADD:
            if ch.member in state or ch.member in added:
                raise ProtocolError("commit adds a member already in the group")
            added.add(ch.member)
        elif ch.member not in state:
            raise ProtocolError(f"commit's {ch.kind.name} names a non-member")
