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

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    InvalidArgument,
    ProtocolError,
    SignatureError,
    TreeError,
    WelcomeError,
    WrongGroupError,
)
from crdt_mls.merge.rules import Membership
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


def _below(x: int, leaf: int) -> bool:
    lvl = treemath.level(x)
    lo = x - ((1 << lvl) - 1)
    hi = x + ((1 << lvl) - 1)
    return lo <= 2 * leaf <= hi


def merged_base_tree(suite: CipherSuite, parents: Sequence[ParentEpoch], membership: Membership) -> RatchetTree:
    """The merged tree before the merge commit's UpdatePath (docs/merge.md section 5).

    Cost: O(width x parents) comparisons plus O(log n) per departed or moved member and the
    sizes of the parents' unmerged-leaf lists; no per-node scan of the leaves.
    """
    ps = _sorted_parents(parents)
    where = [{lf.signature_key: i for i, lf in p.tree.members()} for p in ps]
    leaves: dict[int, LeafNode] = {}
    for m in membership.members:
        leaf: LeafNode | None = None
        for p, wp in zip(ps, where, strict=True):  # reuse a parent's (already decoded) LeafNode
            j = wp.get(m.key)
            cand = p.tree.leaf(j) if j is not None else None
            if cand is not None and cand.to_bytes() == m.data:
                leaf = cand
                break
        if leaf is None:
            try:
                leaf = codec.decode(LeafNode, m.data)
            except DecodeError as e:
                raise InvalidArgument(f"membership leaf {m.leaf} is not a LeafNode: {e}") from None
        if leaf.signature_key != m.key:
            raise InvalidArgument(f"membership leaf {m.leaf} does not carry the member's signature key")
        leaves[m.leaf] = leaf
    if not leaves:
        raise InvalidArgument("the merged group has no members")
    n = 1
    while n < max(leaves) + 1:
        n *= 2
    width = 2 * n - 1
    nodes: list[LeafNode | ParentNode | None] = [None] * width
    for i, leaf in leaves.items():
        nodes[2 * i] = leaf
    merged_at = {m.key: m.leaf for m in membership.members}

    # 1. keep a parent node only if every parent tree holds the very same node
    kept: dict[int, ParentNode] = {}
    arrays = [p.tree.nodes() for p in ps]
    w0 = min(width, *(len(a) for a in arrays))
    first_nodes, rest = arrays[0], arrays[1:]
    for x in range(1, w0, 2):
        first = first_nodes[x]
        if first is None:
            continue
        for a in rest:
            v = a[x]
            if v is not first and (
                v is None or v.encryption_key != first.encryption_key or v.parent_hash != first.parent_hash
            ):
                break
        else:
            assert isinstance(first, ParentNode)
            kept[x] = first

    def unmerged_in(p: ParentEpoch, x: int) -> tuple[int, ...]:
        v = p.tree.parent_node(x)
        assert v is not None
        return v.unmerged_leaves

    # 2. re-blank: a node known (below it, not unmerged) to someone who left the group
    for p, wp in zip(ps, where, strict=True):
        for key, j in wp.items():
            if key in merged_at:
                continue
            for x in treemath.direct_path(2 * j, p.tree.n_leaves):
                if x in kept and j not in unmerged_in(p, x):
                    del kept[x]

    # 3. unmerged leaves: members that do not know the node in every parent holding them
    unmerged: dict[int, set[int]] = {}
    for arr, wp in zip(arrays, where, strict=True):
        key_at: dict[int, bytes] | None = None
        for x in kept:
            node = arr[x]
            assert isinstance(node, ParentNode)
            if not node.unmerged_leaves:
                continue
            if key_at is None:
                key_at = {j: k for k, j in wp.items()}
            for j in node.unmerged_leaves:
                k = key_at.get(j)
                if k is not None and k in merged_at and _below(x, merged_at[k]):
                    unmerged.setdefault(x, set()).add(merged_at[k])
    for key, i in merged_at.items():
        held = [(p, wp[key]) for p, wp in zip(ps, where, strict=True) if key in wp]
        if held and all(j == i for _p, j in held):
            continue  # same leaf everywhere: the carried lists above are exact
        for x in treemath.direct_path(2 * i, n):
            if x in kept and not (held and all(_below(x, j) and j not in unmerged_in(p, x) for p, j in held)):
                unmerged.setdefault(x, set()).add(i)
    for x, v in kept.items():
        ul = tuple(sorted(unmerged.get(x, ())))
        nodes[x] = v if ul == v.unmerged_leaves else ParentNode(v.encryption_key, v.parent_hash, ul)
    return RatchetTree(suite, nodes)


def merged_private_keys(
    suite: CipherSuite, tree: RatchetTree, own_key: bytes, groups: Sequence[Group]
) -> TreePrivateKeys:
    """The local member's private keys in a merged tree, taken from its earlier states
    ``groups`` (its parent-epoch states first, then any other state it still holds): its leaf
    key and the keys of kept nodes on its direct path, each matched by public key against
    ``tree`` and checked.

    The merged leaf need not be in a parent state: when every commit the member made on the
    merged branches is void (strong remove, a removal cycle resolved greedily, docs/merge.md
    3.4) but the member stays, its merged leaf is the one it had before those commits, whose
    private key only its state from before them holds (liveness, design sketch 6.5)."""
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
    """The signed part of a merge commit (docs/merge.md section 6.1)."""

    group_id: bytes
    epoch: int
    parents: tuple[MergeParentRef, ...]
    committer: int
    base_tree_hash: bytes
    path: UpdatePath
    version: int = MERGE_VERSION

    def encode(self, w: Writer) -> None:
        w.u8(self.version)
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.vector(self.parents, lambda ww, p: p.encode(ww))
        w.u32(self.committer)
        w.opaque(self.base_tree_hash)
        self.path.encode(w)

    @classmethod
    def decode(cls, r: Reader) -> MergeCommitContent:
        version = r.u8()
        if version != MERGE_VERSION:
            raise DecodeError(f"unsupported merge commit version {version}")
        gid = r.opaque()
        epoch = r.u64()
        parents = tuple(r.vector(MergeParentRef.decode))
        committer = r.u32()
        th = r.opaque()
        path = UpdatePath.decode(r)
        if len(parents) < 2:
            raise DecodeError("a merge commit has at least two parents")
        ids = [p.epoch_id for p in parents]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise DecodeError("merge parents must be strictly ascending by epoch id")
        return cls(gid, epoch, parents, committer, th, path, version)


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
    provisional: GroupContext


def _prepare(parents: Sequence[ParentEpoch], membership: Membership) -> _Prepared:
    ps = _sorted_parents(parents)
    gc0 = ps[0].group_context
    suite = get_cipher_suite(gc0.cipher_suite)
    phash = parents_hash(suite, ps)
    base = merged_base_tree(suite, ps, membership)
    epoch = max(p.group_context.epoch for p in ps) + 1
    provisional = GroupContext(
        gc0.version, gc0.cipher_suite, gc0.group_id, epoch, base.tree_hash(), phash, gc0.extensions
    )
    return _Prepared(suite, ps, phash, base, provisional)


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
    rng: Rng = os.urandom,
    own_states: Sequence[Group] = (),
) -> tuple[bytes, Group]:
    """Issue a merge commit over ``parents`` with the merged ``membership`` (S(heads)).

    The committer is the local member of the parents that carry a ``group``; it must be a
    member of the merged group and of at least one parent epoch (whose init secrets it
    includes).  ``own_states``: the committer's other states (any epochs), searched after the
    parent states for its merged leaf key (`merged_private_keys`).  Returns ``(MergeMessage
    bytes, the committer's Group in the merged epoch)``.
    """
    prep = _prepare(parents, membership)
    suite = prep.suite
    mine = [p.group for p in prep.parents if p.group is not None]
    if not mine:
        raise InvalidArgument("the committer must be a member of at least one parent epoch")
    me = mine[0]
    own_key = me.leaf_node.signature_key
    if any(g.leaf_node.signature_key != own_key for g in (*mine, *own_states)):
        raise InvalidArgument("parent states belong to different members")
    keys = merged_private_keys(suite, prep.base, own_key, [*mine, *own_states])
    own = keys.leaf_index
    created = create_update_path(prep.base, own, prep.provisional, me.signature_priv, rng=rng)
    refs = tuple(MergeParentRef(p.epoch_id, p.group is not None) for p in prep.parents)
    content = MergeCommitContent(
        prep.provisional.group_id, prep.provisional.epoch, refs, own, prep.base.tree_hash(), created.update_path
    )
    signature = suite.sign_with_label(me.signature_priv, _SIG_LABEL, codec.encode(content))
    confirmed = _confirmed(suite, prep.phash, content, signature)
    gc = replace(created.group_context, confirmed_transcript_hash=confirmed)
    init = merge_init_secret(suite, prep.phash, [p.group.epoch_secrets.init_secret for p in prep.parents if p.group])
    es = derive_epoch_secrets(suite, init, created.commit_secret, gc, None)
    tag = confirmation_tag(suite, es.confirmation_key, confirmed)
    group = _new_group(me, gc, created.tree, own, created.private_keys, es, tag)
    commit = MergeCommit(content, signature, tag)

    # members who are not in every parent epoch get a merge Welcome
    everywhere = set.intersection(*({lf.signature_key for _, lf in p.tree.members()} for p in prep.parents))
    recipients = [(i, lf) for i, lf in created.tree.members() if i != own and lf.signature_key not in everywhere]
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
    parents: Sequence[ParentEpoch], membership: Membership, message: bytes, *, own_states: Sequence[Group] = ()
) -> Group:
    """Process a merge commit as a member of every parent epoch (docs/merge.md section 6.4).
    ``own_states``: the member's other states, searched after the parent states for its merged
    leaf key (`merged_private_keys`).

    Recomputes the merged base tree from ``parents`` and ``membership``, checks it against the
    commit's, merges the UpdatePath, derives the merge key schedule and verifies the
    signature and confirmation tag.  Raises a `RemoteInputError`; nothing is modified.
    """
    prep = _prepare(parents, membership)
    suite = prep.suite
    mine = [(p.epoch_id, p.group) for p in prep.parents if p.group is not None]
    if len(mine) != len(prep.parents):
        raise InvalidArgument("process_merge_commit needs the member's state in every parent; use join_merge")
    commit = _open(message, [(e, g) for e, g in mine])
    content = commit.content
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
    keys = merged_private_keys(suite, prep.base, own_key, [*groups, *own_states])
    result = process_update_path(prep.base, content.committer, content.path, prep.provisional, keys)
    assert result.private_keys is not None and result.commit_secret is not None
    confirmed = _confirmed(suite, prep.phash, content, commit.signature)
    gc = replace(result.group_context, confirmed_transcript_hash=confirmed)
    included = [r.included for r in content.parents]
    for r, p in zip(content.parents, prep.parents, strict=True):
        # a committer that is a member of a parent epoch must include its init secret
        in_parent = any(lf.signature_key == committer.signature_key for _, lf in p.tree.members())
        if r.included != in_parent:
            raise ProtocolError("merge commit marks a parent epoch included iff its committer is a member of it")
    inits = [g.epoch_secrets.init_secret for (_, g), inc in zip(mine, included, strict=True) if inc]
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
