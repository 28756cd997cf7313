"""Member provenance for members who join later (docs/merge.md section 3.5).

`MutualRemoval.SENIORITY` ranks the two members of a mutual removal by the causal position of
the commit that added each (docs/merge.md 3.5).  A member who joins from a Welcome (RFC 9420
section 12.4.3) or from a merge Welcome cannot read the commits before its join, so it cannot
know who was added when; ranking those members by key instead (the old behaviour) can differ
from what the older members compute: a divergence.

So the provenance travels, authenticated, with the join.  The committer of the epoch a member
joins (the adder, or the merge committer) seals the provenance of every member of that epoch:

```
struct {
    opaque added_in<V>;     // CID of the commit that added the members; empty = this epoch's commit
    uint32 leaves<V>;       // their leaf indices in this epoch's tree, ascending
} AddedBy;

struct {
    AddedBy added<V>;       // every member of the tree exactly once, ascending by added_in
    opaque signature<V>;    // SignWithLabel(committer, "ProvenanceTBS",
                            //               opaque GroupContext<V> || AddedBy added<V>)
} SignedProvenance;

sealed = salt (32 bytes) || AEAD.Seal(key, nonce, "crdt-mls provenance", SignedProvenance)
key || nonce = MLS-Exporter("crdt-mls provenance", salt, Nk + Nn) of the joined epoch
```

Only members of the joined epoch can open it (nothing readable in a block); the signature binds
it to the committer and to the epoch's GroupContext.  The joiner checks that it covers exactly
the members of its tree; `GroupDag.add_root` checks that every named commit is a commit of the
joiner's DAG in the root's causal past (it knows them as opaque nodes), so the joiner ranks
them by the same (height, CID) as everyone else.  A dishonest committer could misstate when
someone was added; it could as well hand the joiner a wrong tree (the joiner trusts the
committer's GroupInfo either way), and a joiner whose S(heads) then differs gets a `TreeError`
on the next merge commit (its base tree hash), not a silent fork.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from crdt_mls.errors import DecodeError, DecryptionError, InvalidArgument, ProtocolError, SignatureError
from crdt_mls.merge.dag import MergeHistory
from crdt_mls.merge.records import decode_member, decode_record, encode_member, encode_record
from crdt_mls.merge.rules import Member, Membership
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.group import Group

__all__ = ["open_history", "open_provenance", "seal_history", "seal_provenance"]

Rng = Callable[[int], bytes]
_LABEL = "ProvenanceTBS"
_EXPORT_LABEL = b"crdt-mls provenance"
_AAD = b"crdt-mls provenance"
_H_LABEL = "MergeHistoryTBS"
_H_EXPORT_LABEL = b"crdt-mls merge history"
_H_AAD = b"crdt-mls merge history"
_SALT = 32


def _encode_added(w: Writer, added: list[tuple[bytes, list[int]]]) -> None:
    def one(ww: Writer, item: tuple[bytes, list[int]]) -> None:
        ww.opaque(item[0])
        ww.vector(item[1], lambda www, i: www.u32(i))

    w.vector(added, one)


def _tbs(group: Group, added: list[tuple[bytes, list[int]]]) -> bytes:
    w = Writer()
    w.opaque(group.group_context.to_bytes())
    _encode_added(w, added)
    return w.getvalue()


def _key_nonce(group: Group, salt: bytes, label: bytes = _EXPORT_LABEL) -> tuple[bytes, bytes]:
    suite = group.suite
    raw = group.export_secret(label, salt, suite.aead_key_length + suite.aead_nonce_length)
    return raw[: suite.aead_key_length], raw[suite.aead_key_length :]


def seal_provenance(group: Group, before: Membership, *, rng: Rng = os.urandom) -> bytes:
    """The committer of an epoch, in its new state ``group``, seals the provenance of every
    member of the epoch's tree: ``before`` is S of the commit's parents (for an ordinary commit,
    its parent epoch's state; for a merge commit, the merged membership), and a member not in it
    was added by this very commit (its CID is not known yet: encoded as empty)."""
    by_cid: dict[bytes, list[int]] = {}
    for i, lf in group.tree.members():
        m = before.get(lf.signature_key)
        by_cid.setdefault(m.added_in if m is not None else b"", []).append(i)
    added = sorted((cid, sorted(leaves)) for cid, leaves in by_cid.items())
    suite = group.suite
    signature = suite.sign_with_label(group.signature_priv, _LABEL, _tbs(group, added))
    w = Writer()
    _encode_added(w, added)
    w.opaque(signature)
    salt = rng(_SALT)
    key, nonce = _key_nonce(group, salt)
    return salt + suite.aead_seal(key, nonce, _AAD, w.getvalue())


def open_provenance(group: Group, sealed: bytes, root: bytes, committer: bytes) -> Membership:
    """A member who joined epoch ``root`` (its state there: ``group``) opens the provenance
    sealed by the epoch's ``committer`` (signature key): the root's membership for
    `GroupDag.add_root`, every member with the commit that added it (``root`` for those the
    root commit added).  Raises a `RemoteInputError` (`DecryptionError`, `DecodeError`,
    `SignatureError`, `ProtocolError`) for a blob that is not exactly that."""
    if type(root) is not bytes or not root:
        raise InvalidArgument("root must be the joined epoch's CID")
    suite = group.suite
    if len(sealed) <= _SALT:
        raise DecodeError("sealed provenance is too short")
    key, nonce = _key_nonce(group, bytes(sealed[:_SALT]))
    try:
        raw = suite.aead_open(key, nonce, _AAD, bytes(sealed[_SALT:]))
    except DecryptionError:
        raise DecryptionError("cannot decrypt the provenance: not sealed in this epoch") from None
    r = Reader(raw)
    added = r.vector(lambda rr: (rr.opaque(), rr.vector(lambda rrr: rrr.u32())))
    signature = r.opaque()
    r.finish()
    try:
        suite.verify_with_label(committer, _LABEL, _tbs(group, added), signature)
    except (SignatureError, DecodeError):
        raise SignatureError("the provenance is not signed by the epoch's committer") from None
    if [cid for cid, _ in added] != sorted({cid for cid, _ in added}):
        raise ProtocolError("provenance entries must be strictly ascending by commit")
    members = dict(group.tree.members())
    out: list[Member] = []
    for cid, leaves in added:
        if not leaves or leaves != sorted(set(leaves)):
            raise ProtocolError("provenance leaves must be non-empty and strictly ascending")
        for i in leaves:
            lf = members.pop(i, None)
            if lf is None:
                raise ProtocolError(f"provenance names leaf {i}, which holds no member or is named twice")
            out.append(Member(lf.signature_key, i, codec.encode(lf), cid or root, root))
    if members:
        raise ProtocolError("the provenance leaves out members of the tree")
    return Membership.of(out)


# ----------------------------------------------------------------------------- merge history
#
# struct {
#     opaque cut<V>;          // the latest cut of the merge's causal parents
#     Member base<V>;         // S(cut), with provenance (added_in) of every member
#     OpRecord records<V>;    // the commits above the cut, in the deterministic order
#     opaque signature<V>;    // SignWithLabel(committer, "MergeHistoryTBS",
#                             //               opaque GroupContext<V> || cut || base || records)
# } SignedMergeHistory;
# sealed = salt (32) || AEAD.Seal(key, nonce, "crdt-mls merge history", SignedMergeHistory),
# key || nonce = MLS-Exporter("crdt-mls merge history", salt, Nk + Nn) of the merged epoch


def _history_body(h: MergeHistory) -> bytes:
    w = Writer()
    w.opaque(h.cut)
    w.vector(h.base.members, encode_member)
    w.vector(h.records, encode_record)
    return w.getvalue()


def _history_tbs(group: Group, body: bytes) -> bytes:
    w = Writer()
    w.opaque(group.group_context.to_bytes())
    return w.getvalue() + body


def seal_history(group: Group, history: MergeHistory, *, rng: Rng = os.urandom) -> bytes:
    """The merge committer, in its merged state ``group``, seals the history its S(heads) came
    from (`GroupDag.history` of the merge commit's causal parents) for the members who join the
    merge from its Welcome (docs/merge.md section 4.2).  Only members of the merged epoch can open
    it; it is signed by the committer and bound to the epoch's GroupContext."""
    body = _history_body(history)
    suite = group.suite
    signature = suite.sign_with_label(group.signature_priv, _H_LABEL, _history_tbs(group, body))
    w = Writer()
    w.opaque(signature)
    salt = rng(_SALT)
    key, nonce = _key_nonce(group, salt, _H_EXPORT_LABEL)
    return salt + suite.aead_seal(key, nonce, _H_AAD, body + w.getvalue())


def open_history(group: Group, sealed: bytes, committer: bytes) -> MergeHistory:
    """A member who joined a merged epoch from the merge Welcome (its state there: ``group``)
    opens the history sealed by the merge's ``committer`` (signature key), for
    `GroupDag.add_joined_merge` (which checks it against the nodes it holds and the Welcome's
    tree).  Raises `DecryptionError`, `DecodeError` or `SignatureError`."""
    suite = group.suite
    if len(sealed) <= _SALT:
        raise DecodeError("sealed merge history is too short")
    key, nonce = _key_nonce(group, bytes(sealed[:_SALT]), _H_EXPORT_LABEL)
    try:
        raw = suite.aead_open(key, nonce, _H_AAD, bytes(sealed[_SALT:]))
    except DecryptionError:
        raise DecryptionError("cannot decrypt the merge history: not sealed in this epoch") from None
    r = Reader(raw)
    cut = r.opaque()
    members = r.vector(decode_member)
    records = tuple(r.vector(decode_record))
    end = len(raw) - r.remaining()
    signature = r.opaque()
    r.finish()
    try:
        suite.verify_with_label(committer, _H_LABEL, _history_tbs(group, raw[:end]), signature)
    except (SignatureError, DecodeError):
        raise SignatureError("the merge history is not signed by the merge's committer") from None
    if not cut:
        raise DecodeError("empty cut in a merge history")
    try:
        base = Membership.of(members)
    except InvalidArgument as e:
        raise ProtocolError(f"a merge history's cut state is not a membership: {e}") from None
    return MergeHistory(cut, base, records)
