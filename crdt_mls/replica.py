"""The public facade: one member's replica of one group (design doc section 1, issue 4).

A `Replica` holds the member's identity (basic credential + signature key), its MLS state in
every epoch it still keeps (`crdt_mls.mls.group.Group`, immutable), the causal receiver of
the group's operation DAG (`crdt_mls.causal`) and a `Store` (memory, SQLite, IPFS) where
every operation block and the replica state are written in one atomic ``write_batch`` per
call.  It is sans-I/O towards the network: operations return nothing to send by themselves;
`Replica.take_outgoing` hands out the new blocks, `Replica.receive` takes blocks from peers
in any order.

Each operation is a signed DAG-CBOR node (docs/schema.md) whose author is the member's MLS
signature key and whose epoch id is the CID of the commit node that started the epoch (the
genesis node's CID for the first epoch).  Payloads are always ciphertext (docs/api.md, "What
goes into blocks"):

* ``commit``: ``struct { uint8 type = 1; opaque commit<V>; opaque welcome<V>; }`` with the
  commit as an RFC 9420 ``PrivateMessage`` and the (HPKE-encrypted) ``Welcome`` or empty; a
  commit that adds members or does not fit a node is type 3: the commit, the Welcome without
  the ratchet tree and the tree sealed under the new epoch's exporter, each inline or in
  chunk blocks the node names (schema version 2); a replica waits only for the chunks it needs;
* merge commit: ``struct { uint8 type = 2; opaque parents<V><V>; opaque merge_message<V>;
  [opaque merge_history<V>]; }`` (`crdt_mls.merge.mlsmerge.MergeMessage`, the sealed
  `GroupDag.history` for its Welcome's recipients), node epoch field = hash of the parent
  epochs; type 4 when it goes to chunk blocks;
* ``application``: an RFC 9420 ``PrivateMessage``; ``ack``: empty; ``genesis``: empty.

State at rest is incremental (docs/api.md, "State at rest"): ratchet trees as shared
content-addressed chunks, each kept epoch's secrets apart, the causal receiver as checkpoint +
journal, the merge log truncated at a cut every author has passed.

Key packages carry the member's name in the clear and are exchanged out of band, never as
blocks.  Concurrent commits on one epoch fork the epoch sequence (design doc section 5): the
replica keeps every branch readable, reports `MergeNeeded`, stays on the branch it was on (or
the one with the lowest CID) and refuses new commits until `Replica.merge` (any member;
`merge_leader` / `merge_rank` give the turn) issues a merge commit.  Every delivered operation
is fed to the merge engine's `crdt_mls.merge.GroupDag` (readable: ``add``; unreadable:
``add_opaque``; joined from a Welcome: ``add_root``), whose input log is saved with the rest;
S(heads) -- the merged membership of a merge commit -- is ``GroupDag.state`` of the merge
node's causal parents (docs/merge.md section 4), so the facade and the engine define the same
state.  Concurrent merges are merged in turn.  See docs/api.md for the limits.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crdt_mls.causal import CausalBuffer, CausalReceiver, Equivocation, NodeRef, Refused, decode_ref, encode_ref
from crdt_mls.dag.chunks import (
    CHUNK_KEY_SIZE,
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    join_plain,
    open_chunks,
    plain_chunks,
    seal_chunks,
)
from crdt_mls.dag.cid import cid_for_raw, cid_to_str
from crdt_mls.dag.node import (
    RAW_SHA256_PREFIX,
    NodeFields,
    NodeKind,
    OpNode,
    decode_node,
    derive_group_tag,
    encode_node,
    sign_node,
)
from crdt_mls.errors import (
    CrdtMlsError,
    DecodeError,
    DecryptionError,
    IntegrityError,
    InvalidArgument,
    InvalidState,
    MissingBaseError,
    OversizeError,
    RemoteInputError,
    StateKeyError,
    StorageError,
    WelcomeError,
)
from crdt_mls.merge.dag import GroupDag, MergeHistory
from crdt_mls.merge.mlsmerge import (
    BaseEpoch,
    MergeMessage,
    ParentEpoch,
    create_merge_commit,
    join_merge,
    process_merge_commit,
)
from crdt_mls.merge.provenance import open_history, seal_history
from crdt_mls.merge.records import (
    EVICT_AAD_PREFIX,
    changes_between,
    decode_member,
    decode_record,
    encode_member,
    encode_record,
    evicted_from_aad,
    eviction_aad,
    genesis_record,
    membership_from_tree,
    merge_record,
)
from crdt_mls.merge.rules import Change, Membership, OpRecord, apply_commit
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.group import ApplicationMessage, CommitApplied, Group
from crdt_mls.mls.key_schedule import epoch_secrets_from_joiner
from crdt_mls.mls.messages import KeyPackage, LeafNode, MLSMessage, Node, Welcome
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.suites import get_cipher_suite
from crdt_mls.mls.welcome import KeyPackagePrivate, decrypt_group_info, make_key_package, open_group_secrets
from crdt_mls.stores.base import Store
from crdt_mls.stores.memory import MemoryStore
from crdt_mls.stores.treechunks import TreeRef, changed_nodes, chunk_difference, chunk_tree, load_tree, sha256_id

__all__ = [
    "STATE_KEY_SIZE",
    "EpochChanged",
    "Event",
    "Joined",
    "MemberAdded",
    "MemberRemoved",
    "MergeMade",
    "MergeNeeded",
    "MessageReceived",
    "OperationRefused",
    "OperationUnreadable",
    "OperationWaiting",
    "Removed",
    "is_sealed",
    "open_meta",
    "seal_meta",
    "Replica",
]

Rng = Callable[[int], bytes]
_Snapshot = tuple[tuple[object, ...], tuple[GroupDag, list[bytes], int]]

_STATE_VERSION = 4
_STATE_VERSION_V3 = 3  #: the whole-state layout before issue-5 storage; migrated on load
_PAYLOAD_COMMIT = 1
_PAYLOAD_MERGE = 2
_PAYLOAD_PARTS = 3  #: a commit whose parts may travel in chunk blocks (docs/api.md)
_PAYLOAD_MERGE_PARTS = 4  #: a merge commit whose message travels in chunk blocks
_PART_LABEL = "crdt-mls part"
_SALT_LEN = 16
#: receiver journal length (deliveries) below which no new checkpoint is written
_RECV_CK_MIN = 4096
#: merge log entries below which the merge engine is not checkpointed (log truncation)
_DAG_CK_MIN = 4096
#: payload bytes a node carries inline; larger payloads put their biggest parts in chunk blocks
DEFAULT_INLINE_LIMIT = 768 * 1024
_TAG_LABEL = "crdt-mls group tag key"
_EVICT_LABEL = "crdt-mls evict"
#: epochs kept besides the current one (older epoch states are dropped, oldest first)
DEFAULT_MAX_EPOCHS = 16
#: of the dropped epochs, how many keep their public tree (merge bases; chunks are shared)
DEFAULT_MAX_PUBLIC_TREES = 64


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class MemberAdded:
    """``name`` joined at ``leaf`` in epoch ``epoch`` (RFC 9420 section 12.1.1)."""

    epoch: int
    leaf: int
    name: str


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """``name`` (leaf ``leaf``) was removed in epoch ``epoch`` (RFC 9420 section 12.1.3)."""

    epoch: int
    leaf: int
    name: str


@dataclass(frozen=True, slots=True)
class EpochChanged:
    """The replica moved to epoch ``epoch`` (its id ``epoch_id`` is the commit node's CID);
    ``by`` names the committer."""

    epoch: int
    epoch_id: bytes
    by: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An application message from ``sender`` (leaf ``leaf``) in epoch ``epoch`` (RFC 9420 6.3)."""

    epoch: int
    leaf: int
    sender: str
    data: bytes = field(repr=False)
    cid: bytes = b""


@dataclass(frozen=True, slots=True)
class Joined:
    """This replica joined the group from a Welcome (RFC 9420 section 12.4.3.1)."""

    epoch: int
    epoch_id: bytes
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Removed:
    """This member was removed by a commit in ``epoch_id``; later traffic is unreadable to it."""

    epoch: int
    epoch_id: bytes
    by: str


@dataclass(frozen=True, slots=True)
class MergeNeeded:
    """Concurrent commits forked the epoch sequence: ``heads`` are the epoch heads known
    (design doc section 5.1); the branches stay readable."""

    heads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MergeMade:
    """A merge commit (design doc section 5) joined ``parents`` into epoch ``epoch_id``;
    ``by`` made it, ``members`` are the merged group (S(heads))."""

    epoch: int
    epoch_id: bytes
    parents: tuple[bytes, ...]
    by: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OperationWaiting:
    """Operations wait in the causal buffer for the parents ``missing`` (docs/causal.md 1)."""

    missing: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class OperationUnreadable:
    """A delivered operation this replica cannot read (not a member of its epoch, or its
    MLS content was rejected); ``reason`` names the check, never secret bytes."""

    cid: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class OperationRefused:
    """The per-member logs refused an operation (equivocation or broken log, docs/causal.md 2)."""

    cid: bytes
    reason: str


Event = (
    MemberAdded
    | MemberRemoved
    | EpochChanged
    | MessageReceived
    | Joined
    | Removed
    | MergeNeeded
    | MergeMade
    | OperationWaiting
    | OperationUnreadable
    | OperationRefused
)


# ----------------------------------------------------------------------------- encoding helpers


def _encode_kp(kp: KeyPackagePrivate) -> bytes:
    w = Writer()
    w.opaque(codec.encode(kp.key_package))
    w.opaque(kp.init_priv)
    w.opaque(kp.encryption_priv)
    w.opaque(kp.signature_priv)
    return w.getvalue()


def _decode_kp(data: bytes) -> KeyPackagePrivate:
    r = Reader(data)
    kp = codec.decode(KeyPackage, r.opaque())
    init, enc, sig = r.opaque(), r.opaque(), r.opaque()
    r.finish()
    return KeyPackagePrivate(kp, init, enc, sig)


def _commit_payload(commit: bytes, welcome: bytes | None, sealed_evictions: bytes = b"") -> bytes:
    w = Writer()
    w.u8(_PAYLOAD_COMMIT)
    w.opaque(commit)
    w.opaque(welcome or b"")
    if sealed_evictions:
        w.opaque(sealed_evictions)
    return w.getvalue()


def _parse_commit_payload(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``(commit, welcome, sealed evictions or b"")``."""
    r = Reader(data)
    if r.u8() != _PAYLOAD_COMMIT:
        raise DecodeError("unknown commit payload type")
    commit, welcome = r.opaque(), r.opaque()
    sealed = r.opaque() if r.remaining() else b""
    r.finish()
    return commit, welcome, sealed


@dataclass(frozen=True, slots=True)
class _Part:
    """One part of a large commit payload: inline bytes, or ``count`` chunk blocks starting at
    ``first`` in the node's chunk list (docs/api.md, "What goes into blocks")."""

    data: bytes = field(default=b"", repr=False)
    first: int = 0
    count: int = 0

    def encode(self, w: Writer) -> None:
        if self.count:
            w.u8(1)
            w.u16(self.first)
            w.u16(self.count)
        else:
            w.u8(0)
            w.opaque(self.data)

    @classmethod
    def decode(cls, r: Reader) -> _Part:
        form = r.u8()
        if form == 0:
            return cls(r.opaque())
        if form == 1:
            first, count = r.u16(), r.u16()
            if not count:
                raise DecodeError("a chunked part names no chunks")
            return cls(b"", first, count)
        raise DecodeError("unknown payload part form")

    def chunks(self, node_chunks: Sequence[bytes]) -> tuple[bytes, ...]:
        return tuple(node_chunks[self.first : self.first + self.count])

    @property
    def empty(self) -> bool:
        return not self.count and not self.data


@dataclass(frozen=True, slots=True)
class _Parts:
    """A commit payload of type 3 (docs/api.md): the commit for members of the parent epoch,
    the Welcome (without the ratchet tree) and the sealed tree for joiners."""

    salt: bytes
    commit: _Part
    welcome: _Part
    tree: _Part
    sealed_evictions: bytes = b""

    def encode(self) -> bytes:
        w = Writer()
        w.u8(_PAYLOAD_PARTS)
        w.opaque(self.salt)
        self.commit.encode(w)
        self.welcome.encode(w)
        self.tree.encode(w)
        w.opaque(self.sealed_evictions)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, n_chunks: int) -> _Parts:
        r = Reader(data)
        if r.u8() != _PAYLOAD_PARTS:
            raise DecodeError("not a commit payload with parts")
        salt = r.opaque()
        parts = [_Part.decode(r) for _ in range(3)]
        sealed = r.opaque()
        r.finish()
        if len(salt) != _SALT_LEN:
            raise DecodeError("a commit payload's salt has the wrong length")
        _check_ranges(parts, n_chunks)
        if parts[0].empty:
            raise DecodeError("a commit payload without a commit")
        return cls(salt, parts[0], parts[1], parts[2], sealed)


def _check_ranges(parts: Sequence[_Part], n_chunks: int) -> None:
    """Chunked parts take consecutive ranges of the node's chunk list, in order, covering it."""
    pos = 0
    for p in parts:
        if p.count:
            if p.first != pos:
                raise DecodeError("payload parts do not take the node's chunks in order")
            pos += p.count
    if pos != n_chunks:
        raise DecodeError("payload parts do not cover the node's chunk list")


def _part_key(group: Group, what: bytes, salt: bytes) -> bytes:
    """Key of a sealed part: MLS-Exporter (RFC 9420 section 8.5) of the epoch whose members
    read it (the parent epoch for the commit, the new epoch for the tree), with the part's name
    and the node's random salt as context, so each key seals one payload."""
    return group.export_secret(_PART_LABEL, what + salt, CHUNK_KEY_SIZE)


def _seal_inline(key: bytes, data: bytes, label: bytes) -> bytes:
    """A sealed part small enough to stay in the node: one chunk of just the right size."""
    return seal_chunks(key, data, label, chunk_size=max(MIN_CHUNK_SIZE, len(data) + 24))[0][1]


def _eviction_key(parent: Group, commit: bytes) -> bytes:
    """Per-commit key sealing its eviction list: MLS-Exporter of the parent epoch (RFC 9420
    section 8.5) with the commit's hash as context, so every member who can process the commit
    opens it and each key seals one message (zero nonce)."""
    return parent.export_secret(_EVICT_LABEL, hashlib.sha256(commit).digest(), 32)


def _seal_evictions(parent: Group, commit: bytes, keys: Iterable[bytes]) -> bytes:
    """The commit's idle evictions (`crdt_mls.merge.records.eviction_aad` format), sealed: the
    evicted signature keys are never readable in the block (docs/merge.md 1 and 3.9)."""
    aead = ChaCha20Poly1305(_eviction_key(parent, commit))
    return aead.encrypt(bytes(12), eviction_aad(keys), _EVICT_LABEL.encode())


def _open_evictions(parent: Group, commit: bytes, sealed: bytes) -> frozenset[bytes]:
    if not sealed:
        return frozenset()
    try:
        plain = ChaCha20Poly1305(_eviction_key(parent, commit)).decrypt(bytes(12), sealed, _EVICT_LABEL.encode())
    except InvalidTag:
        raise DecryptionError("the commit's eviction list does not open") from None
    if not plain.startswith(EVICT_AAD_PREFIX):
        raise DecodeError("malformed eviction list")
    return evicted_from_aad(plain)


def _with_tree(group: Group, tree: RatchetTree) -> Group:
    return dataclasses.replace(group, tree=tree)


def _encode_epoch(tree: TreeRef, group: Group) -> bytes:
    """One kept epoch at rest: ``struct { uint32 width; opaque root<V>; opaque group<V>; }``,
    ``group`` being `Group.to_bytes` of the state with a one-leaf placeholder tree (the real
    tree is in the chunks under ``root``)."""
    leaf = next((lf for _, lf in group.tree.members()), None)
    if leaf is None:
        raise InvalidState("a kept epoch has an empty tree")
    w = Writer()
    w.u32(tree.width)
    w.opaque(tree.root)
    w.opaque(_with_tree(group, RatchetTree.create(group.suite, leaf)).to_bytes())
    return w.getvalue()


def _decode_epoch(data: bytes) -> tuple[int, bytes, bytes]:
    r = Reader(data)
    width, root, part = r.u32(), r.opaque(), r.opaque()
    r.finish()
    return width, root, part


def _ref_size(ref: NodeRef) -> int:
    return ref.size


def _w_opaque(w: Writer, data: bytes) -> None:
    w.opaque(data)


def _r_epoch_meta(r: Reader) -> tuple[bytes, tuple[bytes, ...], bytes]:
    e = r.opaque()
    parents = tuple(r.vector(lambda rr: rr.opaque()))
    return e, parents, r.opaque()


def _merge_payload(parents: Sequence[bytes], message: bytes, history: bytes = b"") -> bytes:
    w = Writer()
    w.u8(_PAYLOAD_MERGE)
    w.vector(sorted(parents), _w_opaque)
    w.opaque(message)
    if history:
        w.opaque(history)
    return w.getvalue()


def _parse_merge_payload(data: bytes) -> tuple[tuple[bytes, ...], bytes]:
    """``(parent epochs, merge message)`` of a type-2 payload."""
    parents, message, _ = _parse_merge_payload_history(data)
    return parents, message


def _parse_merge_payload_history(data: bytes) -> tuple[tuple[bytes, ...], bytes, bytes]:
    """``(parent epochs, merge message, sealed merge history or b"")`` of a type-2 payload."""
    r = Reader(data)
    if r.u8() != _PAYLOAD_MERGE:
        raise DecodeError("not a merge payload")
    parents = tuple(r.vector(lambda rr: rr.opaque()))
    message = r.opaque()
    history = r.opaque() if r.remaining() else b""
    r.finish()
    if len(parents) < 2 or list(parents) != sorted(set(parents)):
        raise DecodeError("a merge names at least two distinct parent epochs, sorted")
    return parents, message, history


def _merge_parts_payload(parents: Sequence[bytes], message: _Part, history: _Part) -> bytes:
    w = Writer()
    w.u8(_PAYLOAD_MERGE_PARTS)
    w.vector(sorted(parents), _w_opaque)
    message.encode(w)
    if not history.empty:
        history.encode(w)
    return w.getvalue()


def _parse_merge_parts_payload(data: bytes, n_chunks: int) -> tuple[tuple[bytes, ...], _Part, _Part]:
    r = Reader(data)
    if r.u8() != _PAYLOAD_MERGE_PARTS:
        raise DecodeError("not a merge payload with parts")
    parents = tuple(r.vector(lambda rr: rr.opaque()))
    message = _Part.decode(r)
    history = _Part.decode(r) if r.remaining() else _Part()
    r.finish()
    if len(parents) < 2 or list(parents) != sorted(set(parents)):
        raise DecodeError("a merge names at least two distinct parent epochs, sorted")
    _check_ranges([message, history], n_chunks)
    if message.empty:
        raise DecodeError("a merge payload without a message")
    return parents, message, history


def _merge_epoch_field(parents: Sequence[bytes]) -> bytes:
    """The node epoch field of a merge commit: a hash of its parent epochs (docs/schema.md: opaque)."""
    return hashlib.sha256(b"crdt-mls merge epochs\x00" + b"".join(sorted(parents))).digest()


def _name_of(leaf: LeafNode) -> str:
    try:
        return leaf.credential.content.decode("utf-8")
    except UnicodeDecodeError:
        return leaf.credential.content.hex()


def _short(cid: bytes) -> str:
    return cid_to_str(cid)[-10:] if cid else "-"


# ----------------------------------------------------------------------------- merge-engine log
#
# Every delivered operation is fed to the replica's `GroupDag` (docs/merge.md section 4.1) and
# the input is kept as one entry per operation under its own meta key, written in the same
# atomic batch as the rest of the call; `Replica.load` replays the entries to rebuild the DAG.

_DAG_GENESIS = 1  #: record of the group's genesis (the creator's DAG starts from it)
_DAG_ADD = 2  #: a readable operation: `GroupDag.add`
_DAG_OPAQUE = 3  #: an operation this replica cannot read: `GroupDag.add_opaque`
_DAG_ROOT = 4  #: the epoch joined from a Welcome or merge Welcome: `GroupDag.add_root`
_DAG_JOINED = 5  #: a merge joined from its Welcome with its history: `GroupDag.add_joined_merge`


def _dag_entry(
    kind: int,
    rec: OpRecord,
    membership: Membership | None = None,
    *,
    commit: bool = False,
    history: MergeHistory | None = None,
) -> bytes:
    w = Writer()
    w.u8(kind)
    encode_record(w, rec)
    w.boolean(commit)
    w.optional(None if membership is None else list(membership.members), lambda ww, ms: ww.vector(ms, encode_member))
    if history is not None:  # only _DAG_JOINED: the merge history its committer sealed
        w.opaque(history.cut)
        w.vector(list(history.base.members), encode_member)
        w.vector(list(history.records), encode_record)
    return w.getvalue()


def _feed(dag: GroupDag | None, entry: bytes) -> tuple[GroupDag, int, OpRecord]:
    """Apply one merge-log entry to ``dag`` (``None``: before the first entry); returns the DAG
    (a new one for a genesis entry), the entry kind and its record.  Raises as the DAG does."""
    r = Reader(entry)
    kind = r.u8()
    rec = decode_record(r)
    commit = r.boolean()
    members = r.optional(lambda rr: rr.vector(decode_member))
    history: MergeHistory | None = None
    if kind == _DAG_JOINED:
        cut = r.opaque()
        base = r.vector(decode_member)
        history = MergeHistory(cut, Membership.of(base), tuple(r.vector(decode_record)))
    r.finish()
    if kind == _DAG_GENESIS:
        return GroupDag(rec), kind, rec
    if dag is None:
        dag = GroupDag.for_joiner()
    if kind == _DAG_ADD:
        dag.add(rec)
    elif kind == _DAG_OPAQUE:
        dag.add_opaque(rec.cid, rec.author, rec.seq, rec.prev, rec.parents, commit=commit)
    elif kind == _DAG_ROOT and members is not None:
        dag.add_root(rec, Membership.of(members))
    elif kind == _DAG_JOINED and members is not None and history is not None:
        dag.add_joined_merge(rec, history, Membership.of(members))
    else:
        raise DecodeError("unknown merge log entry")
    return dag, kind, rec


def _open_dag_checkpoint(data: bytes) -> tuple[GroupDag, set[bytes]]:
    """The merge engine and the facade's readable heads from ``<ns>/dag/ck``:
    ``struct { opaque cut<V>; opaque dag<V>; opaque parent_heads<V><V>; }``
    (``dag`` = `GroupDag.checkpoint`)."""
    r = Reader(data)
    r.opaque()
    body = r.opaque()
    heads = set(r.vector(lambda rr: rr.opaque()))
    r.finish()
    return GroupDag.from_checkpoint(body), heads


def _advance(heads: set[bytes], rec: OpRecord) -> None:
    heads.difference_update(rec.parents)
    if rec.prev is not None:
        heads.discard(rec.prev)
    heads.add(rec.cid)


def _changed_leaves(before: RatchetTree, after: RatchetTree) -> list[int]:
    """Leaf indices whose LeafNode object differs between two trees (O(changes) when the trees
    share structure and offer ``diff``; a C-speed identity scan otherwise)."""
    changed = changed_nodes(before, after)
    if changed is None:
        a, b = before.nodes(), after.nodes()
        n = min(len(a), len(b))
        changed = [x for x in range(n) if a[x] is not b[x]]
        changed.extend(range(n, max(len(a), len(b))))
    return [x // 2 for x in changed if x % 2 == 0]


def _leaf_maps(
    before: RatchetTree, after: RatchetTree
) -> tuple[dict[bytes, tuple[int, LeafNode]], dict[bytes, tuple[int, LeafNode]]]:
    """``{signature key: (leaf, LeafNode)}`` before and after, restricted to changed leaves.
    Signature keys are unique in a tree, so a key at an unchanged leaf is at the same leaf on
    both sides: the restriction loses no change."""
    old: dict[bytes, tuple[int, LeafNode]] = {}
    new: dict[bytes, tuple[int, LeafNode]] = {}
    for i in _changed_leaves(before, after):
        lf = before.leaf(i) if i < before.n_leaves else None
        if lf is not None:
            old[lf.signature_key] = (i, lf)
        lf = after.leaf(i) if i < after.n_leaves else None
        if lf is not None:
            new[lf.signature_key] = (i, lf)
    return old, new


def _tree_changes(before: RatchetTree, after: RatchetTree, evicted: Iterable[bytes] = ()) -> tuple[Change, ...]:
    """`crdt_mls.merge.records.tree_changes` in O(changed leaves) (same result, tested)."""
    old, new = _leaf_maps(before, after)
    return changes_between(old, new, evicted)


def _commit_record(
    ref: NodeRef, epochs: tuple[bytes, ...], before: RatchetTree, after: RatchetTree, *, evicted: Iterable[bytes] = ()
) -> OpRecord:
    """`crdt_mls.merge.records.commit_record` for a commit node, in O(changed leaves)."""
    return _node_record(ref, epochs, _tree_changes(before, after, evicted))


def _welcome_of(data: bytes) -> Welcome:
    body = codec.decode(MLSMessage, data).body
    if not isinstance(body, Welcome):
        raise WelcomeError("the Welcome part is not a Welcome")
    return body


def _node_record(ref: NodeRef, epochs: tuple[bytes, ...], changes: tuple[Change, ...] | None) -> OpRecord:
    return OpRecord(ref.cid, ref.author, ref.seq, ref.prev, tuple(ref.parents), epochs, changes)


# ----------------------------------------------------------------------------- the replica


# --------------------------------------------------------------------- state at rest (issue 6)

_SEAL_MAGIC = b"CMLSsv"  #: prefix of a sealed meta value
_SEAL_VERSION = 1
_SEAL_NONCE = 12
STATE_KEY_SIZE = 32


def _check_state_key(state_key: bytes | None) -> bytes | None:
    if state_key is None:
        return None
    if not isinstance(state_key, (bytes, bytearray)) or len(state_key) != STATE_KEY_SIZE:
        raise InvalidArgument(f"a state key must be {STATE_KEY_SIZE} bytes")
    return bytes(state_key)


def seal_meta(state_key: bytes, meta_key: str, value: bytes) -> bytes:
    """Seal one meta value at rest (issue 6): ``"CMLSsv" || u8 version || nonce[12] ||
    ChaCha20-Poly1305(value)`` with a random nonce and the meta key name as associated data,
    so a value moved to another key does not open."""
    key = _check_state_key(state_key)
    assert key is not None
    nonce = os.urandom(_SEAL_NONCE)
    header = _SEAL_MAGIC + bytes([_SEAL_VERSION])
    return header + nonce + ChaCha20Poly1305(key).encrypt(nonce, bytes(value), header + meta_key.encode("utf-8"))


def is_sealed(value: bytes) -> bool:
    """Whether a stored meta value was written by `seal_meta`."""
    return value.startswith(_SEAL_MAGIC)


def open_meta(state_key: bytes, meta_key: str, sealed: bytes) -> bytes:
    """Open a value sealed by `seal_meta` under ``meta_key``; `StateKeyError` if the key is
    wrong, the value was tampered with or moved, or it is not sealed at all."""
    key = _check_state_key(state_key)
    assert key is not None
    header = _SEAL_MAGIC + bytes([_SEAL_VERSION])
    if not sealed.startswith(_SEAL_MAGIC):
        raise StateKeyError(f"the stored value {meta_key!r} is not sealed (saved without a state key)")
    if not sealed.startswith(header) or len(sealed) < len(header) + _SEAL_NONCE + 16:
        raise StateKeyError(f"the sealed value {meta_key!r} has an unknown version or is truncated")
    nonce = sealed[len(header) : len(header) + _SEAL_NONCE]
    try:
        return ChaCha20Poly1305(key).decrypt(
            nonce, sealed[len(header) + _SEAL_NONCE :], header + meta_key.encode("utf-8")
        )
    except InvalidTag:
        raise StateKeyError(
            f"the sealed value {meta_key!r} does not open: wrong state key (password) or tampered"
        ) from None


def _unseal(state_key: bytes | None, meta_key: str, value: bytes | None) -> bytes | None:
    """The plain meta value: opened with ``state_key``, or refused if sealed and no key is given."""
    if value is None:
        return None
    if state_key is not None:
        return open_meta(state_key, meta_key, value)
    if is_sealed(value):
        raise StateKeyError(f"the stored value {meta_key!r} is sealed: a state key is needed to load it")
    return value


class Replica:
    """One member's replica of one group (design doc section 1).

    Build with `Replica.create` (new group), `Replica.new_member` (to be invited) or
    `Replica.load` (from a store).  Not thread-safe; every public call that changes state
    writes it to the store in one atomic batch, and a call that raises leaves the replica
    and the store as they were.
    """

    def __init__(
        self,
        name: str,
        store: Store,
        *,
        cipher_suite: int = 1,
        namespace: str = "replica",
        max_epochs: int = DEFAULT_MAX_EPOCHS,
        rng: Rng = os.urandom,
        _signature_priv: bytes | None = None,
        state_key: bytes | None = None,
    ) -> None:
        if not name:
            raise InvalidArgument("a member needs a non-empty name")
        if max_epochs < 1:
            raise InvalidArgument("max_epochs must be at least 1")
        self.name = name
        self.store = store
        self.cipher_suite = cipher_suite
        self.namespace = namespace
        self.max_epochs = max_epochs
        self._rng = rng
        self._state_key = _check_state_key(state_key)
        if _signature_priv is None:
            kp = make_key_package(cipher_suite, name.encode("utf-8"), rng=rng)
            _signature_priv = kp.signature_priv
        self._signature_priv = _signature_priv
        self._sig_pub = bytes(nacl.signing.SigningKey(_signature_priv).verify_key)
        self._pending_kps: list[KeyPackagePrivate] = []
        self._tag = b""
        self._states: dict[bytes, Group] = {}
        self._saved: dict[bytes, Group] = {}  #: the Group objects last written, per epoch
        self._epoch_order: list[bytes] = []
        self._current = b""
        self._epoch_heads: set[bytes] = set()
        #: epoch id -> (parent epoch ids, committer's signature key), for the merge
        self._epoch_meta: dict[bytes, tuple[tuple[bytes, ...], bytes]] = {}
        self._node_heads: set[bytes] = set()
        self._seq = 0
        self._prev: bytes | None = None
        self._receiver: CausalReceiver[NodeRef] = CausalReceiver(CausalBuffer(size_of=_ref_size, gate=self._needs))
        self._outgoing: list[tuple[bytes, bytes]] = []
        self._removed = False
        #: the merge engine over every delivered operation (docs/merge.md section 4.1) and its input log
        self._dag: GroupDag = GroupDag.for_joiner()
        self._dag_entries: list[bytes] = []
        self._dag_saved = 0  #: entries already in the store
        self._dag_start = 0  #: index of the first entry kept (earlier ones were truncated)
        #: the saved checkpoint the log after ``_dag_start`` replays on (``b""``: none)
        self._dag_ck = b""
        self._dag_ck_kept = 0  #: nodes the last checkpoint kept (the next one waits for as many entries)
        self._dag_ck_tried = 0  #: log length when a checkpoint was last looked for
        self._ack_due = False  #: an acknowledgement to publish at the end of this call
        #: merge log entries since the last checkpoint before a new one is looked for
        self.dag_checkpoint_min = _DAG_CK_MIN
        #: the maximal operations this replica can read: the causal parents of its own nodes
        self._parent_heads: set[bytes] = set()
        #: public trees of epochs whose secrets were dropped, oldest first (merge bases)
        self._public: dict[bytes, RatchetTree] = {}
        self.max_public_trees = DEFAULT_MAX_PUBLIC_TREES
        #: payload bytes a node of this replica carries inline, and the size of chunk blocks
        self.inline_limit = DEFAULT_INLINE_LIMIT
        self.chunk_size = DEFAULT_CHUNK_SIZE
        #: chunk blocks made or accepted in this call (written with the call's batch)
        self._new_blocks: list[tuple[bytes, bytes]] = []
        #: chunk blocks received in the current `receive` call
        self._batch_chunks: dict[bytes, bytes] = {}
        # state at rest: the saved tree of each kept epoch, how many kept trees use each chunk
        self._trees: dict[bytes, tuple[RatchetTree, TreeRef]] = {}
        self._saved_public: set[bytes] = set()
        self._chunk_rc: dict[bytes, int] = {}
        self._chunk_id_key = (
            b""
            if self._state_key is None
            else hmac.new(self._state_key, b"crdt-mls tree chunk ids", hashlib.sha256).digest()
        )
        # the receiver journal: checkpoint index, next index, deliveries since and at the checkpoint
        self._recv_ck = self._recv_end = self._recv_since_ck = self._recv_ck_size = 0
        self._recv_force_ck = False
        self._wait_saved = CausalBuffer[NodeRef]().waiting_to_bytes(encode_ref)

    def __repr__(self) -> str:
        ep = self._states.get(self._current)
        return (
            f"Replica(name={self.name!r}, epoch={ep.epoch if ep else None}, "
            f"members={len(ep.members()) if ep else 0}, removed={self._removed})"
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        name: str,
        store: Store | None = None,
        *,
        cipher_suite: int = 1,
        namespace: str = "replica",
        rng: Rng = os.urandom,
        signature_priv: bytes | None = None,
        state_key: bytes | None = None,
    ) -> Replica:
        """Create a new group with this member alone in it (RFC 9420 section 11); the
        genesis node is the first outgoing block.

        ``signature_priv``: the member's signature key (e.g. a password identity's Ed25519
        seed, crdt_mls.content.identity), fresh if None.  ``state_key`` (32 bytes): seal every
        meta value this replica writes (issue 6, `seal_meta`); `load` then needs the same key.
        """
        r = cls(
            name,
            store if store is not None else MemoryStore(),
            cipher_suite=cipher_suite,
            namespace=namespace,
            rng=rng,
            _signature_priv=signature_priv,
            state_key=state_key,
        )
        r.start_group()
        return r

    def start_group(self) -> list[Event]:
        """Create a new group with this member alone in it (RFC 9420 section 11); the
        genesis node is the first outgoing block.  Only for a replica not in a group."""
        if self._current:
            raise InvalidState("this replica already belongs to a group")
        kp = make_key_package(
            self.cipher_suite, self.name.encode("utf-8"), signature_priv=self._signature_priv, rng=self._rng
        )
        group = Group.create(self.cipher_suite, kp, rng=self._rng)
        old = self._snapshot()
        self._tag = derive_group_tag(group.export_secret(_TAG_LABEL, b"", 32), group.group_id)
        ref = self._sign(NodeKind.GENESIS, b"", b"", ())
        try:
            self._dag, self._dag_entries, self._dag_saved, self._parent_heads = GroupDag.for_joiner(), [], 0, set()
            self._dag_apply(_dag_entry(_DAG_GENESIS, genesis_record(ref.cid, ref.author, group.tree)))
            self._add_epoch(ref.cid, group, (), ref.author)
            self._current = ref.cid
            self._local(ref)
            self._save([ref])
        except CrdtMlsError:
            self._restore(old)
            raise
        return [Joined(0, ref.cid, (self.name,))]

    @classmethod
    def new_member(
        cls,
        name: str,
        store: Store | None = None,
        *,
        cipher_suite: int = 1,
        namespace: str = "replica",
        rng: Rng = os.urandom,
        signature_priv: bytes | None = None,
        state_key: bytes | None = None,
    ) -> Replica:
        """A member not in any group yet: publish `key_package()` out of band, then
        `receive` the commit that adds it (its Welcome).  ``signature_priv`` and
        ``state_key`` as in `create`."""
        r = cls(
            name,
            store if store is not None else MemoryStore(),
            cipher_suite=cipher_suite,
            namespace=namespace,
            rng=rng,
            _signature_priv=signature_priv,
            state_key=state_key,
        )
        r._save([])
        return r

    @classmethod
    def load(
        cls, store: Store, *, namespace: str = "replica", rng: Rng = os.urandom, state_key: bytes | None = None
    ) -> Replica:
        """Restore the replica saved in ``store`` under ``namespace``; a replica saved with a
        ``state_key`` needs the same key (`StateKeyError` otherwise, the store untouched).

        A replica saved in the version-3 layout (whole `Group` per epoch, receiver in the
        header) is migrated: loaded, then written in the current layout in one atomic batch."""
        key = _check_state_key(state_key)
        state_name = f"{namespace}/state"
        data = _unseal(key, state_name, store.get_meta(state_name))
        if data is None:
            raise InvalidState(f"no replica saved under {namespace!r} in this store")
        try:
            rep = cls._decode(data, store, namespace, rng, key)
        except (DecodeError, ValueError) as e:
            raise StorageError(f"the saved replica state is corrupt: {e}") from None
        if rep._recv_force_ck:
            rep._save([])
        return rep

    # ------------------------------------------------------------------ queries

    @property
    def in_group(self) -> bool:
        """Whether this replica is a member of the group in its current epoch."""
        g = self._states.get(self._current)
        return g is not None and g.active and not self._removed

    @property
    def group(self) -> Group:
        """The MLS state (`crdt_mls.mls.group.Group`) of the current epoch."""
        g = self._states.get(self._current)
        if g is None:
            raise InvalidState("this replica is not in a group yet")
        return g

    @property
    def epoch(self) -> int:
        """The RFC 9420 epoch number of the current epoch."""
        return self.group.epoch

    @property
    def epoch_id(self) -> bytes:
        """The current epoch's id: the CID of the commit (or genesis) node that started it."""
        if not self._current:
            raise InvalidState("this replica is not in a group yet")
        return self._current

    @property
    def group_tag(self) -> bytes:
        """The opaque group tag carried by every node (docs/schema.md); not the MLS group id."""
        return self._tag

    @property
    def signature_key(self) -> bytes:
        """This member's public signature key (the author key of its nodes)."""
        return self._sig_pub

    def members(self) -> list[tuple[int, str]]:
        """``(leaf index, name)`` of every member in the current epoch."""
        return [(i, _name_of(lf)) for i, lf in self.group.members()]

    def epoch_heads(self) -> tuple[bytes, ...]:
        """Epoch ids no known commit builds on; more than one means concurrent commits."""
        return tuple(sorted(self._epoch_heads))

    def heads(self) -> tuple[bytes, ...]:
        """The operation DAG's heads (delivered nodes nobody builds on)."""
        return tuple(sorted(self._node_heads))

    @property
    def dag(self) -> GroupDag:
        """The merge engine (`crdt_mls.merge.GroupDag`) fed with every delivered operation: its
        ``state(heads)`` is the S(heads) this replica merges with (docs/merge.md section 4).
        For inspection only: feeding it directly desynchronizes it from the saved merge log."""
        return self._dag

    def missing(self) -> set[bytes]:
        """CIDs of operations that waiting ones depend on: fetch and `receive` them."""
        return self._receiver.missing()

    def export_secret(self, label: str, context: bytes = b"", length: int = 32) -> bytes:
        """MLS-Exporter of the current epoch (RFC 9420 section 8.5)."""
        self._require_member()
        return self.group.export_secret(label, context, length)

    def take_outgoing(self) -> list[tuple[bytes, bytes]]:
        """``(cid, block)`` of the operations made since the last call, to send to peers
        (they are already in the store)."""
        out, self._outgoing = self._outgoing, []
        return out

    # ------------------------------------------------------------------ member operations

    def key_package(self) -> bytes:
        """A fresh KeyPackage (RFC 9420 section 10) as MLSMessage bytes, to hand out of band;
        the private part is kept (and saved) until a Welcome uses it."""
        kp = make_key_package(
            self.cipher_suite, self.name.encode("utf-8"), signature_priv=self._signature_priv, rng=self._rng
        )
        self._pending_kps.append(kp)
        try:
            self._save([])
        except CrdtMlsError:
            self._pending_kps.pop()
            raise
        return kp.public_message()

    def add(self, key_packages: Sequence[bytes]) -> list[Event]:
        """Commit adding the members of ``key_packages`` (RFC 9420 sections 12.1.1, 12.4);
        the commit node carries their Welcome."""
        if not key_packages:
            raise InvalidArgument("add needs at least one key package")
        return self._commit(add=list(key_packages))

    def remove(self, names_or_leaves: Sequence[str | int]) -> list[Event]:
        """Commit removing members by name or leaf index (RFC 9420 section 12.1.3)."""
        self._require_member()
        return self._commit(remove=self._leaves_of(names_or_leaves))

    def _leaves_of(self, names_or_leaves: Sequence[str | int]) -> list[int]:
        leaves: list[int] = []
        members = self.members()
        for x in names_or_leaves:
            if isinstance(x, int):
                if x not in {i for i, _ in members}:
                    raise InvalidArgument(f"no member at leaf {x}")
                leaves.append(x)
            else:
                found = [i for i, n in members if n == x]
                if not found:
                    raise InvalidArgument(f"no member named {x!r}")
                leaves.extend(found)
        if self.group.own_leaf in leaves:
            raise InvalidArgument("a member cannot remove itself with a commit")
        if not leaves:
            raise InvalidArgument("remove needs at least one member")
        return leaves

    def evict(self, names_or_leaves: Sequence[str | int]) -> list[Event]:
        """Commit an idle eviction (design doc section 5.4, docs/merge.md 3.9): a removal that is
        **weak** in a merge: void if the evicted member has an operation concurrent with it, in
        which case the member stays and gets the merged epoch from the merge Welcome.  Within
        one branch it acts like `remove`.  The eviction list travels sealed in the commit node."""
        self._require_member()
        leaves = self._leaves_of(names_or_leaves)
        keys = [lf.signature_key for i, lf in self.group.members() if i in leaves]
        return self._commit(remove=leaves, evict=keys)

    def update(self) -> list[Event]:
        """Commit with a fresh UpdatePath only: new keys for this member and its path
        (post-compromise security, RFC 9420 sections 12.4, 16.6)."""
        return self._commit()

    def send(self, data: bytes | str, *, padding: int = 0) -> bytes:
        """Encrypt an application message for the current epoch (RFC 9420 section 6.3);
        returns the CID of its node."""
        self._require_member()
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        msg, group = self.group.protect_application(raw, padding=padding, rng=self._rng)
        ref = self._sign(NodeKind.APPLICATION, self._current, msg, self._parents())
        old = self._snapshot()
        try:
            self._dag_local(_node_record(ref, (self._current,), None))
            self._states[self._current] = group
            self._local(ref)
            self._save([ref])
        except CrdtMlsError:
            self._restore(old)
            raise
        return ref.cid

    def ack(self) -> bytes:
        """Publish an acknowledgement (an ``ack`` node, docs/schema.md: no payload) naming what
        this replica has read as causal parents; returns its CID.  It tells the others this
        member has seen those operations, so their merge logs can be truncated past them
        (docs/api.md "Merge log truncation"); call it now and then when idle.  A replica
        acknowledges its own removal by itself."""
        if not self._current:
            raise InvalidState("this replica is not in a group yet")
        old = self._snapshot()
        try:
            ref = self._make_ack()
            self._save([ref])
        except CrdtMlsError:
            self._restore(old)
            raise
        return ref.cid

    def _make_ack(self) -> NodeRef:
        ref = self._sign(NodeKind.ACK, self._current, b"", self._parents())
        self._dag_local(_node_record(ref, (self._current,), None))
        self._local(ref)
        return ref

    # ------------------------------------------------------------------ receiving

    def receive(self, blocks: Iterable[tuple[bytes, bytes]]) -> list[Event]:
        """Take blocks ``(cid, block)`` from peers, in any order and with duplicates: operation
        nodes and the chunk blocks (raw CIDs) that large operations refer to.

        Every block is checked (CID, encoding, schema, group tag once joined, signature; a
        chunk against its CID) before anything changes: a bad block raises a
        `RemoteInputError` and nothing is changed.  Nodes are applied in causal order; those
        waiting for parents or for chunks this member needs are reported by
        `OperationWaiting` (fetch `missing()`).  A chunk no operation refers to is ignored.
        """
        refs: list[NodeRef] = []
        chunks: dict[bytes, bytes] = {}
        for cid, block in blocks:
            cid, block = bytes(cid), bytes(block)
            if cid[:4] == RAW_SHA256_PREFIX:
                if len(block) > MAX_CHUNK_SIZE:
                    raise OversizeError(f"chunk block of {len(block)} bytes exceeds the limit of {MAX_CHUNK_SIZE}")
                if cid_for_raw(block) != cid:
                    raise IntegrityError(f"chunk block of {len(block)} bytes does not match its CID")
                chunks[cid] = block
                continue
            node = decode_node(block, cid, group=self._tag or None)
            refs.append(NodeRef(cid, node, len(block)))
        old = self._snapshot()
        events: list[Event] = []
        stored: list[NodeRef] = []
        try:
            wanted = {c for c in self._receiver.missing() if c[:4] == RAW_SHA256_PREFIX}
            for ref in refs:
                wanted.update(ref.node.chunks)
            self._batch_chunks = {c: b for c, b in chunks.items() if c in wanted}
            self._new_blocks.extend(self._batch_chunks.items())
            # chunks that arrived now, or reached the store another way, release the operations
            arrived = [c for c in self._receiver.missing() if c[:4] == RAW_SHA256_PREFIX and self._have_chunk(c)]
            if arrived:
                events.extend(self._consume(self._receiver.available_iter(arrived)))
            for ref in refs:
                stored.append(ref)
                events.extend(self._consume(self._receiver.receive_iter(ref)))
            missing = self._receiver.missing()
            if missing:
                events.append(OperationWaiting(tuple(sorted(missing))))
            if self._ack_due:  # this member was removed: acknowledge it, so logs can be truncated
                self._ack_due = False
                stored.append(self._make_ack())
            self._save(stored)
        except CrdtMlsError:
            self._restore(old)
            raise
        finally:
            self._batch_chunks = {}
        return events

    def _consume(self, items: Iterable[NodeRef | Equivocation | Refused]) -> list[Event]:
        """Apply what the causal receiver delivers, one node at a time (its gate looks at the
        state each node leaves)."""
        events: list[Event] = []
        for item in items:
            if isinstance(item, Refused):
                events.append(OperationRefused(item.cid, item.reason))
            elif isinstance(item, Equivocation):
                events.append(OperationRefused(item.second, f"equivocation by author seq {item.seq}"))
            else:
                applied = self._apply(item)
                if not self._current:  # history from before we joined is unreadable by design
                    applied = [e for e in applied if not isinstance(e, OperationUnreadable)]
                events.extend(applied)
        return events

    # ------------------------------------------------------------------ chunk blocks

    def _have_chunk(self, cid: bytes) -> bool:
        return cid in self._batch_chunks or self.store.has_block(cid)

    def _chunk_data(self, cid: bytes) -> bytes | None:
        data = self._batch_chunks.get(cid)
        return data if data is not None else self.store.get_block(cid)

    def _part_bytes(self, node: OpNode, part: _Part, key: bytes | None, label: bytes) -> bytes:
        """The bytes of a payload part: inline, or its chunk blocks joined (and opened with
        ``key`` if the part is sealed).  `RemoteInputError` if a chunk is missing or bad."""
        if not part.count:
            return part.data if key is None else open_chunks(key, [part.data], label)
        blocks: list[bytes] = []
        for c in part.chunks(node.chunks):
            data = self._chunk_data(c)
            if data is None:
                raise IntegrityError("a chunk block of the operation is missing")
            blocks.append(data)
        return join_plain(blocks) if key is None else open_chunks(key, blocks, label)

    def _needs(self, ref: NodeRef) -> list[bytes]:
        """The causal buffer's gate (docs/causal.md section 1): the chunk blocks this replica
        still lacks to process ``ref``: a member of the commit's epoch needs the commit part,
        a joiner the Welcome part and then, if the Welcome is for it, the tree part; a merge
        is needed by everyone in the group.  Never raises (a malformed payload needs nothing
        and is reported as unreadable when applied)."""
        node = ref.node
        if not node.chunks or node.kind != NodeKind.COMMIT or ref.author == self._sig_pub:
            return []
        try:
            want = self._wanted_chunks(node)
        except CrdtMlsError:
            return []
        return [c for c in want if not self._have_chunk(c)]

    def _wanted_chunks(self, node: OpNode) -> Sequence[bytes]:
        kind = node.payload[:1]
        if kind == bytes([_PAYLOAD_MERGE_PARTS]):
            _parse_merge_parts_payload(node.payload, len(node.chunks))
            return node.chunks if self._current else ()
        if kind != bytes([_PAYLOAD_PARTS]):
            return ()
        parts = _Parts.decode(node.payload, len(node.chunks))
        state = self._states.get(node.epoch)
        if state is not None and state.active:
            return parts.commit.chunks(node.chunks)
        if self._current or not self._pending_kps or parts.welcome.empty:
            return ()
        welcome_chunks = parts.welcome.chunks(node.chunks)
        if not all(self._have_chunk(c) for c in welcome_chunks):
            return welcome_chunks
        welcome = _welcome_of(self._part_bytes(node, parts.welcome, None, b""))
        refs = {s.new_member for s in welcome.secrets}
        if not any(kp.ref in refs for kp in self._pending_kps):
            return ()
        return parts.tree.chunks(node.chunks)

    # ------------------------------------------------------------------ internals

    def _require_member(self) -> None:
        if not self._current:
            raise InvalidState("this replica is not in a group yet")
        if not self.in_group:
            raise InvalidState("this member was removed from the group")

    def _parents(self) -> tuple[bytes, ...]:
        """Causal parents of a new node: the operations this replica can read that no readable
        operation builds on (docs/merge.md 4.1 facade rule: a commit's epoch parents stay exactly
        its commit frontier)."""
        return tuple(sorted(self._parent_heads))

    def _links(self, parents: Sequence[bytes]) -> tuple[bytes, ...]:
        return (*parents, *((self._prev,) if self._prev is not None else ()))

    # ------------------------------------------------------------------ merge engine feed

    def _dag_apply(self, entry: bytes) -> None:
        """Feed one entry to the `GroupDag` and log it; raises as the DAG does, nothing changed."""
        self._dag, kind, rec = _feed(self._dag, entry)
        self._dag_entries.append(entry)
        if kind != _DAG_OPAQUE:
            _advance(self._parent_heads, rec)

    def _dag_try(self, entry: bytes) -> str | None:
        """`_dag_apply` for remote input: the reason the engine refused it, or ``None``."""
        try:
            self._dag_apply(entry)
        except (RemoteInputError, InvalidState, InvalidArgument) as e:
            return f"merge engine: {type(e).__name__}: {e}"
        return None

    def _dag_local(self, rec: OpRecord) -> None:
        """Feed this replica's own new operation; the engine refusing it is a usage error."""
        try:
            self._dag_apply(_dag_entry(_DAG_ADD, rec))
        except RemoteInputError as e:
            raise InvalidState(f"the merge engine refused this operation: {e}") from None

    def _dag_opaque(self, ref: NodeRef) -> None:
        commit = ref.node.kind in (NodeKind.COMMIT, NodeKind.GENESIS)
        # if the engine cannot place it (a parent it never got), its descendants stay out too
        with contextlib.suppress(CrdtMlsError):
            self._dag_apply(_dag_entry(_DAG_OPAQUE, _node_record(ref, (), None), commit=commit))

    def _rebuild_dag(self) -> None:
        """Replay the merge log on its checkpoint (after a load or a rolled-back call)."""
        dag = GroupDag.for_joiner()
        heads: set[bytes] = set()
        if self._dag_ck:
            dag, heads = _open_dag_checkpoint(self._dag_ck)
        for entry in self._dag_entries:
            dag, kind, rec = _feed(dag, entry)
            if kind != _DAG_OPAQUE:
                _advance(heads, rec)
        self._dag, self._parent_heads = dag, heads

    def _sign(
        self, kind: NodeKind, epoch: bytes, payload: bytes, parents: tuple[bytes, ...], chunks: tuple[bytes, ...] = ()
    ) -> NodeRef:
        fields = NodeFields(kind, self._tag, self._seq, self._prev, parents, epoch, payload, chunks)
        return NodeRef.from_node(sign_node(fields, self._signature_priv))

    def _local(self, ref: NodeRef, blocks: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Record our own new node: delivered, our log advanced, heads, outgoing (its chunk
        blocks first, then the node: links before the block that names them)."""
        delivery = self._receiver.receive(ref)
        if ref not in delivery.delivered:
            raise InvalidState("own operation was not deliverable")  # pragma: no cover - invariant
        self._seq = ref.seq + 1
        self._prev = ref.cid
        self._advance_heads(ref)
        self._new_blocks.extend(blocks)
        self._outgoing.extend(blocks)
        self._outgoing.append((ref.cid, encode_node(ref.node)[1]))

    def _advance_heads(self, ref: NodeRef) -> None:
        self._node_heads.difference_update(ref.parents)
        if ref.prev is not None:
            self._node_heads.discard(ref.prev)
        self._node_heads.add(ref.cid)

    def _commit(
        self, *, add: Sequence[bytes] = (), remove: Sequence[int] = (), evict: Sequence[bytes] = ()
    ) -> list[Event]:
        self._require_member()
        if len(self._epoch_heads) > 1:
            raise InvalidState("concurrent commits forked the group; a merge is needed before the next commit")
        before = self.group
        # the ratchet tree travels outside the Welcome, sealed for the joiners (RFC 9420 12.4.3.3)
        msg, welcome, after = before.commit(
            add=add, remove=remove, private=True, ratchet_tree_in_welcome=not add, rng=self._rng
        )
        sealed = _seal_evictions(before, msg, evict) if evict else b""
        payload, blocks = self._commit_payload(before, after, msg, welcome, sealed)
        chunks = tuple(c for c, _ in blocks)
        ref = self._sign(NodeKind.COMMIT, self._current, payload, self._parents(), chunks)
        old = self._snapshot()
        try:
            self._dag_local(
                _commit_record(ref, (self._current,), before.tree, after.tree, evicted=evict),
            )
            self._add_epoch(ref.cid, after, (self._current,), ref.author)
            self._current = ref.cid
            self._local(ref, blocks)
            self._prune()
            self._save([ref])
        except CrdtMlsError:
            self._restore(old)
            raise
        return self._commit_events(before, after, ref.cid, self.name)

    def _commit_payload(
        self, before: Group, after: Group, msg: bytes, welcome: bytes | None, sealed: bytes
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The commit node's payload and chunk blocks.  A commit without Welcome that fits is
        the type-1 payload.  Otherwise type 3 (docs/api.md): the commit (PrivateMessage), the
        Welcome without the tree, and the tree sealed under the new epoch's exporter; parts
        go to chunk blocks, largest first, until the payload fits ``inline_limit``."""
        if welcome is None:
            inline = _commit_payload(msg, None, sealed)
            if len(inline) <= self.inline_limit:
                return inline, []
        salt = self._rng(_SALT_LEN)
        tree = after.tree.encode() if welcome else b""
        sizes = {"commit": len(msg), "welcome": len(welcome or b""), "tree": len(tree) + 24 if tree else 0}
        total = sum(sizes.values()) + len(sealed) + 64
        chunked: set[str] = set()
        for name in sorted(sizes, key=lambda k: sizes[k], reverse=True):
            if total <= self.inline_limit or not sizes[name]:
                break
            chunked.add(name)
            total -= sizes[name]
        blocks: list[tuple[bytes, bytes]] = []

        def part(name: str, data: bytes, key: bytes | None, label: bytes) -> _Part:
            if not data:
                return _Part()
            if name not in chunked:
                return _Part(data if key is None else _seal_inline(key, data, label))
            made = (
                plain_chunks(data, chunk_size=self.chunk_size)
                if key is None
                else seal_chunks(key, data, label, chunk_size=self.chunk_size)
            )
            first = len(blocks)
            blocks.extend(made)
            return _Part(b"", first, len(made))

        commit_part = part(
            "commit", msg, _part_key(before, b"commit", salt) if "commit" in chunked else None, b"commit"
        )
        welcome_part = part("welcome", welcome or b"", None, b"")
        tree_part = part("tree", tree, _part_key(after, b"tree", salt) if tree else None, b"tree")
        return _Parts(salt, commit_part, welcome_part, tree_part, sealed).encode(), blocks

    def _add_epoch(self, cid: bytes, group: Group, parents: tuple[bytes, ...], author: bytes) -> None:
        self._states[cid] = group
        self._epoch_order.append(cid)
        self._epoch_meta[cid] = (parents, author)
        self._epoch_heads.difference_update(parents)
        self._epoch_heads.add(cid)
        # epoch heads are the latest epochs this replica holds: one in the causal past of another
        # (also through commits it cannot read, e.g. a merge Welcome's epoch built on the other
        # side of a partition) is not a head (docs/merge.md 4.1)
        heads = self._epoch_heads
        if len(heads) > 1 and all(h in self._dag for h in heads):
            self._epoch_heads = {h for h in heads if not any(o != h and self._dag.in_past(h, o) for o in heads)}

    # ------------------------------------------------------------------ merge (design doc section 5)

    @property
    def merge_leader(self) -> bytes | None:
        """Signature key of the member expected to merge the current fork first, or ``None`` when
        there is no fork (or S(heads) needs history this replica cannot read).  Any member may
        merge, and concurrent merges are merged in turn (merge of merges); the turn order
        avoids most of them (design sketch section 4)."""
        order = self._merge_order()
        return order[0] if order else None

    def merge_rank(self) -> int | None:
        """This member's turn to merge the current fork (0 first): wait ``rank x delay`` and skip
        if a merge arrived meanwhile.  ``None`` if there is no fork or this member cannot merge."""
        order = self._merge_order()
        key = self.signature_key
        return order.index(key) if key in order else None

    def _merge_order(self) -> list[bytes]:
        """Who can issue the merge of the epoch heads, in turn order: `GroupDag.merge_order`
        (members of S(heads) who are members of at least one head epoch; the others are foreign
        parents for them, docs/merge.md 6.2), those who are members of every head epoch first.  Empty without a fork, or when this
        replica cannot compute S(heads) or is in no head epoch itself (it then waits for a
        merge: the other side's round, docs/merge.md 4.1)."""
        if len(self._epoch_heads) < 2 or self._removed:
            return []
        heads = self.epoch_heads()
        if any(h not in self._states for h in heads) or not any(self._states[h].active for h in heads):
            return []
        try:
            order = self._dag.merge_order(heads)
        except CrdtMlsError:
            return []
        # members of every head epoch first: they read every branch, so their view of the fork
        # is the one the others have (a joiner of one branch may not even see the fork)
        trees = [{lf.signature_key for _, lf in self._states[h].members()} for h in heads]
        everywhere = [k for k in order if all(k in t for t in trees)]
        return everywhere + [k for k in order if k not in set(everywhere)]

    def merge(self) -> list[Event]:
        """Issue a merge commit over the current epoch heads (design doc section 5.7, docs/merge.md):
        a fresh UpdatePath over the merged tree, a merge Welcome for members who were not in
        every branch.  Only when `epoch_heads` has several heads."""
        if len(self._epoch_heads) < 2:
            raise InvalidState("nothing to merge: the group has one epoch head")
        heads = self.epoch_heads()
        missing = [h for h in heads if h not in self._states]
        if missing:
            raise InvalidState("a concurrent epoch is unknown to this replica")
        if self._removed:
            raise InvalidState("this member was removed from the group")
        if not any(self._states[h].active for h in heads):
            raise InvalidState("this member is in no epoch head: a member of another side merges (docs/merge.md 4.1)")
        node_parents = self._parents()
        # S(heads) of everything this replica read: the merge commit's causal parents (docs/merge.md 4)
        st = self._dag.state(self._links(node_parents))
        parents = [ParentEpoch.of(h, self._states[h]) for h in heads]
        # the merge's base (the latest cut, docs/merge.md 5); without its tree: no base
        base = self._base_epoch(st.base) if st.base is not None else None
        message, group = create_merge_commit(
            parents, st.membership, base=base, rng=self._rng, own_states=self._own_states()
        )
        history = b""
        if MergeMessage.from_bytes(message).welcome:
            # the members who join from the merge Welcome get the history S came from, so that
            # they compute every later S like the others (docs/merge.md 4.2)
            history = seal_history(group, self._dag.history(self._links(node_parents)), rng=self._rng)
        payload = _merge_payload(heads, message, history)
        blocks: list[tuple[bytes, bytes]] = []
        if len(payload) > self.inline_limit:
            # both are ciphertext already (docs/merge.md 6.3, 4.2): plain chunks, largest first
            datas = [message, history]
            total = len(payload)
            chunked: set[int] = set()
            for i in sorted(range(2), key=lambda k: len(datas[k]), reverse=True):
                if total <= self.inline_limit or not datas[i]:
                    break
                chunked.add(i)
                total -= len(datas[i])
            parts: list[_Part] = []
            for i, data in enumerate(datas):
                if i in chunked:
                    made = plain_chunks(data, chunk_size=self.chunk_size)
                    parts.append(_Part(b"", len(blocks), len(made)))
                    blocks.extend(made)
                else:
                    parts.append(_Part(data))
            payload = _merge_parts_payload(heads, parts[0], parts[1])
        chunks = tuple(c for c, _ in blocks)
        ref = self._sign(NodeKind.COMMIT, _merge_epoch_field(heads), payload, node_parents, chunks)
        old = self._snapshot()
        before = self._states.get(self._current, group)
        try:
            self._dag_local(merge_record(ref.cid, ref.author, ref.seq, ref.prev, ref.parents, heads, group.tree))
            self._add_epoch(ref.cid, group, heads, ref.author)
            self._current = ref.cid
            self._removed = False
            self._local(ref, blocks)
            self._prune()
            self._save([ref])
        except CrdtMlsError:
            self._restore(old)
            raise
        return self._merge_events(before, group, ref.cid, heads, self.name)

    def _base_epoch(self, epoch: bytes) -> BaseEpoch | None:
        """The public tree and membership of a merge's base epoch, if this replica keeps it
        (with its secrets, or only its public tree: `epoch_tree`)."""
        tree = self.epoch_tree(epoch)
        if tree is None:
            return None
        try:
            membership = self._dag.state({epoch}).membership
        except CrdtMlsError:
            return None
        return BaseEpoch(epoch, tree, membership)

    def _own_states(self) -> list[Group]:
        """Every kept state in which this replica is a member: a merged leaf may be one from before
        this member's voided commits (`merged_private_keys`, docs/merge.md 10)."""
        return [g for g in self._states.values() if g.active]

    def _merge_events(self, before: Group, after: Group, cid: bytes, heads: Sequence[bytes], by: str) -> list[Event]:
        events: list[Event] = [
            e for e in self._commit_events(before, after, cid, by) if not isinstance(e, EpochChanged)
        ]
        events.append(MergeMade(after.epoch, cid, tuple(heads), by, tuple(_name_of(lf) for _, lf in after.members())))
        return events

    def _apply_merge(self, ref: NodeRef) -> list[Event]:
        node = ref.node
        try:
            if node.payload[:1] == bytes([_PAYLOAD_MERGE_PARTS]):
                heads, part, history_part = _parse_merge_parts_payload(node.payload, len(node.chunks))
                message = self._part_bytes(node, part, None, b"")
                history = self._part_bytes(node, history_part, None, b"") if not history_part.empty else b""
            else:
                heads, message, history = _parse_merge_payload_history(node.payload)
                if node.chunks:
                    raise DecodeError("a type-2 merge payload names no chunks")
        except DecodeError as e:
            return [OperationUnreadable(ref.cid, f"malformed merge payload: {e}")]
        except RemoteInputError as e:
            return [OperationUnreadable(ref.cid, f"{type(e).__name__}: {e}")]
        if ref.node.epoch != _merge_epoch_field(heads):
            return [OperationUnreadable(ref.cid, "merge node's epoch field does not match its parents")]
        known = [h for h in heads if h in self._states]
        if not known:
            return [OperationUnreadable(ref.cid, "not a member of any merged epoch")]
        mine = [self._states[h] for h in heads if h in self._states and self._states[h].active]
        joined = len(mine) != len(heads)
        pinned = joined
        try:
            if not joined:
                parents = [ParentEpoch.of(h, self._states[h]) for h in heads]
                try:
                    # S(heads) of the merge commit's causal past, from the merge engine (docs/merge.md 6.4)
                    membership = self._dag.state((*ref.parents, *((ref.prev,) if ref.prev else ()))).membership
                except InvalidState:
                    # history this replica cannot read (it joined concurrent merges from their
                    # Welcomes: two pinned roots): try the parents' own states, checked below by
                    # the committer's signed base tree hash; the epoch is then pinned
                    membership = self._pinned_parents_membership(heads)
                    pinned = True
                try:
                    group = process_merge_commit(
                        parents, membership, message, base=self._base_epoch, own_states=self._own_states()
                    )
                except MissingBaseError as e:
                    # the merge names a base this replica never held (it joined after it): the
                    # committer sent it a merge Welcome (docs/merge.md 6.5); a member of every
                    # parent that pruned the base has none, which is not a removal
                    try:
                        group = join_merge(message, self._own_states() or mine)
                    except WelcomeError:
                        return [OperationUnreadable(ref.cid, f"MissingBaseError: {e}")]
            else:
                others = [g for g in self._states.values() if g.active]
                group = join_merge(message, others or mine)
            rec = merge_record(ref.cid, ref.author, ref.seq, ref.prev, ref.parents, heads, group.tree)
        except WelcomeError:
            # we are in some branch but the merged group holds no leaf for us: removed by the merge
            if not mine and not any(g.active for g in self._states.values()):
                return [OperationUnreadable(ref.cid, "not a member of any merged epoch")]
            self._removed = True
            self._ack_due = True
            return [Removed(max(g.epoch for g in self._states.values()) + 1, ref.cid, "merge")]
        except (RemoteInputError, InvalidState, InvalidArgument) as e:
            return [OperationUnreadable(ref.cid, f"{type(e).__name__}: {e}")]
        refused: str | None = "no history"
        if joined and history:
            # joined from the merge Welcome: install the merge's history (docs/merge.md 4.2), so
            # this replica computes every later S like those who read everything
            try:
                opened = open_history(group, history, ref.author)
            except RemoteInputError as e:
                refused = f"{type(e).__name__}: {e}"
            else:
                refused = self._dag_try(
                    _dag_entry(_DAG_JOINED, rec, membership_from_tree(group.tree, ref.cid), history=opened)
                )
        if refused is None:
            pass
        elif pinned:  # the merged epoch is pinned from the merge Welcome (docs/merge.md 4.1)
            refused = self._dag_try(_dag_entry(_DAG_ROOT, rec, membership_from_tree(group.tree, ref.cid)))
        else:
            refused = self._dag_try(_dag_entry(_DAG_ADD, rec))
        if refused is not None:
            return [OperationUnreadable(ref.cid, refused)]
        by_key = ref.author
        by = next((_name_of(lf) for _, lf in group.members() if lf.signature_key == by_key), "?")
        before = self._states.get(self._current) or group
        self._add_epoch(ref.cid, group, heads, ref.author)
        events = self._merge_events(before, group, ref.cid, heads, by)
        if joined or self._removed or self._current in heads or self._current not in self._epoch_heads:
            self._current = ref.cid
            self._removed = False
        if len(self._epoch_heads) > 1:
            # a concurrent merge (or commit): stay on our head; the merges are merged in turn
            events.append(MergeNeeded(self.epoch_heads()))
        self._prune()
        return events

    def _pinned_parents_membership(self, heads: Sequence[bytes]) -> Membership:
        """A candidate S(heads) when the engine cannot replay the heads' past: the state of the
        first head in the engine's order with the changes of the other heads' commits applied
        (exact for a race of merges over the same heads, whose only changes are their
        committers' leaves).  Only a candidate: `process_merge_commit` accepts it only if it
        gives the committer's signed base tree hash (`TreeError` otherwise)."""
        order = sorted(heads, key=self._dag.rank)
        membership = self._dag.state({order[0]}).membership
        for h in order[1:]:
            self._dag.state({h})  # each head's own state must be known
            membership = apply_commit(membership, self._dag.record(h))
        return membership

    def _commit_events(self, before: Group, after: Group, cid: bytes, by: str) -> list[Event]:
        events: list[Event] = []
        old, new = _leaf_maps(before.tree, after.tree)
        for key, (i, lf) in sorted(old.items(), key=lambda kv: kv[1][0]):
            if key not in new:
                events.append(MemberRemoved(after.epoch, i, _name_of(lf)))
        for key, (i, lf) in sorted(new.items(), key=lambda kv: kv[1][0]):
            if key not in old:
                events.append(MemberAdded(after.epoch, i, _name_of(lf)))
        events.append(EpochChanged(after.epoch, cid, by))
        return events

    def _apply(self, ref: NodeRef) -> list[Event]:
        """Apply one causally delivered node; the merge engine gets it either way (what this
        replica cannot read as an opaque node, docs/merge.md 4.1)."""
        events = self._apply_node(ref)
        if ref.cid not in self._dag:
            self._dag_opaque(ref)
        return events

    def _apply_node(self, ref: NodeRef) -> list[Event]:
        """Apply one causally delivered node of another member."""
        self._advance_heads(ref)
        node = ref.node
        if ref.author == self.signature_key:
            return []  # our own node restored from the store or echoed back by a peer
        if node.kind == NodeKind.GENESIS:
            return []
        state = self._states.get(node.epoch)
        if node.kind == NodeKind.COMMIT:
            if node.payload[:1] in (bytes([_PAYLOAD_MERGE]), bytes([_PAYLOAD_MERGE_PARTS])):
                return self._apply_merge(ref)
            parts: _Parts | None = None
            try:
                if node.payload[:1] == bytes([_PAYLOAD_PARTS]):
                    parts = _Parts.decode(node.payload, len(node.chunks))
                    commit, welcome, sealed = b"", b"", parts.sealed_evictions
                else:
                    commit, welcome, sealed = _parse_commit_payload(node.payload)
                    if node.chunks:
                        raise DecodeError("a type-1 commit payload names no chunks")
            except DecodeError as e:
                return [OperationUnreadable(ref.cid, f"malformed commit payload: {e}")]
            if state is None:
                return self._try_join(ref, welcome, parts)
            if not state.active:
                return [OperationUnreadable(ref.cid, "not a member of the commit's epoch")]
            try:
                if parts is not None:
                    key = _part_key(state, b"commit", parts.salt) if parts.commit.count else None
                    commit = self._part_bytes(node, parts.commit, key, b"commit")
                after, event = state.process(commit)
            except RemoteInputError as e:
                return [OperationUnreadable(ref.cid, f"{type(e).__name__}: {e}")]
            if not isinstance(event, CommitApplied):
                return [OperationUnreadable(ref.cid, "commit node does not carry a commit")]
            sender_leaf = state.tree.leaf(event.sender.index or 0)
            if sender_leaf is None or sender_leaf.signature_key != ref.author:
                return [OperationUnreadable(ref.cid, "the commit's MLS sender is not the node's author")]
            by = _name_of(sender_leaf)
            # a commit that removes this member is readable too: its public state after (tree,
            # GroupContext) is known, so the engine gets its record and the epoch can be a
            # foreign parent of a merge (docs/merge.md 4.1: healing a mutual eviction)
            try:
                evicted = _open_evictions(state, commit, sealed)
                rec = _commit_record(ref, (node.epoch,), state.tree, after.tree, evicted=evicted)
            except (RemoteInputError, InvalidArgument) as e:
                return [OperationUnreadable(ref.cid, f"{type(e).__name__}: {e}")]
            refused = self._dag_try(_dag_entry(_DAG_ADD, rec))
            if refused is not None:
                return [OperationUnreadable(ref.cid, refused)]
            return self._after_commit(ref, state, after, by)
        if node.kind == NodeKind.APPLICATION:
            if state is None or not state.active:
                return [OperationUnreadable(ref.cid, "not a member of the message's epoch")]
            try:
                after, event = state.process(node.payload)
            except RemoteInputError as e:
                return [OperationUnreadable(ref.cid, f"{type(e).__name__}: {e}")]
            if not isinstance(event, ApplicationMessage):
                return [OperationUnreadable(ref.cid, "application node does not carry application data")]
            leaf = state.tree.leaf(event.sender)
            if leaf is None or leaf.signature_key != ref.author:
                return [OperationUnreadable(ref.cid, "the message's MLS sender is not the node's author")]
            refused = self._dag_try(_dag_entry(_DAG_ADD, _node_record(ref, (node.epoch,), None)))
            if refused is not None:
                return [OperationUnreadable(ref.cid, refused)]
            self._states[node.epoch] = after
            return [MessageReceived(state.epoch, event.sender, _name_of(leaf), event.data, ref.cid)]
        return []

    def _after_commit(self, ref: NodeRef, state: Group, after: Group, by: str) -> list[Event]:
        """Install a processed remote commit's epoch; report it, or the fork it makes."""
        epoch = ref.node.epoch
        self._add_epoch(ref.cid, after, (epoch,), ref.author)
        events: list[Event] = []
        if epoch == self._current:
            self._current = ref.cid
            if after.active:
                events = self._commit_events(state, after, ref.cid, by)
            else:
                self._removed = True
                self._ack_due = True
                events = [Removed(state.epoch + 1, ref.cid, by)]
        if len(self._epoch_heads) > 1:
            events.append(MergeNeeded(self.epoch_heads()))
            if self._current not in self._epoch_heads:
                self._current = min(self._epoch_heads)
        self._prune()
        return events

    def _try_join(self, ref: NodeRef, welcome: bytes, parts: _Parts | None = None) -> list[Event]:
        """Join from the commit's Welcome (RFC 9420 section 12.4.3.1), with the ratchet tree
        from the sealed tree part when the Welcome does not carry it (section 12.4.3.3)."""
        if self._current or not self._pending_kps:
            return [OperationUnreadable(ref.cid, "not a member of the commit's epoch")]
        if parts is not None:
            if parts.welcome.empty:
                return [OperationUnreadable(ref.cid, "not a member of the commit's epoch")]
            try:
                welcome = self._part_bytes(ref.node, parts.welcome, None, b"")
            except RemoteInputError as e:
                return [OperationUnreadable(ref.cid, f"{type(e).__name__}: {e}")]
        if not welcome:
            return [OperationUnreadable(ref.cid, "not a member of the commit's epoch")]
        for kp in self._pending_kps:
            try:
                if parts is not None and not parts.tree.empty:
                    tree = self._welcome_tree(ref.node, parts, welcome, kp)
                    group = Group.join_from_welcome(welcome, kp, ratchet_tree=tree)
                else:
                    group = Group.join_from_welcome(welcome, kp)
            except RemoteInputError:
                continue
            root = _dag_entry(
                _DAG_ROOT, _node_record(ref, (ref.node.epoch,), ()), membership_from_tree(group.tree, ref.cid)
            )
            refused = self._dag_try(root)
            if refused is not None:
                return [OperationUnreadable(ref.cid, refused)]
            self._pending_kps = [k for k in self._pending_kps if k is not kp]
            self._tag = ref.node.group
            self._epoch_heads = set()
            self._add_epoch(ref.cid, group, (), ref.author)
            self._current = ref.cid
            return [Joined(group.epoch, ref.cid, tuple(n for _, n in self.members()))]
        return [OperationUnreadable(ref.cid, "the commit's Welcome is not for this member")]

    def _welcome_tree(self, node: OpNode, parts: _Parts, welcome: bytes, kp: KeyPackagePrivate) -> bytes:
        """The sealed ratchet tree of a commit, for a joiner: its key is the new epoch's
        exporter, derived from the Welcome before joining (RFC 9420 sections 8, 8.5, 12.4.3.1:
        GroupSecrets, GroupInfo, key schedule from the joiner secret; no PSKs)."""
        w = _welcome_of(welcome)
        secrets = open_group_secrets(w, kp)
        if secrets.psks:
            raise WelcomeError("a Welcome with PSKs cannot carry its tree outside (not used by the replica)")
        suite = kp.suite
        zero = bytes(suite.hash_length)
        gi = decrypt_group_info(suite, w, secrets.joiner_secret, zero)
        es = epoch_secrets_from_joiner(suite, secrets.joiner_secret, gi.group_context, zero)
        key = es.exporter(_PART_LABEL, b"tree" + parts.salt, CHUNK_KEY_SIZE)
        return self._part_bytes(node, parts.tree, key, b"tree")

    def _prune(self) -> None:
        """Keep the current epoch, the epoch heads and the latest ``max_epochs`` others; of the
        epochs dropped, keep the public ratchet tree (they can still be the base of a merge:
        the latest cut of a later fork, docs/merge.md 5) for the latest ``max_public_trees``."""
        keep = set(self._epoch_heads) | {self._current}
        others = [e for e in self._epoch_order if e not in keep]
        drop = set(others[: max(0, len(others) - self.max_epochs)])
        if drop:
            order = [e for e in self._epoch_order if e in drop]
            self._epoch_order = [e for e in self._epoch_order if e not in drop]
            for e in order:
                g = self._states.pop(e, None)
                self._epoch_meta.pop(e, None)
                if g is not None and self.max_public_trees:
                    self._public[e] = g.tree
        while len(self._public) > self.max_public_trees:
            del self._public[next(iter(self._public))]

    def epoch_tree(self, epoch_id: bytes) -> RatchetTree | None:
        """The public ratchet tree of a kept epoch (with its secrets, or only its tree): what a
        merge needs of its base epoch (docs/merge.md 5).  ``None`` if not kept."""
        g = self._states.get(epoch_id)
        return g.tree if g is not None else self._public.get(epoch_id)

    # ------------------------------------------------------------------ persistence

    _SNAPSHOT_SLOTS = (
        "_pending_kps",
        "_tag",
        "_states",
        "_epoch_order",
        "_current",
        "_epoch_heads",
        "_node_heads",
        "_seq",
        "_prev",
        "_removed",
        "_epoch_meta",
        "_outgoing",
        "_parent_heads",
        "_dag_saved",
        "_new_blocks",
        "_public",
        "_ack_due",
    )

    def _snapshot(self) -> _Snapshot:
        """Shallow copies of the containers (`Group` states are immutable values), a
        transaction on the causal receiver (it is mutable; rolled back by journal, not by
        copying its history) and the merge log's length, to roll back a failed call."""
        values = tuple(copy.copy(getattr(self, slot)) for slot in self._SNAPSHOT_SLOTS)
        self._receiver.begin()
        return values, (self._dag, self._dag_entries, len(self._dag_entries))

    def _restore(self, snapshot: _Snapshot) -> None:
        values, (dag, entries, n) = snapshot
        for slot, value in zip(self._SNAPSHOT_SLOTS, values, strict=True):
            setattr(self, slot, value)
        self._receiver.rollback()
        changed = dag is not self._dag or entries is not self._dag_entries or len(entries) != n
        self._dag, self._dag_entries = dag, entries
        if changed:  # the DAG is mutable: rebuild it from the log as it was
            del entries[n:]
            self._rebuild_dag()

    # ------------------------------------------------------------------ state at rest
    #
    # Layout (docs/api.md "State at rest"), every value sealed with the state key if given:
    #   <ns>/state             header: identity, key packages, epochs, heads, log cursors (small)
    #   <ns>/epoch/<id>        one kept epoch: its tree's (width, root chunk id) and its `Group`
    #                          without the tree (secrets, secret tree): rewritten when it changed
    #   <ns>/tree/<chunk id>   a chunk of a ratchet tree (crdt_mls.stores.treechunks), shared by
    #                          every kept tree that has it; written once, deleted when unused
    #   <ns>/dag/<i>           the merge engine's input log, one entry per delivered operation
    #   <ns>/recv/<i>          journal of the causal receiver: the CIDs delivered by one call
    #   <ns>/recv/ck           receiver checkpoint (delivered set, member logs) at journal index
    #   <ns>/recv/wait         the operations waiting in the causal buffer
    # So a call writes its new blocks, the header, the epochs whose `Group` changed (an
    # application message: one small secret part), the chunks of new trees that no kept tree
    # has (a commit: the chunks on its path) and its log entries, in one atomic batch.

    def _epoch_key(self, epoch_id: bytes) -> str:
        return f"{self.namespace}/epoch/{epoch_id.hex()}"

    def _ptree_key(self, epoch_id: bytes) -> str:
        return f"{self.namespace}/ptree/{epoch_id.hex()}"

    def _chunk_key_name(self, cid: bytes) -> str:
        return f"{self.namespace}/tree/{cid.hex()}"

    def _recv_key(self, index: int) -> str:
        return f"{self.namespace}/recv/{index:08d}"

    def _dag_key(self, index: int) -> str:
        return f"{self.namespace}/dag/{index:08d}"

    def _chunk_id(self, data: bytes) -> bytes:
        """Id of a tree chunk: SHA-256, or an HMAC under a key derived from the state key
        (so the store's key names reveal nothing about the tree)."""
        if self._state_key is None:
            return sha256_id(data)
        return hmac.new(self._chunk_id_key, data, hashlib.sha256).digest()

    def _tree_base(
        self, trees: dict[bytes, tuple[RatchetTree, TreeRef]], epoch: bytes, tree: RatchetTree
    ) -> tuple[RatchetTree, TreeRef] | None:
        """A saved tree the new one was derived from (its parent epoch's, else the current
        one's, else any), so that only the changed chunks are computed."""
        parents, _ = self._epoch_meta.get(epoch, ((), b""))
        for e in (*parents, self._current, *trees):
            saved = trees.get(e)
            if saved is not None and saved[0].width == tree.width:
                return saved
        return None

    def _save(self, refs: Sequence[NodeRef]) -> None:
        """One atomic batch: new blocks, header, changed epochs, new tree chunks, new log
        entries, chunks no kept tree uses deleted.  The bookkeeping is swapped in only after
        the batch is written."""
        blocks = [*self._new_blocks, *((r.cid, encode_node(r.node)[1]) for r in refs)]
        meta: dict[str, bytes | None] = {}
        trees = dict(self._trees)
        rc = self._chunk_rc
        rc_changed = False
        holders: dict[bytes, RatchetTree] = {e: g.tree for e, g in self._states.items()}
        for e, t in self._public.items():
            holders.setdefault(e, t)
        for e, tree in holders.items():
            saved = trees.get(e)
            if saved is not None and saved[0] is tree:
                continue
            if not rc_changed:
                rc, rc_changed = dict(rc), True
            ref, chunks = chunk_tree(tree, self._chunk_id, self._tree_base(trees, e, tree))
            for cid in ref.chunk_ids():
                n = rc.get(cid, 0)
                if n == 0:
                    data = chunks.get(cid)
                    if data is None:  # pragma: no cover - invariant: a fresh id was just computed
                        raise InvalidState("a tree chunk is neither stored nor computed")
                    meta[self._chunk_key_name(cid)] = data
                rc[cid] = n + 1
            if saved is not None:
                self._release(rc, saved[1], meta)
            trees[e] = (tree, ref)
        for e in list(trees):
            if e not in holders:
                if not rc_changed:
                    rc, rc_changed = dict(rc), True
                self._release(rc, trees.pop(e)[1], meta)
        for e, g in self._states.items():
            if self._saved.get(e) is not g:
                meta[self._epoch_key(e)] = _encode_epoch(trees[e][1], g)
        for e in self._saved:
            if e not in self._states:
                meta[self._epoch_key(e)] = None
        public = {e for e in self._public if e not in self._states}
        for e in public - self._saved_public:
            w = Writer()
            w.u32(trees[e][1].width)
            w.opaque(trees[e][1].root)
            meta[self._ptree_key(e)] = w.getvalue()
        for e in self._saved_public - public:
            meta[self._ptree_key(e)] = None
        dag_ck = self._dag_checkpoint()
        if dag_ck is not None:
            for i in range(self._dag_saved):
                meta[self._dag_key(self._dag_start + i)] = None
            meta[f"{self.namespace}/dag/ck"] = dag_ck[0]
        else:
            for i in range(self._dag_saved, len(self._dag_entries)):
                meta[self._dag_key(self._dag_start + i)] = self._dag_entries[i]
        recv = self._save_receiver(meta)
        end = self._dag_start + len(self._dag_entries)
        meta[f"{self.namespace}/state"] = self._encode(
            recv, (end, end) if dag_ck is not None else (self._dag_start, end)
        )
        if self._state_key is not None:
            meta = {k: None if v is None else seal_meta(self._state_key, k, v) for k, v in meta.items()}
        self.store.write_batch(blocks, meta)
        self._receiver.commit()
        self._recv_ck, self._recv_end, self._recv_since_ck, self._recv_ck_size, self._wait_saved = recv
        self._saved = dict(self._states)
        self._saved_public = public
        self._trees, self._chunk_rc = trees, rc
        if dag_ck is not None:
            self._dag_ck, self._dag, self._dag_ck_kept = dag_ck
            self._dag_start += len(self._dag_entries)
            self._dag_entries = []
            self._dag_ck_tried = 0
        self._dag_saved = len(self._dag_entries)
        self._new_blocks = []
        self._recv_force_ck = False

    def _dag_checkpoint(self) -> tuple[bytes, GroupDag, int] | None:
        """A new checkpoint of the merge engine, when the log since the last one has grown past
        ``_DAG_CK_MIN`` entries and past the size of that checkpoint (O(1) amortized per entry),
        and the engine has a cut every author has passed (docs/api.md "Merge log truncation").
        Returns (saved bytes, the truncated engine, nodes kept)."""
        n, low = len(self._dag_entries), self.dag_checkpoint_min
        if n < max(low, self._dag_ck_kept) or n - self._dag_ck_tried < low // 2:
            return None
        self._dag_ck_tried = n
        cut = self._dag.truncation_cut()
        if cut is None or cut == self._dag_cut():
            return None
        w = Writer()
        w.opaque(cut)
        w.opaque(self._dag.checkpoint(cut))
        w.vector(sorted(self._parent_heads), _w_opaque)
        data = w.getvalue()
        dag, _ = _open_dag_checkpoint(data)
        return data, dag, dag.node_count()

    def _dag_cut(self) -> bytes | None:
        return Reader(self._dag_ck).opaque() if self._dag_ck else None

    def _release(self, rc: dict[bytes, int], ref: TreeRef, meta: dict[str, bytes | None]) -> None:
        for cid in ref.chunk_ids():
            n = rc[cid] - 1
            if n:
                rc[cid] = n
            else:
                del rc[cid]
                meta[self._chunk_key_name(cid)] = None

    def _save_receiver(self, meta: dict[str, bytes | None]) -> tuple[int, int, int, int, bytes]:
        """Journal the deliveries of this call (or write a new checkpoint when the journal has
        grown past the checkpoint's own size, so rewriting it costs O(1) per delivery
        amortized); the waiting operations when they changed.  Returns the new cursors."""
        ck, end, since, ck_size, wait_saved = (
            self._recv_ck,
            self._recv_end,
            self._recv_since_ck,
            self._recv_ck_size,
            self._wait_saved,
        )
        delivered = self._receiver.journal()
        if delivered or self._recv_force_ck:
            since += len(delivered)
            if self._recv_force_ck or since > max(_RECV_CK_MIN, ck_size):
                meta[f"{self.namespace}/recv/ck"] = self._receiver.checkpoint_bytes(encode_ref)
                for i in range(ck, end):
                    meta[self._recv_key(i)] = None
                ck = end
                since, ck_size = 0, self._receiver.buffer.delivered_count
            else:
                w = Writer()
                w.vector(delivered, _w_opaque)
                meta[self._recv_key(end)] = w.getvalue()
                end += 1
        waiting = self._receiver.buffer.waiting_to_bytes(encode_ref)
        if waiting != wait_saved:
            meta[f"{self.namespace}/recv/wait"] = waiting
        return ck, end, since, ck_size, waiting

    def _encode(self, recv: tuple[int, int, int, int, bytes], dag: tuple[int, int]) -> bytes:
        """The replica header (contains the signature key: the store's meta table must be
        private or sealed)."""
        w = Writer()
        w.u8(_STATE_VERSION)
        w.opaque(self.name.encode("utf-8"))
        w.u16(self.cipher_suite)
        w.u32(self.max_epochs)
        w.opaque(self._signature_priv)
        w.vector(self._pending_kps, lambda ww, kp: ww.opaque(_encode_kp(kp)))
        w.opaque(self._tag)
        w.vector(self._epoch_order, _w_opaque)
        w.opaque(self._current)
        w.vector(sorted(self._epoch_heads), _w_opaque)
        w.vector(sorted(self._node_heads), _w_opaque)
        w.u64(self._seq)
        w.optional(self._prev, _w_opaque)
        w.boolean(self._removed)
        w.vector(self._epoch_order, self._w_epoch_meta)
        w.vector([e for e in self._public if e not in self._states], _w_opaque)
        w.u64(dag[0])
        w.u64(dag[1])
        ck, end, since, ck_size, _ = recv
        w.u64(ck)
        w.u64(end)
        w.u64(since)
        w.u64(ck_size)
        return w.getvalue()

    def _w_epoch_meta(self, w: Writer, epoch_id: bytes) -> None:
        parents, author = self._epoch_meta.get(epoch_id, ((), b""))
        w.opaque(epoch_id)
        w.vector(parents, _w_opaque)
        w.opaque(author)

    def _meta(self, key: str) -> bytes | None:
        return _unseal(self._state_key, key, self.store.get_meta(key))

    @classmethod
    def _decode(cls, data: bytes, store: Store, namespace: str, rng: Rng, state_key: bytes | None = None) -> Replica:
        r = Reader(data)
        version = r.u8()
        if version not in (_STATE_VERSION, _STATE_VERSION_V3):
            raise DecodeError(f"unsupported replica state version {version}")
        name = r.opaque().decode("utf-8")
        suite = r.u16()
        max_epochs = r.u32()
        sig = r.opaque()
        rep = cls(
            name,
            store,
            cipher_suite=suite,
            namespace=namespace,
            max_epochs=max_epochs,
            rng=rng,
            _signature_priv=sig,
            state_key=state_key,
        )
        rep._pending_kps = r.vector(lambda rr: _decode_kp(rr.opaque()))
        rep._tag = r.opaque()
        rep._epoch_order = r.vector(lambda rr: rr.opaque())
        rep._current = r.opaque()
        rep._epoch_heads = set(r.vector(lambda rr: rr.opaque()))
        rep._node_heads = set(r.vector(lambda rr: rr.opaque()))
        rep._seq = r.u64()
        rep._prev = r.optional(lambda rr: rr.opaque())
        if version == _STATE_VERSION_V3:
            receiver_bytes = r.opaque()
        rep._removed = r.boolean()
        for e, parents, author in r.vector(_r_epoch_meta):
            rep._epoch_meta[e] = (parents, author)
        if version == _STATE_VERSION_V3:
            dag_start, dag_end = 0, r.u64()
            r.finish()
            rep._receiver = CausalReceiver.from_bytes(receiver_bytes, decode_ref, size_of=_ref_size)
            rep._receiver.buffer.gate = rep._needs
            for e in rep._epoch_order:
                raw = rep._meta(rep._epoch_key(e))
                if raw is None:
                    raise DecodeError("an epoch state named by the replica state is missing")
                rep._states[e] = Group.from_bytes(raw)
            rep._recv_force_ck = True  # the next save writes the version-4 layout
        else:
            public = r.vector(lambda rr: rr.opaque())
            dag_start, dag_end = r.u64(), r.u64()
            ck, end, since, ck_size = r.u64(), r.u64(), r.u64(), r.u64()
            r.finish()
            rep._load_epochs(public)
            rep._load_receiver(ck, end)
            rep._recv_ck, rep._recv_end, rep._recv_since_ck, rep._recv_ck_size = ck, end, since, ck_size
            rep._saved = dict(rep._states)
        if dag_start > dag_end:
            raise DecodeError("the merge log cursors are inconsistent")
        rep._dag_start = dag_start
        ck_raw = rep._meta(f"{namespace}/dag/ck")
        if ck_raw is not None:
            rep._dag_ck = ck_raw
        elif dag_start:
            raise DecodeError("the merge log was truncated but its checkpoint is missing")
        for i in range(dag_start, dag_end):
            entry = rep._meta(rep._dag_key(i))
            if entry is None:
                raise DecodeError("an entry of the merge log is missing")
            rep._dag_entries.append(entry)
        try:
            rep._rebuild_dag()
            if rep._dag_ck:
                rep._dag_ck_kept = _open_dag_checkpoint(rep._dag_ck)[0].node_count()
        except CrdtMlsError as e:
            raise DecodeError(f"the merge log does not replay: {type(e).__name__}") from None
        rep._dag_saved = len(rep._dag_entries)
        return rep

    def _load_epochs(self, public: Sequence[bytes] = ()) -> None:
        """Every kept epoch: its tree from the shared chunks (decoded once each; a tree that
        differs from an earlier loaded one in a few chunks is that tree with those nodes set,
        so they share structure), its secrets; then the public trees of dropped epochs."""
        cache: dict[bytes, tuple[list[Node | None], list[bytes]]] = {}
        suite = get_cipher_suite(self.cipher_suite)
        rc: dict[bytes, int] = {}

        def get(c: bytes) -> bytes | None:
            return self._meta(self._chunk_key_name(c))

        def tree_at(width: int, root: bytes) -> tuple[RatchetTree, TreeRef]:
            for other, ref in self._trees.values():
                if ref.width == width and ref.root == root:
                    return other, ref
            tree, ref = load_tree(suite, width, root, get, self._chunk_id, cache)
            base = next((t for t in self._trees.values() if t[1].width == width), None)
            if base is None:
                return tree, ref
            shared = base[0].copy()
            for x in chunk_difference(base[1], ref):
                v = tree.node(x)
                if v is not shared.node(x):
                    shared.set_node(x, v)
            return shared, ref

        for e in self._epoch_order:
            raw = self._meta(self._epoch_key(e))
            if raw is None:
                raise DecodeError("an epoch state named by the replica state is missing")
            width, root, part = _decode_epoch(raw)
            tree, ref = tree_at(width, root)
            self._states[e] = _with_tree(Group.from_bytes(part), tree)
            self._trees[e] = (tree, ref)
        for e in public:
            raw = self._meta(self._ptree_key(e))
            if raw is None:
                raise DecodeError("a public tree named by the replica state is missing")
            pr = Reader(raw)
            width, root = pr.u32(), pr.opaque()
            pr.finish()
            tree, ref = tree_at(width, root)
            self._public[e] = tree
            self._trees[e] = (tree, ref)
        for _, ref in self._trees.values():
            for c in ref.chunk_ids():
                rc[c] = rc.get(c, 0) + 1
        self._chunk_rc = rc
        self._saved_public = set(public)

    def _load_receiver(self, ck: int, end: int) -> None:
        """Checkpoint, then the journal of deliveries replayed (blocks read from the store),
        then the waiting operations."""
        if ck > end:
            raise DecodeError("the receiver journal cursors are inconsistent")
        raw = self._meta(f"{self.namespace}/recv/ck")
        rec: CausalReceiver[NodeRef] = (
            CausalReceiver(CausalBuffer(size_of=_ref_size))
            if raw is None
            else CausalReceiver.from_bytes(raw, decode_ref, size_of=_ref_size)
        )
        for i in range(ck, end):
            entry = self._meta(self._recv_key(i))
            if entry is None:
                raise DecodeError("an entry of the receiver journal is missing")
            er = Reader(entry)
            cids = er.vector(lambda rr: rr.opaque())
            er.finish()
            for cid in cids:
                block = self.store.get_block(cid)
                if block is None:
                    raise DecodeError("a delivered operation's block is missing from the store")
                rec.replay(NodeRef.from_block(cid, block, verify=False))
        waiting = self._meta(f"{self.namespace}/recv/wait")
        if waiting is not None:
            rec.buffer.restore_waiting(waiting, decode_ref)
            self._wait_saved = waiting
        rec.buffer.gate = self._needs
        self._receiver = rec


def describe(event: Event) -> str:
    """One readable line for an event (used by the CLI and the demo)."""
    if isinstance(event, MemberAdded):
        return f"{event.name} was added (leaf {event.leaf}, epoch {event.epoch})"
    if isinstance(event, MemberRemoved):
        return f"{event.name} was removed (leaf {event.leaf}, epoch {event.epoch})"
    if isinstance(event, EpochChanged):
        return f"epoch {event.epoch} ({_short(event.epoch_id)}) committed by {event.by}"
    if isinstance(event, MessageReceived):
        return f"[epoch {event.epoch}] {event.sender}: {event.data.decode('utf-8', 'replace')}"
    if isinstance(event, Joined):
        return f"joined at epoch {event.epoch} with {', '.join(event.members)}"
    if isinstance(event, Removed):
        return f"removed from the group by {event.by} at epoch {event.epoch}"
    if isinstance(event, MergeMade):
        return (
            f"merge of {len(event.parents)} branches by {event.by}: epoch {event.epoch} "
            f"({_short(event.epoch_id)}) with {', '.join(event.members)}"
        )
    if isinstance(event, MergeNeeded):
        return f"concurrent commits: {len(event.heads)} epoch heads, a merge is needed"
    if isinstance(event, OperationWaiting):
        return f"{len(event.missing)} operation(s) wait for missing parents"
    if isinstance(event, OperationUnreadable):
        return f"operation {_short(event.cid)} unreadable: {event.reason}"
    return f"operation {_short(event.cid)} refused: {event.reason}"
