"""Build `OpRecord`s from MLS state transitions (docs/merge.md section 2).

A replica that processed a commit knows the public trees before and after it; the
membership `Change`s of the commit are the difference of the two trees: a leaf that appears
is an ADD, one that disappears a REMOVE (or EVICT when the commit marked it as an idle
eviction), one whose LeafNode changed an UPDATE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from crdt_mls.errors import DecodeError, InvalidArgument
from crdt_mls.merge.dag import decode_member, decode_record, encode_member, encode_record
from crdt_mls.merge.rules import Change, ChangeKind, Member, Membership, OpRecord
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.messages import LeafNode
from crdt_mls.mls.ratchet_tree import RatchetTree

__all__ = [
    "EVICT_AAD_PREFIX",
    "changes_between",
    "commit_record",
    "decode_member",
    "decode_record",
    "encode_member",
    "encode_record",
    "evicted_from_aad",
    "eviction_aad",
    "genesis_record",
    "membership_from_tree",
    "merge_record",
    "tree_changes",
]

#: A commit that evicts idle members says so in its (encrypted, signed) ``authenticated_data``:
#: this prefix followed by the evicted members' signature keys, each ``opaque<V>`` (docs/merge.md 1).
EVICT_AAD_PREFIX = b"crdt-mls evict v1\x00"


def eviction_aad(keys: Iterable[bytes]) -> bytes:
    """The ``authenticated_data`` of a commit whose removes of ``keys`` are idle evictions."""
    w = Writer()
    for k in sorted(set(keys)):
        w.opaque(k)
    return EVICT_AAD_PREFIX + w.getvalue()


def evicted_from_aad(aad: bytes) -> frozenset[bytes]:
    """The evicted signature keys named by a commit's ``authenticated_data`` (empty if none).

    Raises `DecodeError` for a malformed eviction list."""
    if not aad.startswith(EVICT_AAD_PREFIX):
        return frozenset()
    r = Reader(aad[len(EVICT_AAD_PREFIX) :])
    out: list[bytes] = []
    while r.remaining():
        k = r.opaque()
        if not k:
            raise DecodeError("empty key in an eviction list")
        out.append(k)
    return frozenset(out)


def tree_changes(
    before: RatchetTree | None, after: RatchetTree, *, evicted: Iterable[bytes] = ()
) -> tuple[Change, ...]:
    """The membership changes that turn ``before`` into ``after`` (keys are signature keys)."""
    old = {lf.signature_key: (i, lf) for i, lf in before.members()} if before is not None else {}
    new = {lf.signature_key: (i, lf) for i, lf in after.members()}
    return changes_between(old, new, evicted)


def changes_between(
    old: Mapping[bytes, tuple[int, LeafNode]], new: Mapping[bytes, tuple[int, LeafNode]], evicted: Iterable[bytes] = ()
) -> tuple[Change, ...]:
    """The membership changes between two ``signature key -> (leaf index, LeafNode)`` maps:
    removals (evictions for ``evicted`` keys) in leaf order, then adds and updated LeafNodes."""
    ev = frozenset(evicted)
    out: list[Change] = []
    for key, (_i, _lf) in sorted(old.items(), key=lambda kv: kv[1][0]):
        if key not in new:
            out.append(Change(ChangeKind.EVICT if key in ev else ChangeKind.REMOVE, key))
    if ev - (old.keys() - new.keys()):
        raise InvalidArgument("an evicted member must be removed by the commit")
    for key, (i, lf) in sorted(new.items(), key=lambda kv: kv[1][0]):
        if key not in old:
            out.append(Change(ChangeKind.ADD, key, i, codec.encode(lf)))
        elif codec.encode(old[key][1]) != codec.encode(lf):
            out.append(Change(ChangeKind.UPDATE, key, i, codec.encode(lf)))
    return tuple(out)


def genesis_record(cid: bytes, author: bytes, tree: RatchetTree) -> OpRecord:
    """The genesis record: the founding members of ``tree``."""
    return OpRecord(cid, author, 0, None, (), (), tree_changes(None, tree))


def commit_record(
    cid: bytes,
    author: bytes,
    seq: int,
    prev: bytes | None,
    parents: Iterable[bytes],
    epochs: Iterable[bytes],
    before: RatchetTree,
    after: RatchetTree,
    *,
    evicted: Iterable[bytes] = (),
) -> OpRecord:
    """A commit's record from the trees of its parent epoch (``before``) and its own (``after``).

    For a merge commit ``before`` is the merged base tree (its changes are the committer's
    new leaf only)."""
    return OpRecord(cid, author, seq, prev, tuple(parents), tuple(epochs), tree_changes(before, after, evicted=evicted))


def merge_record(
    cid: bytes,
    author: bytes,
    seq: int,
    prev: bytes | None,
    parents: Iterable[bytes],
    epochs: Iterable[bytes],
    after: RatchetTree,
) -> OpRecord:
    """A merge commit's record from the merged epoch's tree alone: its only change is the
    committer's new leaf (docs/merge.md section 6), so a member who joined the merged epoch
    from the merge Welcome, without the parents' trees, builds the same record."""
    found = next(((i, lf) for i, lf in after.members() if lf.signature_key == author), None)
    if found is None:
        raise InvalidArgument("the merge committer is not in the merged tree")
    eps = tuple(epochs)
    if len(eps) < 2:
        raise InvalidArgument("a merge commit has at least two epoch parents")
    i, leaf = found
    change = Change(ChangeKind.UPDATE, author, i, codec.encode(leaf))
    return OpRecord(cid, author, seq, prev, tuple(parents), eps, (change,))


def membership_from_tree(tree: RatchetTree, cid: bytes) -> Membership:
    """The membership of a root epoch from its tree (for `GroupDag.add_root`): every member's
    provenance is the root's CID, the oldest point this replica knows."""
    return Membership.of(Member(lf.signature_key, i, codec.encode(lf), cid, cid) for i, lf in tree.members())
