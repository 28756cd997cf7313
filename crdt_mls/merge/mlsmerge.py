"""The cryptographic merge: merged ratchet tree, merge key schedule, merge commits and the
merge Welcome (design doc section 5.5-5.7; docs/merge.md sections 5-7).

A merge commit has several parent epochs.  Every member of every parent epoch computes the
*merged base tree* from the parents' public trees and the merged membership (S(heads),
:mod:`crdt_mls.merge.dag`) with `merged_base_tree`:

* leaves come from the membership (joiners keep their leaf; moved joiners at their new leaf);
* a parent node is kept only if every parent tree holds the very same key there (so it was
  written in the common past) and none of the members who know it (below it, not unmerged,
  in any parent) left the group; everything else is blank ("blank on conflict", "re-blank
  removed paths", docs/merge.md section 5);
* a member below a kept node is listed in its ``unmerged_leaves`` unless it knows the node
  in every parent tree that holds it.

The committer then sends a fresh UpdatePath over the merged base tree.  The merge
``init_secret`` is ``ExpandWithLabel(Extract(0, init_1 || ... || init_k), "merge init",
parents_hash, Nh)`` over the parents it includes, in CID order; members of the merged group
who are not members of every parent epoch get the epoch's ``joiner_secret`` in a merge
Welcome (an RFC 9420 ``Welcome`` addressed to their leaf keys).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    InvalidArgument,
    MissingBaseError,
    ProtocolError,
    SignatureError,
    TreeError,
    WelcomeError,
    WrongGroupError,
)
from crdt_mls.merge.rules import Member, Membership
from crdt_mls.mls import codec, treemath
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.group import Group
from crdt_mls.mls.key_schedule import EpochSecrets, derive_epoch_secrets, epoch_secrets_from_joiner
from crdt_mls.mls.messages import (
    MLS10,
    EncryptedGroupSecrets,
    Extension,
    ExtensionType,
    GroupContext,
    GroupInfo,
    GroupSecrets,
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    ParentNode,
    UpdatePath,
    Welcome,
    find_extension,
)
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.secret_tree import SecretTree
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite
from crdt_mls.mls.transcript import confirmation_tag, interim_transcript_hash, verify_confirmation_tag
from crdt_mls.mls.treekem import TreePrivateKeys, create_update_path, process_update_path
from crdt_mls.mls.welcome import decrypt_group_info, sign_group_info, verify_group_info

__all__ = [
    "BaseEpoch",
    "BaseLookup",
    "MergeReport",
    "MERGE_COMMIT_VERSION",
    "MERGE_VERSION",
    "MergeCommit",
    "MergeCommitContent",
    "MergeMessage",
    "MergeParentRef",
    "ParentEpoch",
    "create_merge_commit",
    "join_merge",
    "merge_init_secret",
    "merged_base_tree",
    "merged_private_keys",
    "parents_hash",
    "process_merge_commit",
]

Rng = Callable[[int], bytes]
MERGE_VERSION = 1
#: version of `MergeCommitContent` (2: names the base epoch; docs/merge.md 6.1)
MERGE_COMMIT_VERSION = 2
_SIG_LABEL = "MergeCommitTBS"
_WRAP_LABEL = b"crdt-mls merge wrap"
_LEAF_REF_LABEL = "crdt-mls merge leaf ref"


# ----------------------------------------------------------------------------- parents


@dataclass(frozen=True, slots=True)
class ParentEpoch:
    """One parent epoch of a merge: its id (commit CID), public tree and GroupContext, and the
    local member's `Group` in that epoch when it is a member (``None`` otherwise)."""

    epoch_id: bytes
    tree: RatchetTree = field(repr=False, compare=False)
    group_context: GroupContext
    group: Group | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, epoch_id: bytes, group: Group) -> ParentEpoch:
        return cls(bytes(epoch_id), group.tree, group.group_context, group if group.active else None)


def _sorted_parents(parents: Sequence[ParentEpoch]) -> list[ParentEpoch]:
    if len(parents) < 2:
        raise InvalidArgument("a merge needs at least two parent epochs")
    ps = sorted(parents, key=lambda p: p.epoch_id)
    if len({p.epoch_id for p in ps}) != len(ps):
        raise InvalidArgument("repeated parent epoch")
    gc0 = ps[0].group_context
    for p in ps[1:]:
        gc = p.group_context
        if gc.group_id != gc0.group_id or gc.cipher_suite != gc0.cipher_suite or gc.version != gc0.version:
            raise WrongGroupError("merge parents belong to different groups")
        if gc.extensions != gc0.extensions:
            raise ProtocolError("merge parents disagree on the group context extensions")
    return ps


def parents_hash(suite: CipherSuite, parents: Sequence[ParentEpoch]) -> bytes:
    """``Hash(MergeParents)``: every parent's epoch id and GroupContext, in CID order (docs/merge.md 6.1)."""
    w = Writer()
    w.u8(MERGE_VERSION)
    for p in sorted(parents, key=lambda p: p.epoch_id):
        w.opaque(p.epoch_id)
        w.opaque(p.group_context.to_bytes())
    return suite.hash(b"crdt-mls merge parents\x00" + w.getvalue())


def merge_init_secret(suite: CipherSuite, phash: bytes, init_secrets: Sequence[bytes]) -> bytes:
    """``ExpandWithLabel(Extract(0, init_1 || ... || init_k), "merge init", parents_hash, Nh)``
    over the included parents' init secrets in CID order (design doc 5.7, docs/merge.md 6.2)."""
    nh = suite.hash_length
    if not init_secrets or any(len(s) != nh for s in init_secrets):
        raise InvalidArgument("merge_init_secret needs at least one init secret of Nh bytes")
    prk = suite.kdf_extract(bytes(nh), b"".join(init_secrets))
    return suite.expand_with_label(prk, "merge init", phash, nh)


# ----------------------------------------------------------------------------- tree merge


@dataclass(frozen=True, slots=True)
class BaseEpoch:
    """The merge's *base* (docs/merge.md section 5): the latest cut of the merged region
    (`MergeState.base`), an epoch every parent epoch descends from, with its public tree and
    membership.

    ``membership`` is ``GroupDag.state({epoch_id}).membership``: S(heads) was replayed from it,
    so their difference costs O(changes) (`Membership.diff`); without it the merged leaves are
    found by comparing every member, O(n)."""

    epoch_id: bytes
    tree: RatchetTree = field(repr=False, compare=False)
    membership: Membership | None = field(default=None, repr=False, compare=False)


#: ``lookup(epoch_id)``: the base epoch a merge commit names, or ``None`` when this replica does
#: not keep that epoch's public tree (docs/merge.md 6.4)
BaseLookup = Callable[[bytes], "BaseEpoch | None"]

_Value = tuple[bytes, bytes | None] | None


@dataclass(slots=True)
class MergeReport:
    """What `merged_base_tree` blanked and why (node indices), for tests and diagnostics."""

    conflicts: set[int] = field(default_factory=set)  #: rule 3: parents changed it differently
    reblanked: set[int] = field(default_factory=set)  #: rule 4: known to someone not in the merged tree
    unmerged_order: set[int] = field(default_factory=set)  #: rule 5: RFC 9420 unmerged-leaves order
    parent_hash: set[int] = field(default_factory=set)  #: rule 6: not parent-hash valid
    #: leaf indices where the merged tree, the reference or some parent differ (every other leaf
    #: holds the same member with the same LeafNode in all of them)
    changed_leaves: list[int] = field(default_factory=list)

    def in_parents(self, tree: RatchetTree, trees: Sequence[RatchetTree], leaf: int) -> list[bool]:
        """For the member at ``leaf`` of the merged ``tree``: is its signature key in each parent
        tree?  O(log changes): a leaf that changed nowhere holds the same member everywhere."""
        lf = tree.leaf(leaf)
        assert lf is not None
        i = bisect.bisect_left(self.changed_leaves, leaf)
        if i == len(self.changed_leaves) or self.changed_leaves[i] != leaf:
            return [True] * len(trees)
        return [t.signature_key_count(lf.signature_key) > 0 for t in trees]


def _value(v: LeafNode | ParentNode | None) -> _Value:
    """A parent node's value for the merge rule: encryption key and parent hash
    (``unmerged_leaves`` are recomputed for the merged tree)."""
    return None if v is None else (v.encryption_key, v.parent_hash)


def _node_at(tree: RatchetTree, x: int) -> LeafNode | ParentNode | None:
    return tree.node(x) if x < tree.width else None


def _parent_at(tree: RatchetTree, x: int) -> ParentNode | None:
    return tree.parent_node(x) if x < tree.width else None


def _leaf_at(tree: RatchetTree, i: int) -> LeafNode | None:
    return tree.leaf(i) if i < tree.n_leaves else None


def _has_key(ref: RatchetTree, leaf: int, key: bytes) -> bool:
    """Whether the member with signature ``key``, at ``leaf`` of a merged tree, is in ``ref``
    (members never move except joiners, who are not in the base: their leaf is enough)."""
    lf = _leaf_at(ref, leaf)
    return lf is not None and lf.signature_key == key


def _same_leaf(a: LeafNode | None, b: LeafNode | None) -> bool:
    return a is b or (a is not None and b is not None and a.to_bytes() == b.to_bytes())


def _span(x: int) -> tuple[int, int]:
    """First and last leaf index below node ``x``."""
    lvl = treemath.level(x)
    first = (x - ((1 << lvl) - 1)) >> 1
    return first, first + (1 << lvl) - 1


def _below(x: int, leaf: int) -> bool:
    lo, hi = _span(x)
    return lo <= leaf <= hi


def _close_upward(start: Iterable[int], width: int, into: set[int]) -> None:
    """Add ``start`` and all their ancestors below ``width`` to ``into``, which must already be
    closed upward (a node's subtree does not depend on the tree's width, RFC 9420 appendix C)."""
    for x in start:
        if x in into or x >= width:
            continue
        into.add(x)
        k = treemath.level(x)
        while True:
            x = (x | (1 << k)) ^ (((x >> (k + 1)) & 1) << (k + 1))  # parent in an unbounded tree
            k += 1
            if x >= width or x in into:
                break
            into.add(x)


def _tree_diff(a: RatchetTree, b: RatchetTree) -> list[int]:
    """Node indices whose values differ (a node outside one tree counts as blank there):
    O(differing chunks) for trees that share structure (`RatchetTree.diff`)."""
    return a.diff(b)


def _node_parent_hash(v: LeafNode | ParentNode | None) -> bytes | None:
    if isinstance(v, ParentNode):
        return v.parent_hash
    if isinstance(v, LeafNode) and v.leaf_node_source == LeafNodeSource.COMMIT:
        return v.parent_hash
    return None


def _parent_hash_valid(tree: RatchetTree, p: int) -> bool:
    """RFC 9420 7.9.2 for one non-blank parent node: exactly one child side has a node ``d`` in
    its resolution whose parent hash is ``p``'s and whose other resolution nodes are exactly
    ``p``'s unmerged leaves there (what `RatchetTree.parent_hash_valid` checks, with the size of
    the resolution compared first, so a large blank subtree costs nothing)."""
    v = tree.parent_node(p)
    assert v is not None
    lc, rc = treemath.left(p), treemath.right(p)
    found = 0
    for c, s in ((lc, rc), (rc, lc)):
        lo, hi = _span(c)
        um = {2 * u for u in v.unmerged_leaves if lo <= u <= hi}
        res = tree.resolution(c)
        if len(res) != len(um) + 1:
            continue
        rest = [d for d in res if d not in um]
        if len(rest) == 1 and _node_parent_hash(tree.node(rest[0])) == tree.compute_parent_hash(p, s):
            found += 1
    return found == 1


def _merged_leaves(
    ref: RatchetTree, ref_membership: Membership | None, membership: Membership
) -> dict[int, LeafNode | None]:
    """The leaves where the merged tree differs from ``ref`` (docs/merge.md 5 rule 1): every
    member of S(heads) at its leaf with the LeafNode of its last ADD/UPDATE in the order."""

    def decode(m: Member) -> LeafNode:
        try:
            leaf = codec.decode(LeafNode, m.data)
        except DecodeError as e:
            raise InvalidArgument(f"membership leaf {m.leaf} is not a LeafNode: {e}") from None
        if leaf.signature_key != m.key:
            raise InvalidArgument(f"membership leaf {m.leaf} does not carry the member's signature key")
        return leaf

    olds: list[int] = []
    news: list[Member] = []
    if ref_membership is not None:  # S(heads) was replayed from the reference: O(changes)
        changed = membership.diff(ref_membership)
        for k in changed:
            old, new = ref_membership.get(k), membership.get(k)
            if old is not None:
                lf = _leaf_at(ref, old.leaf)
                if lf is None or lf.signature_key != k:
                    raise InvalidArgument("the base membership does not match the base tree")
                olds.append(old.leaf)
            if new is not None:
                news.append(new)
        for placed in news:  # a leaf S fills must be free in the base or vacated by a change
            lf = _leaf_at(ref, placed.leaf)
            if lf is not None and lf.signature_key not in changed:
                raise InvalidArgument("the base membership does not match the base tree")
    else:  # no link to the reference's membership: compare every member, O(n)
        seen: set[bytes] = set()
        for i, lf in ref.members():
            seen.add(lf.signature_key)
            m = membership.get(lf.signature_key)
            if m is None or m.leaf != i or m.data != lf.to_bytes():
                olds.append(i)
                if m is not None:
                    news.append(m)
        news.extend(m for m in membership.members if m.key not in seen)
    out: dict[int, LeafNode | None] = dict.fromkeys(olds)
    for m in news:
        cur = _leaf_at(ref, m.leaf)
        out[m.leaf] = cur if cur is not None and cur.to_bytes() == m.data else decode(m)
    return {i: v for i, v in out.items() if not _same_leaf(v, _leaf_at(ref, i))}


def merged_base_tree(
    suite: CipherSuite,
    parents: Sequence[ParentEpoch],
    membership: Membership,
    base: BaseEpoch | None = None,
) -> RatchetTree:
    """The merged tree before the merge commit's UpdatePath (docs/merge.md section 5).

    Built from the ``base`` tree (the latest cut) and the nodes where some parent differs:

    1. leaves: every member of ``membership`` (S(heads)) at its leaf;
    2. a parent node that no parent epoch changed relative to the base (no change of an
       encryption key at it or below it) keeps the base value; one that some parents changed
       takes their value when they all hold the same one (key and parent hash; blank counts);
    3. otherwise it is blank (blank on conflict);
    4. a kept node is blanked if someone who knows it in a parent tree holding that value
       (below it, not unmerged) is not the same member at the same leaf with the same
       LeafNode in the merged tree: removed or voided members, moved joiners, members whose
       leaf changed on another branch -- this is what keeps removal and PCS (section 5.1);
    5. a member below a kept node that knows it in no parent tree holding that value is in its
       ``unmerged_leaves``; a node a member knows below a node it does not know is blanked
       (the RFC 9420 12.4.3.1 order of unmerged leaves);
    6. a node whose subtree changed and that is not parent-hash valid (RFC 9420 7.9.2) is
       blanked, so every epoch's tree passes a joiner's checks.

    Without a base (a replica merging from a pinned root, docs/merge.md 4.1) the first parent
    stands in for it and rule 2 keeps only nodes that every parent holds identically.

    Cost: O(changes x log n) node operations plus the parents' tree diffs (O(changed chunks)
    for trees that share structure), independent of the group size.
    """
    return _merge_tree(suite, parents, membership, base)[0]


def _merge_tree(
    suite: CipherSuite, parents: Sequence[ParentEpoch], membership: Membership, base: BaseEpoch | None
) -> tuple[RatchetTree, MergeReport]:
    ps = _sorted_parents(parents)
    if len(membership) == 0:
        raise InvalidArgument("the merged group has no members")
    ref = base.tree if base is not None else ps[0].tree
    trees = [p.tree for p in ps]
    if any(t.suite.suite_id != suite.suite_id for t in (ref, *trees)):
        raise InvalidArgument("the merge trees use another cipher suite")

    # rule 1: the merged leaves, on a copy of the reference (widened or truncated to fit)
    leaves = _merged_leaves(ref, base.membership if base is not None else None, membership)
    # the copy shares the reference's caches: build its key index, tree hashes and resolutions
    # once, in the reference (a no-op when warm), so that every merged tree derived from it (and
    # the commit processing on it) finds them built instead of rebuilding them per copy
    ref.has_encryption_key(b"")
    ref.tree_hash()
    ref.resolution(ref.root)
    tree = ref.copy()
    top = max((i for i, v in leaves.items() if v is not None), default=-1)
    while tree.n_leaves <= top:
        tree._extend()  # RFC 9420 7.7
    for i, lf in sorted(leaves.items()):
        if i < tree.n_leaves:
            tree.set_leaf(i, lf)
    if any(v is None for v in leaves.values()):
        tree._truncate()  # RFC 9420 7.7: the width holds the rightmost member
    width, n = tree.width, tree.n_leaves

    diffs = [_tree_diff(ref, t) for t in trees]
    changed_leaves = sorted({x >> 1 for d in diffs for x in d if x % 2 == 0} | set(leaves))
    report = MergeReport(changed_leaves=changed_leaves)

    # rules 2 and 3: per parent, the nodes with a changed key at them or below them
    changed: list[set[int]] = []
    for t, d in zip(trees, diffs, strict=True):
        up: set[int] = set()
        _close_upward(
            (x for x in d if x % 2 == 1 and x < width and _value(_node_at(ref, x)) != _value(_node_at(t, x))),
            width,
            up,
        )
        changed.append(up)
    chosen: dict[int, ParentNode | None] = {}
    for x in set().union(*changed):
        by = [t for t, c in zip(trees, changed, strict=True) if x in c]
        if base is not None and len({_value(_node_at(t, x)) for t in by}) == 1:
            chosen[x] = _parent_at(by[0], x)
        else:
            chosen[x] = None
            if any(_node_at(t, x) is not None for t in by):
                report.conflicts.add(x)

    def current(x: int) -> ParentNode | None:
        return chosen[x] if x in chosen else _parent_at(tree, x)

    # rule 4: a value known in a parent to someone who is not that member in the merged tree
    for t in trees:
        for i in changed_leaves:
            mine = _leaf_at(t, i)
            if mine is None or _same_leaf(mine, _leaf_at(tree, i)):
                continue
            for x in treemath.direct_path(2 * i, t.n_leaves):
                pv = t.parent_node(x)
                if x >= width or pv is None or i in pv.unmerged_leaves:
                    continue
                mv = current(x)
                if mv is not None and _value(mv) == _value(pv):
                    chosen[x] = None
                    report.reblanked.add(x)

    # rule 5: unmerged leaves of every node whose value, list or subtree changed
    todo: set[int] = {x for d in diffs for x in d if x % 2 == 1 and x < width}
    todo.update(chosen)
    for i in changed_leaves:
        if i < n:
            todo.update(treemath.direct_path(2 * i, n))
    final: dict[int, ParentNode | None] = {}
    for x in todo:
        v = current(x)
        final[x] = None if v is None else _with_unmerged(tree, trees, changed_leaves, x, v)
    # RFC 9420 12.4.3.1: a leaf unmerged at a node is unmerged at every non-blank node between;
    # a member that knows a lower node (of one branch) but not this one: blank the lower node
    for x in sorted(final, key=treemath.level, reverse=True):
        fv = final[x]
        if fv is None:
            continue
        for i in fv.unmerged_leaves:
            for q in treemath.direct_path(2 * i, n):
                if q == x:
                    break
                qv = final[q] if q in final else current(q)
                if qv is not None and i not in qv.unmerged_leaves:
                    final[q] = None
                    report.unmerged_order.add(q)
    for x, fv in final.items():
        old = tree.node(x)
        if old is not fv and old != fv:
            tree.set_node(x, fv)

    # rule 6: parent-hash validity of every non-blank node whose subtree changed, bottom-up
    touched: set[int] = set()
    _close_upward((*final, *(2 * i for i in changed_leaves if i < n)), width, touched)
    for x in sorted((y for y in touched if y % 2 == 1), key=treemath.level):
        if tree.node(x) is None:
            continue
        # a subtree identical to a parent's (same tree hash) is as parent-hash valid as there
        th = tree.tree_hash(x)
        if any(x < t.width and t.tree_hash(x) == th for t in trees):
            continue
        if not _parent_hash_valid(tree, x):
            tree.set_node(x, None)
            report.parent_hash.add(x)
    return tree, report


def _with_unmerged(
    tree: RatchetTree, trees: list[RatchetTree], changed_leaves: list[int], x: int, v: ParentNode
) -> ParentNode | None:
    """``v`` at ``x`` with the merged tree's members below ``x`` that do not know it as unmerged
    leaves (rule 5).  A member knows it iff some parent tree holds the same value at ``x`` with
    that member at the same leaf, with the same LeafNode, not unmerged there.  Candidates: the
    first such parent's unmerged leaves and the leaves that changed anywhere (every other leaf
    is the same member in the merged tree and every parent)."""
    key = _value(v)
    sources = [pv for t in trees if (pv := _parent_at(t, x)) is not None and _value(pv) == key]
    holders = [t for t in trees if (pv := _parent_at(t, x)) is not None and _value(pv) == key]
    if not sources:  # cannot happen: a kept value is held by a parent; blank is always safe
        return None
    lo, hi = _span(x)
    cand = set(sources[0].unmerged_leaves)
    cand.update(changed_leaves[bisect.bisect_left(changed_leaves, lo) : bisect.bisect_right(changed_leaves, hi)])
    unmerged = []
    for i in sorted(cand):
        lf = _leaf_at(tree, i)
        if lf is None or not lo <= i <= hi:
            continue
        if not any(
            i not in pv.unmerged_leaves and _same_leaf(_leaf_at(t, i), lf)
            for t, pv in zip(holders, sources, strict=True)
        ):
            unmerged.append(i)
    return ParentNode(v.encryption_key, v.parent_hash, tuple(unmerged))


def merged_private_keys(
    suite: CipherSuite, tree: RatchetTree, own_key: bytes, groups: Sequence[Group], *, own: int | None = None
) -> TreePrivateKeys:
    """The local member's private keys in a merged tree, taken from its earlier states
    ``groups`` (its parent-epoch states first, then any other state it still holds): its leaf
    key and the keys of kept nodes on its direct path, each matched by public key against
    ``tree`` and checked.  ``own``: the member's leaf if known (from S(heads)), else the tree
    is searched.

    The merged leaf need not be in a parent state: when every commit the member made on the
    merged branches is void (strong remove, a removal cycle resolved greedily, docs/merge.md
    3.4) but the member stays, its merged leaf is the one it had before those commits, whose
    private key only its state from before them holds (liveness, design sketch 6.5)."""
    if own is not None:
        lf = tree.leaf(own) if own < tree.n_leaves else None
        if lf is None or lf.signature_key != own_key:
            own = None
    if own is None:
        own = next((i for i, lf in tree.members() if lf.signature_key == own_key), None)
    if own is None:
        raise InvalidArgument("the local member is not in the merged tree")
    leaf = tree.leaf(own)
    assert leaf is not None
    keys: dict[int, bytes] = {}
    for g in groups:
        gl = g.tree.leaf(g.own_leaf) if g.own_leaf < g.tree.n_leaves else None
        k = g.private_keys.get(2 * g.own_leaf)
        if gl is not None and k is not None and gl.encryption_key == leaf.encryption_key:
            keys[2 * own] = k
            break
    if 2 * own not in keys:
        raise InvalidArgument("no state of the member holds the private key of its merged leaf")
    for x in treemath.direct_path(2 * own, tree.n_leaves):
        v = tree.parent_node(x)
        if v is None or own in v.unmerged_leaves:
            continue
        for g in groups:
            gv = g.tree.parent_node(x) if x < g.tree.width else None
            k = g.private_keys.get(x)
            if gv is not None and k is not None and gv.encryption_key == v.encryption_key:
                keys[x] = k
                break
    out = TreePrivateKeys(own, keys)
    out.verify(suite, tree)
    return out


# ----------------------------------------------------------------------------- wire format


@dataclass(frozen=True, slots=True)
class MergeParentRef:
    """``struct { opaque epoch_id<V>; uint8 included; }`` (docs/merge.md section 6.1)."""

    epoch_id: bytes
    included: bool

    def encode(self, w: Writer) -> None:
        w.opaque(self.epoch_id)
        w.boolean(self.included)

    @classmethod
    def decode(cls, r: Reader) -> MergeParentRef:
        return cls(r.opaque(), r.boolean())


@dataclass(frozen=True, slots=True)
class MergeCommitContent:
    """The signed part of a merge commit (docs/merge.md section 6.1, version 2).

    ``base_epoch`` names the merge's base (the latest cut, docs/merge.md 5), empty when the
    merged tree was built without one.  Version 1 (no base) is rejected with a `DecodeError`:
    its merged tree followed another rule, so a replica could not reproduce it."""

    group_id: bytes
    epoch: int
    parents: tuple[MergeParentRef, ...]
    committer: int
    base_tree_hash: bytes
    path: UpdatePath
    base_epoch: bytes = b""
    version: int = MERGE_COMMIT_VERSION

    def encode(self, w: Writer) -> None:
        w.u8(self.version)
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.vector(self.parents, lambda ww, p: p.encode(ww))
        w.opaque(self.base_epoch)
        w.u32(self.committer)
        w.opaque(self.base_tree_hash)
        self.path.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> MergeCommitContent:
        version = r.u8()
        if version == 1:
            raise DecodeError("merge commit version 1 (before base epochs, docs/merge.md 6.1) is not supported")
        if version != MERGE_COMMIT_VERSION:
            raise DecodeError(f"unsupported merge commit version {version}")
        gid = r.opaque()
        epoch = r.u64()
        parents = tuple(r.vector(MergeParentRef.decode))
        base_epoch = r.opaque()
        committer = r.u32()
        th = r.opaque()
        path = UpdatePath.decode(r)
        if len(parents) < 2:
            raise DecodeError("a merge commit has at least two parents")
        ids = [p.epoch_id for p in parents]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise DecodeError("merge parents must be strictly ascending by epoch id")
        if base_epoch in ids:
            raise DecodeError("a merge commit's base epoch is not one of its parents")
        return cls(gid, epoch, parents, committer, th, path, base_epoch, version)


@dataclass(frozen=True, slots=True)
class MergeCommit:
    """``struct { MergeCommitContent content; opaque signature<V>; opaque confirmation_tag<V>; }``."""

    content: MergeCommitContent
    signature: bytes
    confirmation_tag: bytes

    def encode(self, w: Writer) -> None:
        self.content.encode(w)
        w.opaque(self.signature)
        w.opaque(self.confirmation_tag)

    @classmethod
    def decode(cls, r: Reader) -> MergeCommit:
        return cls(MergeCommitContent.decode(r), r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class KeyWrap:
    """``struct { opaque epoch_id<V>; opaque sealed_key<V>; }``: the content key sealed under
    one included parent epoch's exporter (docs/merge.md section 6.3)."""

    epoch_id: bytes
    sealed_key: bytes

    def encode(self, w: Writer) -> None:
        w.opaque(self.epoch_id)
        w.opaque(self.sealed_key)

    @classmethod
    def decode(cls, r: Reader) -> KeyWrap:
        return cls(r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class MergeMessage:
    """What a merge commit node carries: nothing readable (docs/merge.md section 6.3).

    ``struct { uint8 version; KeyWrap wraps<V>; opaque ciphertext<V>; opaque welcome<V>; }``
    where ``ciphertext = AEAD(K, 0, "crdt-mls merge", MergeCommit)`` and ``welcome`` is an
    encoded RFC 9420 Welcome (empty when nobody needs one).
    """

    wraps: tuple[KeyWrap, ...]
    ciphertext: bytes
    welcome: bytes = b""
    version: int = MERGE_VERSION

    def encode(self, w: Writer) -> None:
        w.u8(self.version)
        w.vector(self.wraps, lambda ww, k: k.encode(ww))
        w.opaque(self.ciphertext)
        w.opaque(self.welcome)

    @classmethod
    def decode(cls, r: Reader) -> MergeMessage:
        version = r.u8()
        if version != MERGE_VERSION:
            raise DecodeError(f"unsupported merge message version {version}")
        return cls(tuple(r.vector(KeyWrap.decode)), r.opaque(), r.opaque(), version)

    def to_bytes(self) -> bytes:
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> MergeMessage:
        return codec.decode(cls, data)


def _wrap_key(group: Group, epoch_id: bytes) -> tuple[bytes, bytes]:
    suite = group.suite
    raw = group.export_secret(_WRAP_LABEL, epoch_id, suite.aead_key_length + suite.aead_nonce_length)
    return raw[: suite.aead_key_length], raw[suite.aead_key_length :]


def _leaf_ref(suite: CipherSuite, leaf: LeafNode) -> bytes:
    return suite.ref_hash(_LEAF_REF_LABEL, codec.encode(leaf))


# ----------------------------------------------------------------------------- create / process


@dataclass(frozen=True, slots=True, repr=False)
class _Prepared:
    suite: CipherSuite
    parents: list[ParentEpoch]
    phash: bytes
    base: RatchetTree
    report: MergeReport
    provisional: GroupContext

    def in_parents(self, leaf: int) -> list[bool]:
        """Whether the member at ``leaf`` of the merged tree is in each parent tree."""
        return self.report.in_parents(self.base, [p.tree for p in self.parents], leaf)


def _prepare(parents: Sequence[ParentEpoch], membership: Membership, base: BaseEpoch | None) -> _Prepared:
    ps = _sorted_parents(parents)
    gc0 = ps[0].group_context
    suite = get_cipher_suite(gc0.cipher_suite)
    phash = parents_hash(suite, ps)
    tree, report = _merge_tree(suite, ps, membership, base)
    epoch = max(p.group_context.epoch for p in ps) + 1
    provisional = GroupContext(
        gc0.version, gc0.cipher_suite, gc0.group_id, epoch, tree.tree_hash(), phash, gc0.extensions
    )
    return _Prepared(suite, ps, phash, tree, report, provisional)


def _confirmed(suite: CipherSuite, phash: bytes, content: MergeCommitContent, signature: bytes) -> bytes:
    w = Writer()
    content.encode(w)
    w.opaque(signature)
    return suite.hash(phash + w.getvalue())


def _new_group(
    template: Group,
    gc: GroupContext,
    tree: RatchetTree,
    own_leaf: int,
    keys: TreePrivateKeys,
    es: EpochSecrets,
    tag: bytes,
) -> Group:
    suite = template.suite
    return Group(
        group_context=gc,
        tree=tree,
        own_leaf=own_leaf,
        private_keys=keys,
        signature_priv=template.signature_priv,
        epoch_secrets=es,
        interim_transcript_hash=interim_transcript_hash(suite, gc.confirmed_transcript_hash, tag),
        confirmation_tag=tag,
        secret_tree=SecretTree(suite, es.encryption_secret, tree.n_leaves),
        external_psks=template.external_psks,
    )


def create_merge_commit(
    parents: Sequence[ParentEpoch],
    membership: Membership,
    *,
    base: BaseEpoch | None = None,
    rng: Rng = os.urandom,
    own_states: Sequence[Group] = (),
) -> tuple[bytes, Group]:
    """Issue a merge commit over ``parents`` with the merged ``membership`` (S(heads)) and the
    merge's ``base`` (the latest cut, `MergeState.base`, named in the commit; ``None`` only when
    the replica has no common cut, docs/merge.md 4.1 and 5).

    The committer is the local member of the parents that carry a ``group``; it must be a
    member of the merged group and of at least one parent epoch (whose init secrets it
    includes).  ``own_states``: the committer's other states (any epochs), searched after the
    parent states for its merged leaf key (`merged_private_keys`).  Returns ``(MergeMessage
    bytes, the committer's Group in the merged epoch)``.
    """
    prep = _prepare(parents, membership, base)
    suite = prep.suite
    mine = [p.group for p in prep.parents if p.group is not None]
    if not mine:
        raise InvalidArgument("the committer must be a member of at least one parent epoch")
    me = mine[0]
    own_key = me.leaf_node.signature_key
    if any(g.leaf_node.signature_key != own_key for g in (*mine, *own_states)):
        raise InvalidArgument("parent states belong to different members")
    own_member = membership.get(own_key)
    keys = merged_private_keys(
        suite, prep.base, own_key, [*mine, *own_states], own=own_member.leaf if own_member else None
    )
    own = keys.leaf_index
    created = create_update_path(prep.base, own, prep.provisional, me.signature_priv, rng=rng)
    refs = tuple(MergeParentRef(p.epoch_id, p.group is not None) for p in prep.parents)
    content = MergeCommitContent(
        prep.provisional.group_id,
        prep.provisional.epoch,
        refs,
        own,
        prep.base.tree_hash(),
        created.update_path,
        base.epoch_id if base is not None else b"",
    )
    signature = suite.sign_with_label(me.signature_priv, _SIG_LABEL, codec.encode(content))
    confirmed = _confirmed(suite, prep.phash, content, signature)
    gc = replace(created.group_context, confirmed_transcript_hash=confirmed)
    init = merge_init_secret(suite, prep.phash, [p.group.epoch_secrets.init_secret for p in prep.parents if p.group])
    es = derive_epoch_secrets(suite, init, created.commit_secret, gc, None)
    tag = confirmation_tag(suite, es.confirmation_key, confirmed)
    group = _new_group(me, gc, created.tree, own, created.private_keys, es, tag)
    commit = MergeCommit(content, signature, tag)

    # a merge Welcome for members who are not in every parent epoch, or not in the base tree
    # (they may not hold the base: joined after it); only members at a leaf that changed
    # somewhere can be either (`MergeReport.in_parents`)
    recipients = [
        (i, lf)
        for i in prep.report.changed_leaves
        if i != own
        and (lf := _leaf_at(created.tree, i)) is not None
        and (not all(prep.in_parents(i)) or (base is not None and not _has_key(base.tree, i, lf.signature_key)))
    ]
    welcome = b""
    if recipients:
        gi = GroupInfo(gc, (Extension.ratchet_tree(created.tree.to_wire()),), tag, own)
        gi = sign_group_info(suite, gi, me.signature_priv)
        key, nonce = es.welcome_key_nonce()
        egi = suite.aead_seal(key, nonce, b"", codec.encode(gi))
        secrets: list[EncryptedGroupSecrets] = []
        for i, lf in recipients:
            gs = GroupSecrets(es.joiner_secret, created.path_secret_for(i), ())
            kem, ct = suite.encrypt_with_label(lf.encryption_key, "Welcome", egi, codec.encode(gs), rng=rng)
            secrets.append(EncryptedGroupSecrets(_leaf_ref(suite, lf), HPKECiphertext(kem, ct)))
        welcome = codec.encode(Welcome(suite.suite_id, tuple(secrets), egi))

    content_key = rng(suite.aead_key_length)
    wraps = []
    for p in prep.parents:
        if p.group is not None:
            k, nonce = _wrap_key(p.group, p.epoch_id)
            wraps.append(KeyWrap(p.epoch_id, suite.aead_seal(k, nonce, p.epoch_id, content_key)))
    aad = _content_aad(suite, tuple(wraps), welcome)
    ciphertext = suite.aead_seal(content_key, bytes(suite.aead_nonce_length), aad, codec.encode(commit))
    return MergeMessage(tuple(wraps), ciphertext, welcome).to_bytes(), group


def _content_aad(suite: CipherSuite, wraps: tuple[KeyWrap, ...], welcome: bytes) -> bytes:
    """The sealed commit binds every key wrap and the Welcome (docs/merge.md section 6.3)."""
    w = Writer()
    w.vector(wraps, lambda ww, k: k.encode(ww))
    w.opaque(welcome)
    return b"crdt-mls merge\x00" + suite.hash(w.getvalue())


def _open(message: bytes, groups: Sequence[tuple[bytes, Group]]) -> MergeCommit:
    try:
        msg = MergeMessage.from_bytes(bytes(message))
    except DecodeError:
        raise
    for wrap in msg.wraps:
        for eid, g in groups:
            if eid != wrap.epoch_id:
                continue
            suite = g.suite
            k, nonce = _wrap_key(g, eid)
            try:
                content_key = suite.aead_open(k, nonce, eid, wrap.sealed_key)
                aad = _content_aad(suite, msg.wraps, msg.welcome)
                raw = suite.aead_open(content_key, bytes(suite.aead_nonce_length), aad, msg.ciphertext)
            except DecryptionError:
                raise DecryptionError("cannot decrypt the merge commit") from None
            return codec.decode(MergeCommit, raw)
    raise DecryptionError("the merge commit is sealed to no epoch this member is in")


def process_merge_commit(
    parents: Sequence[ParentEpoch],
    membership: Membership,
    message: bytes,
    *,
    base: BaseEpoch | BaseLookup | None = None,
    own_states: Sequence[Group] = (),
) -> Group:
    """Process a merge commit as a member of every parent epoch (docs/merge.md section 6.4).
    ``own_states``: the member's other states, searched after the parent states for its merged
    leaf key (`merged_private_keys`).

    ``base`` gives the public tree of the base epoch the commit names: a `BaseEpoch`, or a
    lookup ``epoch_id -> BaseEpoch | None`` (the replica's kept trees).  A commit that names a
    base this replica does not hold raises `MissingBaseError`; one built without a base needs
    none.  Recomputes the merged base tree from ``parents``, ``membership`` and the base, checks
    it against the commit's, merges the UpdatePath, derives the merge key schedule and verifies
    the signature and confirmation tag.  Raises a `RemoteInputError`; nothing is modified.
    """
    ps = _sorted_parents(parents)
    mine = [(p.epoch_id, p.group) for p in ps if p.group is not None]
    if len(mine) != len(ps):
        raise InvalidArgument("process_merge_commit needs the member's state in every parent; use join_merge")
    commit = _open(message, [(e, g) for e, g in mine])
    content = commit.content
    named = content.base_epoch
    found: BaseEpoch | None = None
    if named:
        found = base(named) if callable(base) else base if base is not None and base.epoch_id == named else None
        if found is None:
            raise MissingBaseError("the merge commit names a base epoch whose tree this replica does not keep")
        if found.epoch_id != named:
            raise InvalidArgument("the base lookup returned another epoch")
    prep = _prepare(ps, membership, found)
    suite = prep.suite
    if content.group_id != prep.provisional.group_id:
        raise WrongGroupError("merge commit is for another group")
    if [r.epoch_id for r in content.parents] != [p.epoch_id for p in prep.parents]:
        raise ProtocolError("merge commit names other parent epochs")
    if content.epoch != prep.provisional.epoch:
        raise ProtocolError(f"merge commit epoch {content.epoch}, expected {prep.provisional.epoch}")
    if content.base_tree_hash != prep.base.tree_hash():
        raise TreeError("merge commit was made over another merged tree (different S(heads))")
    committer = prep.base.leaf(content.committer) if content.committer < prep.base.n_leaves else None
    if committer is None:
        raise ProtocolError("merge committer is not a member of the merged group")
    try:
        suite.verify_with_label(committer.signature_key, _SIG_LABEL, codec.encode(content), commit.signature)
    except (SignatureError, DecodeError):
        raise SignatureError("merge commit signature does not verify") from None
    groups = [g for _, g in mine]
    me = groups[0]
    own_key = me.leaf_node.signature_key
    if own_key == committer.signature_key:
        raise ProtocolError("merge commit claims to come from this member")
    if any(g.leaf_node.signature_key != own_key for g in own_states):
        raise InvalidArgument("own_states belong to another member")
    own_member = membership.get(own_key)
    keys = merged_private_keys(
        suite, prep.base, own_key, [*groups, *own_states], own=own_member.leaf if own_member else None
    )
    result = process_update_path(prep.base, content.committer, content.path, prep.provisional, keys)
    assert result.private_keys is not None and result.commit_secret is not None
    confirmed = _confirmed(suite, prep.phash, content, commit.signature)
    gc = replace(result.group_context, confirmed_transcript_hash=confirmed)
    # a committer that is a member of a parent epoch must include its init secret
    if [r.included for r in content.parents] != prep.in_parents(content.committer):
        raise ProtocolError("merge commit marks a parent epoch included iff its committer is a member of it")
    inits = [g.epoch_secrets.init_secret for (_, g), r in zip(mine, content.parents, strict=True) if r.included]
    es = derive_epoch_secrets(suite, merge_init_secret(suite, prep.phash, inits), result.commit_secret, gc, None)
    verify_confirmation_tag(suite, es.confirmation_key, confirmed, commit.confirmation_tag)
    return _new_group(me, gc, result.tree, keys.leaf_index, result.private_keys, es, commit.confirmation_tag)


def join_merge(message: bytes, groups: Sequence[Group]) -> Group:
    """Join a merged epoch from the merge Welcome, as a member of the merged group who is not
    a member of every parent epoch (docs/merge.md section 6.5).

    ``groups`` are the member's states in any earlier epochs (its leaf private key is taken
    from the one whose leaf is the merged tree's).  Checks the GroupInfo signature by the
    committer, the tree hash and the derived keys; raises a `RemoteInputError`.
    """
    if not groups:
        raise InvalidArgument("join_merge needs at least one earlier state of the member")
    msg = MergeMessage.from_bytes(bytes(message))
    if not msg.welcome:
        raise WelcomeError("the merge commit carries no Welcome")
    w = codec.decode(Welcome, msg.welcome)
    me = groups[0]
    suite = me.suite
    if w.cipher_suite != suite.suite_id:
        raise WelcomeError("merge Welcome is for another cipher suite")
    secrets: GroupSecrets | None = None
    leaf_priv: bytes | None = None
    for g in groups:
        gl = g.tree.leaf(g.own_leaf) if g.own_leaf < g.tree.n_leaves else None
        priv = g.private_keys.get(2 * g.own_leaf)
        if gl is None or priv is None:
            continue
        ref = _leaf_ref(suite, gl)
        entry = next((s for s in w.secrets if s.new_member == ref), None)
        if entry is None:
            continue
        ct = entry.encrypted_group_secrets
        try:
            raw = suite.decrypt_with_label(priv, "Welcome", w.encrypted_group_info, ct.kem_output, ct.ciphertext)
        except DecryptionError:
            raise DecryptionError("cannot decrypt the merge Welcome's GroupSecrets") from None
        secrets = codec.decode(GroupSecrets, raw)
        leaf_priv = priv
        break
    if secrets is None or leaf_priv is None:
        raise WelcomeError("the merge Welcome has no secrets for this member")
    gi = decrypt_group_info(suite, w, secrets.joiner_secret, bytes(suite.hash_length))
    gc = gi.group_context
    if gc.group_id != me.group_id or gc.version != MLS10:
        raise WrongGroupError("merge Welcome is for another group")
    ext = find_extension(gi.extensions, ExtensionType.RATCHET_TREE)
    if ext is None:
        raise WelcomeError("merge Welcome has no ratchet tree")
    tree = RatchetTree.from_wire(suite, ext.as_ratchet_tree())
    if tree.tree_hash() != gc.tree_hash:
        raise TreeError("merge Welcome tree does not match the tree hash")
    signer = tree.leaf(gi.signer) if gi.signer < tree.n_leaves else None
    if signer is None:
        raise WelcomeError("merge Welcome signer is not in the tree")
    verify_group_info(suite, gi, signer.signature_key)
    tree.verify_leaf_signatures(gc.group_id)
    own_key = me.leaf_node.signature_key
    own = next((i for i, lf in tree.members() if lf.signature_key == own_key), None)
    if own is None:
        raise WelcomeError("this member is not in the merged tree")
    keys = TreePrivateKeys.for_leaf(own, leaf_priv)
    for x in treemath.direct_path(2 * own, tree.n_leaves):
        v = tree.parent_node(x)
        if v is None or own in v.unmerged_leaves:
            continue
        for g in groups:
            gv = g.tree.parent_node(x) if x < g.tree.width else None
            k = g.private_keys.get(x)
            if gv is not None and k is not None and gv.encryption_key == v.encryption_key:
                keys = keys.with_keys({x: k})
                break
    if secrets.path_secret is not None:
        lca = treemath.common_ancestor(2 * own, 2 * gi.signer)
        keys = keys.with_path_secret(suite, tree, lca, secrets.path_secret)
    try:
        keys.verify(suite, tree)
    except TreeError:
        raise TreeError("merge Welcome keys do not match the tree") from None
    es = epoch_secrets_from_joiner(suite, secrets.joiner_secret, gc, None)
    verify_confirmation_tag(suite, es.confirmation_key, gc.confirmed_transcript_hash, gi.confirmation_tag)
    return _new_group(me, gc, tree, own, keys, es, gi.confirmation_tag)
