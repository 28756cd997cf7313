"""Membership as a CRDT: the conflict rules of docs/merge.md section 3, as a pure replay.

The engine (:mod:`crdt_mls.merge.dag`) turns every delivered commit into an `OpRecord`
listing its membership `Change`s.  `replay` computes the membership of a set of heads from
the commits of their causal past, in one deterministic topological order, applying the
rules (design doc section 5, docs/merge.md section 3):

* strong remove, transitively voiding the removed member's concurrent commits;
* mutual removal: `MutualRemoval.BOTH` (default) or `MutualRemoval.SENIORITY`;
* weak idle eviction (`ChangeKind.EVICT`): void when the evicted member has a concurrent
  operation in the merged region;
* joiners keep their leaf; a leaf index taken twice moves the later joiner to the leftmost
  free leaf; the same person added twice is added once (first add in the order);
* concurrent updates of one leaf: the last in the order wins;
* a proposal committed by two concurrent commits takes effect once (changes are idempotent).

Members are identified by their signature key (unique among members, RFC 9420 section 7.3);
a re-add after a removal is a new *instance* (``Member.added_in`` differs).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from crdt_mls.errors import InvalidArgument

__all__ = [
    "Change",
    "ChangeKind",
    "Member",
    "Membership",
    "MutualRemoval",
    "OpRecord",
    "ReplayResult",
    "apply_commit",
    "replay",
]


class ChangeKind(IntEnum):
    """What a commit does to one member (docs/merge.md section 2)."""

    ADD = 1  #: member added at ``leaf`` with LeafNode ``data``
    REMOVE = 2  #: strong remove (RFC 9420 Remove proposal)
    EVICT = 3  #: idle eviction: a Remove marked as eviction, weak (design section 5.4)
    UPDATE = 4  #: member's LeafNode replaced by ``data`` (Update proposal or the committer's path)


class MutualRemoval(IntEnum):
    """Rule for two members removing each other concurrently (design section 5.3)."""

    BOTH = 1  #: both removed (default: neither can be trusted by the other)
    SENIORITY = 2  #: the member added earlier (causally, then by order) stays


@dataclass(frozen=True, slots=True)
class Change:
    """One membership effect of a commit; ``member`` is the signature key concerned."""

    kind: ChangeKind
    member: bytes
    leaf: int = 0
    data: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ChangeKind):
            raise InvalidArgument("change kind must be a ChangeKind")
        if type(self.member) is not bytes or not self.member:
            raise InvalidArgument("change member must be a non-empty signature key")
        if type(self.leaf) is not int or self.leaf < 0:
            raise InvalidArgument("change leaf must be a non-negative int")
        if self.kind in (ChangeKind.ADD, ChangeKind.UPDATE) and not self.data:
            raise InvalidArgument(f"a {self.kind.name} change needs the member's LeafNode data")


@dataclass(frozen=True, slots=True)
class OpRecord:
    """What the merge engine needs of one delivered operation node.

    ``parents`` are the node's causal parents (any node kind), ``prev`` its author's
    previous node.  ``epochs`` are the epochs (commit CIDs) it builds on: one for an
    ordinary commit or an application/ack/proposal node, several for a merge commit, none
    for the genesis.  ``changes`` is ``None`` for a non-commit node.
    """

    cid: bytes
    author: bytes
    seq: int
    prev: bytes | None
    parents: tuple[bytes, ...]
    epochs: tuple[bytes, ...]
    changes: tuple[Change, ...] | None = None

    @property
    def is_commit(self) -> bool:
        return self.changes is not None

    @property
    def is_merge(self) -> bool:
        return self.changes is not None and len(self.epochs) > 1


@dataclass(frozen=True, slots=True)
class Member:
    """One member instance: signature key, leaf index, LeafNode bytes, provenance CIDs."""

    key: bytes
    leaf: int
    data: bytes = field(repr=False)
    added_in: bytes = field(repr=False)
    updated_in: bytes = field(repr=False)


class Membership:
    """The membership part of S(heads): an immutable map signature key -> `Member`.

    ``members`` lists them by leaf index.  Lookups are O(1); deriving the next state copies two
    dicts (C speed) instead of rebuilding and sorting, so a linear commit stays cheap at 50,000
    members.

    *Diffs.*  A membership derived from another one (`apply_commit`, `replay`) remembers it,
    weakly, with the keys the derivation may have changed; `diff` follows these links to a common
    ancestor, so the difference between S(heads) and the state it was replayed from costs
    O(changes), not O(members) (the merged ratchet tree is built from it, docs/merge.md 5).
    Links are weak references: they never keep an old state alive, and when one is gone `diff`
    falls back to comparing every member.
    """

    __slots__ = ("__weakref__", "_by_key", "_by_leaf", "_origin", "_sorted", "_touched")

    #: longest chain of derivations `diff` follows before comparing every member instead
    MAX_DIFF_DEPTH = 64

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self._by_key: dict[bytes, Member] = {m.key: m for m in members}
        self._by_leaf: dict[int, bytes] | None = None
        self._sorted: tuple[Member, ...] | None = None
        self._origin: weakref.ref[Membership] | None = None
        self._touched: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, members: Iterable[Member]) -> Membership:
        """Build and validate: one member per leaf, one per signature key."""
        ms = list(members)
        out = cls(ms)
        if len(out._by_key) != len(ms):
            raise InvalidArgument("two members with one signature key")
        if len(out._leaves()) != len(ms):
            raise InvalidArgument("two members on one leaf")
        return out

    @classmethod
    def _from_maps(cls, by_key: dict[bytes, Member], by_leaf: dict[int, bytes] | None) -> Membership:
        out = cls()
        out._by_key = by_key
        out._by_leaf = by_leaf
        return out

    def _derived_from(self, origin: Membership, touched: Iterable[bytes]) -> Membership:
        """Record that this membership equals ``origin`` except possibly at the ``touched`` keys
        (a superset of the keys whose `Member` differs); returns ``self``."""
        if origin is not self:
            self._origin = weakref.ref(origin)
            self._touched = frozenset(touched)
        return self

    def _ancestry(self) -> dict[int, tuple[Membership, frozenset[bytes]]]:
        """id -> (ancestor, keys touched between it and ``self``), ``self`` included."""
        out: dict[int, tuple[Membership, frozenset[bytes]]] = {id(self): (self, frozenset())}
        cur: Membership = self
        acc: frozenset[bytes] = frozenset()
        for _ in range(self.MAX_DIFF_DEPTH):
            ref = cur._origin
            parent = ref() if ref is not None else None
            if parent is None or id(parent) in out:
                break
            acc = acc | cur._touched
            out[id(parent)] = (parent, acc)
            cur = parent
        return out

    def diff(self, other: Membership) -> frozenset[bytes]:
        """Signature keys whose `Member` differs between the two memberships (present in one
        only, or another leaf, LeafNode or provenance).  O(changes) when one was derived from the
        other or both from a common state that is still alive (class docstring), else O(members)."""
        if other is self:
            return frozenset()
        mine = self._ancestry()
        theirs = other._ancestry()
        best: frozenset[bytes] | None = None
        for k, (_m, acc) in mine.items():
            hit = theirs.get(k)
            if hit is not None and (best is None or len(acc) + len(hit[1]) < len(best)):
                best = acc | hit[1]
        a, b = self._by_key, other._by_key
        keys: Iterable[bytes] = best if best is not None else a.keys() | b.keys()
        return frozenset(k for k in keys if a.get(k) != b.get(k))

    def _leaves(self) -> dict[int, bytes]:
        if self._by_leaf is None:
            self._by_leaf = {m.leaf: m.key for m in self._by_key.values()}
        return self._by_leaf

    @property
    def members(self) -> tuple[Member, ...]:
        if self._sorted is None:
            self._sorted = tuple(sorted(self._by_key.values(), key=lambda m: m.leaf))
        return self._sorted

    def keys(self) -> frozenset[bytes]:
        return frozenset(self._by_key)

    def by_key(self) -> dict[bytes, Member]:
        return dict(self._by_key)

    def by_leaf(self) -> dict[int, Member]:
        return {m.leaf: m for m in self._by_key.values()}

    def get(self, key: bytes) -> Member | None:
        return self._by_key.get(key)

    def at_leaf(self, leaf: int) -> Member | None:
        """The member at ``leaf``, if any (O(1) once the leaf index is built)."""
        key = self._leaves().get(leaf)
        return None if key is None else self._by_key[key]

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Membership):
            return NotImplemented
        return self._by_key == other._by_key

    def __hash__(self) -> int:
        return hash(frozenset(self._by_key.values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{m.leaf}:{m.key[:4].hex()}" for m in self.members[:8])
        more = ", ..." if len(self) > 8 else ""
        return f"Membership({len(self)} members: {shown}{more})"


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Outcome of `replay`: the membership, the void commits, the removals that took effect."""

    membership: Membership
    void: frozenset[bytes]
    removals: frozenset[tuple[bytes, int]]  #: (commit cid, change index) of effective removes/evictions
    moved: frozenset[bytes]  #: keys of joiners moved off a taken leaf


def _leftmost_free(taken: Mapping[int, bytes]) -> int:
    i = 0
    while i in taken:
        i += 1
    return i


def apply_commit(state: Membership, rec: OpRecord) -> Membership:
    """Apply one commit with no concurrency (a linear extension, RFC 9420 semantics)."""
    assert rec.changes is not None
    by_key = dict(state._by_key)
    if not any(ch.kind == ChangeKind.ADD for ch in rec.changes):
        # no leaf is taken: the leaf index map is rebuilt lazily if a later commit needs it
        for ch in rec.changes:
            _apply_change(by_key, None, rec.cid, ch, effective=True, moved=set())
        return Membership._from_maps(by_key, None)._derived_from(state, (ch.member for ch in rec.changes))
    by_leaf = dict(state._leaves())
    for ch in rec.changes:
        _apply_change(by_key, by_leaf, rec.cid, ch, effective=True, moved=set())
    return Membership._from_maps(by_key, by_leaf)._derived_from(state, (ch.member for ch in rec.changes))


def _apply_change(
    by_key: dict[bytes, Member],
    by_leaf: dict[int, bytes] | None,
    cid: bytes,
    ch: Change,
    *,
    effective: bool,
    moved: set[bytes],
) -> None:
    if ch.kind == ChangeKind.ADD:
        assert by_leaf is not None
        if ch.member in by_key:  # the same person added twice: the first add stands
            return
        leaf = ch.leaf
        if leaf in by_leaf:  # the leaf index was taken concurrently: move to the leftmost free leaf
            leaf = _leftmost_free(by_leaf)
            moved.add(ch.member)
        by_key[ch.member] = Member(ch.member, leaf, ch.data, cid, cid)
        by_leaf[leaf] = ch.member
    elif ch.kind in (ChangeKind.REMOVE, ChangeKind.EVICT):
        m = by_key.pop(ch.member, None) if effective else None
        if m is not None and by_leaf is not None:
            del by_leaf[m.leaf]
    else:  # UPDATE: the last in the order wins
        m = by_key.get(ch.member)
        if m is not None and m.data != ch.data:
            by_key[ch.member] = replace(m, data=ch.data, updated_in=cid)


#: ``concurrent(a, b)``: neither record is in the other's causal past
Concurrent = Callable[[OpRecord, OpRecord], bool]
#: ``eviction_void(rec, change)``: the evicted member has a concurrent operation in the region
EvictionVoid = Callable[[OpRecord, Change], bool]
#: ``rank(cid)``: the commit's position key in the deterministic order (smaller = earlier)
Rank = Callable[[bytes], tuple[int, bytes]]
#: ``log_position(rec, member)``: the position in ``member``'s log at which the LeafNode of an UPDATE
#: of ``member`` carried by ``rec`` was made, at the latest: ``rec.seq`` when ``member`` wrote ``rec``,
#: else ``member``'s last node in ``rec``'s causal past (its committed Update proposal is no later)
LogPosition = Callable[[OpRecord, bytes], int]


def replay(
    base: Membership,
    commits: Sequence[OpRecord],
    *,
    concurrent: Concurrent,
    eviction_void: EvictionVoid,
    rank: Rank,
    mode: MutualRemoval = MutualRemoval.BOTH,
    log_position: LogPosition | None = None,
) -> ReplayResult:
    """Membership after ``commits`` (already in the deterministic order) on top of ``base``.

    ``log_position(rec, member)``: where in ``member``'s own log the LeafNode of an UPDATE of
    ``member`` carried by ``rec`` was made, at the latest (docs/merge.md 3.7); without it, the
    last UPDATE in the order wins.

    Removals that take effect and void commits depend on each other (a void commit's
    removals do not count; a removal voids its target's concurrent commits), so they are
    computed as a fixpoint; should the iteration cycle (removal cycles), the removals are taken
    greedily in the deterministic order (docs/merge.md section 3.4).
    """
    # the ADD that creates each instance (the first; a later one only after a removal); only the
    # region's changes are walked, base members keep their provenance (O(region), not O(members))
    added_in: dict[bytes, bytes] = {}
    present: dict[bytes, bool] = {}
    candidates: list[tuple[OpRecord, int, Change]] = []
    for rec in commits:
        assert rec.changes is not None
        for ch in rec.changes:
            here = present.get(ch.member, ch.member in base._by_key)
            if ch.kind == ChangeKind.ADD and not here:
                added_in[ch.member] = rec.cid
                present[ch.member] = True
            elif ch.kind in (ChangeKind.REMOVE, ChangeKind.EVICT):
                present[ch.member] = False
    seniority: dict[bytes, tuple[tuple[int, bytes], bytes] | None] = {}

    def senior(key: bytes) -> tuple[tuple[int, bytes], bytes] | None:
        """(rank of the ADD that created the instance, key); ``None`` for a stranger."""
        if key not in seniority:
            cid = added_in.get(key)
            if cid is None:
                m = base._by_key.get(key)
                cid = None if m is None else m.added_in
            seniority[key] = None if cid is None else (rank(cid), key)
        return seniority[key]

    for rec in commits:
        assert rec.changes is not None
        for i, ch in enumerate(rec.changes):
            if ch.kind == ChangeKind.REMOVE or (ch.kind == ChangeKind.EVICT and not eviction_void(rec, ch)):
                candidates.append((rec, i, ch))
    if mode == MutualRemoval.SENIORITY:
        # a junior's removal of a senior who concurrently removes it never counts
        def junior_mutual(r: OpRecord, ch: Change) -> bool:
            far = (((1 << 62), b""), b"")
            if (senior(r.author) or far) <= (senior(ch.member) or far):
                return False
            return any(o.author == ch.member and c.member == r.author and concurrent(o, r) for o, _j, c in candidates)

        candidates = [(r, i, ch) for r, i, ch in candidates if not junior_mutual(r, ch)]
    effective = frozenset((r.cid, i) for r, i, _ in candidates)
    seen: list[frozenset[tuple[bytes, int]]] = []
    result = _simulate(base, commits, candidates, effective, concurrent, mode, log_position)
    for _ in range(len(candidates) + 2):
        nxt = result.removals
        if nxt == effective:
            break
        if nxt in seen:
            # removal cycles (a removes b, b removes c, c removes a, concurrently) have no
            # fixpoint: take the removals greedily in the deterministic order, skipping one whose
            # author an already taken, concurrent, non-mutual removal removes
            result = _simulate(
                base, commits, candidates, _greedy(candidates, concurrent, mode), concurrent, mode, log_position
            )
            break
        seen.append(effective)
        effective = nxt
        result = _simulate(base, commits, candidates, effective, concurrent, mode, log_position)
    # every key whose Member can differ from ``base`` is named by a change (moves are ADDs)
    result.membership._derived_from(base, (ch.member for rec in commits for ch in rec.changes or ()))
    return result


def _greedy(
    candidates: Sequence[tuple[OpRecord, int, Change]], concurrent: Concurrent, mode: MutualRemoval
) -> frozenset[tuple[bytes, int]]:
    taken: list[tuple[OpRecord, Change]] = []
    out: set[tuple[bytes, int]] = set()
    for r, i, ch in candidates:
        blocked = any(
            c.member == r.author
            and concurrent(o, r)
            and not (mode == MutualRemoval.BOTH and ch.member == o.author)  # a mutual pair: both stand
            for o, c in taken
        )
        if not blocked:
            taken.append((r, ch))
            out.add((r.cid, i))
    return frozenset(out)


def _simulate(
    base: Membership,
    commits: Sequence[OpRecord],
    candidates: Sequence[tuple[OpRecord, int, Change]],
    effective: frozenset[tuple[bytes, int]],
    concurrent: Concurrent,
    mode: MutualRemoval,
    log_position: LogPosition | None = None,
) -> ReplayResult:
    """One pass: apply the commits in order given the set of removals assumed effective."""
    by_key = dict(base._by_key)
    by_leaf = dict(base._leaves())
    removes_of: dict[bytes, list[OpRecord]] = {}
    for r, i, ch in candidates:
        if (r.cid, i) in effective:
            removes_of.setdefault(ch.member, []).append(r)

    def mutual(rec: OpRecord, r: OpRecord) -> bool:
        """``rec`` (by the target of ``r``) removes ``r``'s author concurrently (BOTH mode keeps it)."""
        assert rec.changes is not None
        return (
            mode == MutualRemoval.BOTH
            and any(c.kind in (ChangeKind.REMOVE, ChangeKind.EVICT) and c.member == r.author for c in rec.changes)
            and concurrent(rec, r)
        )

    void: set[bytes] = set()
    moved: set[bytes] = set()
    removed_by: dict[bytes, OpRecord] = {}
    placed: set[bytes] = set()  #: members an ADD of this region placed (their leaf may differ from a branch's)
    newest: dict[bytes, int] = {}  #: member -> log position of the UPDATE applied to it (rule 3.7)
    for rec in commits:
        assert rec.changes is not None
        a = rec.author
        # strong remove: a commit by a member concurrent with an effective removal of it is void
        voided = any(r.cid != rec.cid and concurrent(rec, r) and not mutual(rec, r) for r in removes_of.get(a, ()))
        if not voided and a not in by_key:
            r0 = removed_by.get(a)
            voided = r0 is None or not mutual(rec, r0)
        if voided:
            void.add(rec.cid)
            continue
        for i, ch in enumerate(rec.changes):
            eff_here = (rec.cid, i) in effective
            if ch.kind == ChangeKind.ADD and any(concurrent(rec, r) for r in removes_of.get(ch.member, ())):
                continue  # strong remove covers a concurrent (re-)add of the same person
            if eff_here and ch.member in by_key and ch.kind in (ChangeKind.REMOVE, ChangeKind.EVICT):
                removed_by[ch.member] = rec
            if ch.kind == ChangeKind.ADD:
                placed.add(ch.member)
            elif ch.kind == ChangeKind.UPDATE and ch.member in placed:
                m = by_key.get(ch.member)
                if m is not None and m.leaf != ch.leaf:
                    # made at another leaf (a moved joiner's old one, 3.2, or the other instance of
                    # a person added twice, 3.1): its LeafNode is signed for that leaf index
                    # (RFC 9420 7.2), so it does not follow the member; it keeps the leaf it has here
                    continue
            if ch.kind == ChangeKind.UPDATE and log_position is not None:
                # rule 3.7: the LeafNode the member made last in its own log wins, not the one whose
                # carrying commit comes last (an Update proposal committed by someone else,
                # concurrently with the member's own later commit, must not bring back a leaf
                # key an attacker who compromised the member before that commit holds)
                pos = log_position(rec, ch.member)
                if pos < newest.get(ch.member, -1):
                    continue
                newest[ch.member] = pos
            _apply_change(by_key, by_leaf, rec.cid, ch, effective=eff_here, moved=moved)
    still = frozenset((r.cid, i) for r, i, _ in candidates if r.cid not in void)
    return ReplayResult(Membership._from_maps(by_key, by_leaf), frozenset(void), still, frozenset(moved))
