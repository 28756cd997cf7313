"""The ratchet tree (RFC 9420 sections 4 and 7).

`RatchetTree` is an array-based tree (appendix C) whose width is always ``2^(d+1) - 1``
nodes.  Blank nodes are ``None``; leaves hold `LeafNode`, parents `ParentNode` (the wire
structs of `crdt_mls.mls.messages`).

Performance: every node's tree hash and resolution is cached and a change to node ``x``
invalidates only ``x`` and its ancestors, so re-hashing the tree after a path update costs
O(log n) hash computations.  The node array, both caches, the encryption-key index and the
leaf summary are persistent copy-on-write structures (`crdt_mls.mls.persistent`): `copy()`
shares them and a change copies one chunk of 256 references (or one bucket) per structure,
so deriving a tree and changing a direct path costs O(log n) work, never an O(n) copy.
`diff` lists the nodes two trees derived from each other hold differently, skipping shared
chunks.

The tree is a mutable working object: callers that process remote input take a `copy()`,
mutate it and swap it in only on success (see `crdt_mls.mls.treekem`).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from crdt_mls.errors import DecodeError, InvalidArgument, OversizeError, ProposalError, SignatureError, TreeError
from crdt_mls.mls import treemath
from crdt_mls.mls.codec import Reader, encode_varint
from crdt_mls.mls.messages import (
    Add,
    LeafNode,
    LeafNodeSource,
    Node,
    ParentNode,
    Proposal,
    Remove,
    RequiredCapabilities,
    Update,
    encode_ratchet_tree,
    read_ratchet_tree,
)
from crdt_mls.mls.persistent import PMap, PVec

if TYPE_CHECKING:
    from crdt_mls.mls.suites import CipherSuite

__all__ = [
    "MAX_LEAVES",
    "NodeValue",
    "RatchetTree",
    "apply_proposal",
    "direct_path",
    "path_with_siblings",
    "validate_leaf_node",
    "verify_leaf_signature",
]

NodeValue: TypeAlias = LeafNode | ParentNode

#: Largest tree accepted from remote input (leaves).  2^20 leaves covers the 50k-member goal.
MAX_LEAVES = 1 << 20

_EMPTY: tuple[int, ...] = ()


#: `RatchetTree.add_leaves` of at least this many leaves marks the tree's hashes cold.
_COLD_ADDS = 1024


def _check_node_types(
    values: Sequence[NodeValue | None], error: type[Exception], leaf_msg: str, parent_msg: str
) -> None:
    """Every non-blank node at an even index is a LeafNode and at an odd index a ParentNode,
    else ``error`` naming the first bad node (the types are collected at C speed first)."""
    if {type(v) for v in values[0::2]} <= {type(None), LeafNode} and {type(v) for v in values[1::2]} <= {
        type(None),
        ParentNode,
    }:
        return
    for i, v in enumerate(values):
        if v is None:
            continue
        if i % 2 == 0 and not isinstance(v, LeafNode):
            raise error(leaf_msg.format(i=i))
        if i % 2 == 1 and not isinstance(v, ParentNode):
            raise error(parent_msg.format(i=i))


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _level(x: int) -> int:
    """Level of node ``x`` (number of trailing one bits)."""
    return (~x & (x + 1)).bit_length() - 1


def _children(x: int) -> tuple[int, int]:
    """Left and right child of parent node ``x`` (appendix C)."""
    k = _level(x) - 1
    return x ^ (1 << k), x ^ (3 << k)


def direct_path(x: int, n_leaves: int) -> list[int]:
    """Direct path of ``x`` in a full tree of ``n_leaves`` (a power of two) leaves (section 4.1).

    Same result as `treemath.direct_path`, computed with bit operations only.
    """
    root = n_leaves - 1
    out: list[int] = []
    k = _level(x)
    while x != root:
        x = x - (1 << k) if (x >> (k + 1)) & 1 else x + (1 << k)
        k += 1
        out.append(x)
    return out


def path_with_siblings(x: int, n_leaves: int) -> list[tuple[int, int]]:
    """``(parent, sibling of the child on the path)`` for every node on the direct path of ``x``."""
    root = n_leaves - 1
    out: list[tuple[int, int]] = []
    k = _level(x)
    while x != root:
        bit = 1 << (k + 1)
        sib = x ^ bit
        x = x - (1 << k) if x & bit else x + (1 << k)
        k += 1
        out.append((x, sib))
    return out


def verify_leaf_signature(suite: CipherSuite, leaf: LeafNode, group_id: bytes, leaf_index: int) -> None:
    """Verify the LeafNode signature (RFC 9420 section 7.2, 7.3); `SignatureError` if it fails.

    For ``update`` and ``commit`` sources the signed LeafNodeTBS includes ``group_id`` and
    ``leaf_index``; for ``key_package`` it does not.
    """
    tbs = leaf.tbs(group_id, leaf_index)
    try:
        suite.verify_with_label(leaf.signature_key, "LeafNodeTBS", tbs, leaf.signature)
    except SignatureError:
        raise SignatureError(f"LeafNode signature of leaf {leaf_index} does not verify") from None


_K = TypeVar("_K")


def _bump(counts: dict[_K, int], key: _K, delta: int) -> None:
    c = counts.get(key, 0) + delta
    if c:
        counts[key] = c
    else:
        del counts[key]


def _pbump(counts: PMap[bytes, int], key: bytes, delta: int) -> None:
    c = counts.get(key, 0) + delta
    if c:
        counts[key] = c
    else:
        del counts[key]


@dataclass(slots=True)
class _LeafSummary:
    """Signature keys and credential types of all leaves (for `validate_leaf_node`), kept up
    to date leaf by leaf (copy-on-write between tree copies) so that a commit does not
    rescan every leaf.  ``sig_keys`` is persistent, the other two maps hold one entry per
    credential type (a handful), so `clone` costs O(1) in the number of leaves."""

    sig_keys: PMap[bytes, int]
    cred_types: dict[int, int]
    #: credential type -> number of leaves listing it in their capabilities
    support: dict[int, int]
    members: int = 0

    def clone(self) -> _LeafSummary:
        return _LeafSummary(self.sig_keys.copy(), self.cred_types.copy(), self.support.copy(), self.members)

    def change(self, leaf: LeafNode, delta: int) -> None:
        """Count ``leaf`` in (``delta=1``) or out (``delta=-1``)."""
        _pbump(self.sig_keys, leaf.signature_key, delta)
        _bump(self.cred_types, leaf.credential.credential_type, delta)
        for t in set(leaf.capabilities.credentials):
            _bump(self.support, t, delta)
        self.members += delta

    def add_many(self, leaves: Sequence[LeafNode]) -> None:
        """`change` (``delta=1``) of every leaf, the signature keys in one `PMap.update`."""
        sig: dict[bytes, int] = {}
        support_of: dict[int, set[int]] = {}  # per Capabilities object (parsed leaves share them)
        cred, support = self.cred_types, self.support
        for leaf in leaves:
            k = leaf.signature_key
            sig[k] = sig.get(k, 0) + 1
            t = leaf.credential.credential_type
            cred[t] = cred.get(t, 0) + 1
            caps = leaf.capabilities
            types = support_of.get(id(caps))
            if types is None:
                types = support_of[id(caps)] = set(caps.credentials)
            for t in types:
                support[t] = support.get(t, 0) + 1
        self.sig_keys.add_counts(sig)
        self.members += len(leaves)

    def supported(self, credential_type: int) -> bool:
        """Whether every leaf lists ``credential_type`` in its capabilities."""
        return self.members > 0 and self.support.get(credential_type, 0) == self.members


class RatchetTree:
    """An RFC 9420 ratchet tree with cached tree hashes and resolutions (sections 4.1, 7.8)."""

    __slots__ = (
        "_cold",
        "_cold_res",
        "_free_hint",
        "_hashes",
        "_keys",
        "_leaf_summary",
        "_nodes",
        "_owns_summary",
        "_res",
        "_shared",
        "suite",
    )

    suite: CipherSuite
    _nodes: PVec[NodeValue | None]
    _hashes: PVec[bytes | None]
    _res: PVec[tuple[int, ...] | None]
    #: encryption key -> number of nodes holding it; built on first use, then maintained
    _keys: PMap[bytes, int] | None
    #: no blank leaf has an index below this
    _free_hint: int
    #: facts about all leaves for O(1) leaf validation; built on first use, then maintained
    _leaf_summary: _LeafSummary | None
    #: whether ``_leaf_summary`` is this tree's own (not shared with a copy)
    _owns_summary: bool
    #: whether ``_keys`` may be shared with a copy (copied before any change)
    _shared: bool
    #: whether most tree hashes are missing (a new or decoded tree, or one that just got many
    #: leaves): the next root hash is computed bottom up over the whole array (`_hash_all`)
    _cold: bool
    #: the same for the resolutions (`_resolve_all`)
    _cold_res: bool

    def __init__(self, suite: CipherSuite, nodes: Sequence[NodeValue | None] = (None,)) -> None:
        """Build a tree from a full node array (``2^(d+1) - 1`` entries, leaves at even indices)."""
        width = len(nodes)
        if width < 1 or not _is_pow2(width + 1):
            raise InvalidArgument(f"a ratchet tree has 2^(d+1)-1 nodes, not {width}")
        values = list(nodes)
        _check_node_types(values, InvalidArgument, "node {i} must be a leaf node", "node {i} must be a parent node")
        self._init(suite, values)

    def _init(self, suite: CipherSuite, values: list[NodeValue | None]) -> None:
        """`__init__` after its checks (``values`` is the tree's own list from here on)."""
        width = len(values)
        self.suite = suite
        self._nodes = PVec(values)
        self._hashes = PVec.blank(width)
        self._res = PVec.blank(width)
        self._keys = None
        leaves = values[0::2]
        self._free_hint = leaves.index(None) if None in leaves else len(leaves)
        self._leaf_summary = None
        self._owns_summary = False
        self._shared = False
        self._cold = self._cold_res = True

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, suite: CipherSuite, leaf: LeafNode) -> RatchetTree:
        """A one-member tree (RFC 9420 section 11)."""
        return cls(suite, [leaf])

    @classmethod
    def from_wire(cls, suite: CipherSuite, nodes: Sequence[Node | None]) -> RatchetTree:
        """Build from the `ratchet_tree` extension node list (RFC 9420 section 12.4.3.3).

        The last node must be non-blank; the array is extended with blanks to ``2^(d+1) - 1``.
        Raises `DecodeError` on a blank last node or a node of the wrong type for its position.
        """
        k = len(nodes)
        if k == 0:
            raise DecodeError("ratchet tree has no nodes")
        if nodes[-1] is None:
            raise DecodeError("the last node of an encoded ratchet tree must not be blank")
        if k > treemath.node_width(MAX_LEAVES):
            raise OversizeError(f"ratchet tree of {k} nodes exceeds the limit of {MAX_LEAVES} leaves")
        width = 1
        while width < k:
            width = 2 * width + 1
        out: list[NodeValue | None] = list(nodes)
        _check_node_types(
            out,
            DecodeError,
            "node {i} of the ratchet tree is at a leaf position but is not a leaf",
            "node {i} of the ratchet tree is at a parent position but is not a parent",
        )
        out.extend([None] * (width - k))
        t = cls.__new__(cls)
        t._init(suite, out)
        return t

    @classmethod
    def decode(cls, suite: CipherSuite, data: bytes) -> RatchetTree:
        """Decode ``optional<Node> ratchet_tree<V>`` (RFC 9420 section 12.4.3.3)."""
        r = Reader(data)
        nodes = read_ratchet_tree(r)
        r.finish()
        return cls.from_wire(suite, nodes)

    def to_wire(self) -> list[Node | None]:
        """The `ratchet_tree` extension node list, trailing blanks stripped."""
        end = self._nodes.rfind_not_none(len(self._nodes) - 1) + 1
        return list(self._nodes.iter_from(0))[:end]

    def encode(self) -> bytes:
        """Encode as ``optional<Node> ratchet_tree<V>`` (RFC 9420 section 12.4.3.3)."""
        return encode_ratchet_tree(self.to_wire())

    def copy(self) -> RatchetTree:
        """A copy that shares the (immutable) node values, the node array and the caches
        (copy-on-write chunks): O(width / 256) reference copies."""
        t = RatchetTree.__new__(RatchetTree)
        t.suite = self.suite
        t._nodes = self._nodes.copy()
        t._hashes = self._hashes.copy()
        t._res = self._res.copy()
        # the key index is copied (O(1)) on the first change of either tree
        t._keys = self._keys
        t._shared = self._shared = True
        t._free_hint = self._free_hint
        t._leaf_summary = self._leaf_summary
        t._owns_summary = self._owns_summary = False
        t._cold = self._cold
        t._cold_res = self._cold_res
        return t

    # ------------------------------------------------------------------ access

    @property
    def n_leaves(self) -> int:
        return (len(self._nodes) + 1) // 2

    @property
    def width(self) -> int:
        return len(self._nodes)

    @property
    def root(self) -> int:
        return treemath.root(self.n_leaves)

    def node(self, x: int) -> NodeValue | None:
        self._check_node(x)
        return self._nodes.get(x)

    def leaf(self, leaf_index: int) -> LeafNode | None:
        self._check_leaf(leaf_index)
        v = self._nodes.get(2 * leaf_index)
        assert v is None or isinstance(v, LeafNode)
        return v

    def parent_node(self, x: int) -> ParentNode | None:
        self._check_node(x)
        if x % 2 == 0:
            raise InvalidArgument(f"node {x} is a leaf, not a parent")
        v = self._nodes.get(x)
        assert v is None or isinstance(v, ParentNode)
        return v

    def nodes(self) -> Sequence[NodeValue | None]:
        """The full node array as a read-only `Sequence` (a live view: later changes of this
        tree show in it)."""
        return self._nodes

    def members(self) -> Iterator[tuple[int, LeafNode]]:
        """``(leaf_index, LeafNode)`` of every non-blank leaf."""
        for i, v in enumerate(self._nodes.iter_from(0, 2)):
            if v is not None:
                assert isinstance(v, LeafNode)
                yield i, v

    def diff(self, other: RatchetTree) -> list[int]:
        """Ascending indices of the nodes whose values differ between the two trees (a node
        outside one tree's width counts as blank there).

        Trees derived from one another by `copy` share the chunks of 256 nodes that neither
        changed; those are skipped by reference, so the cost is O(width / 256) reference
        comparisons plus O(256) per changed chunk, not O(width) node comparisons.  Values
        are compared with ``==`` (equal nodes built independently count as equal).
        """
        return self._nodes.diff(other._nodes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RatchetTree):
            return NotImplemented
        return self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RatchetTree(n_leaves={self.n_leaves}, members={sum(1 for _ in self.members())})"

    def _check_node(self, x: int) -> None:
        if not 0 <= x < len(self._nodes):
            raise InvalidArgument(f"node index {x} outside a tree of {len(self._nodes)} nodes")

    def _check_leaf(self, leaf_index: int) -> None:
        if not 0 <= leaf_index < self.n_leaves:
            raise InvalidArgument(f"leaf index {leaf_index} outside a tree of {self.n_leaves} leaves")

    # ------------------------------------------------------------------ mutation
    #
    # Every write goes through `_put`, which keeps the encryption-key index and the
    # free-leaf hint in step; callers then `_invalidate` the changed node's path.

    def _own(self) -> None:
        """Take a private (copy-on-write, O(1)) copy of a shared key index before changing it."""
        if self._shared:
            self._keys = None if self._keys is None else self._keys.copy()
            self._shared = False

    def _put(self, x: int, value: NodeValue | None) -> None:
        self._own()
        nodes = self._nodes
        old = nodes.get(x)
        nodes.set(x, value)
        idx = self._keys
        if idx is not None:
            if old is not None:
                k = old.encryption_key
                c = idx[k] - 1
                if c:
                    idx[k] = c
                else:
                    del idx[k]
            if value is not None:
                k = value.encryption_key
                idx[k] = idx.get(k, 0) + 1
        if x % 2 == 0:
            summary = self._leaf_summary
            if summary is not None:
                if not self._owns_summary:
                    summary = self._leaf_summary = summary.clone()
                    self._owns_summary = True
                if isinstance(old, LeafNode):
                    summary.change(old, -1)
                if isinstance(value, LeafNode):
                    summary.change(value, 1)
            if value is None and x // 2 < self._free_hint:
                self._free_hint = x // 2

    def _invalidate(self, x: int) -> None:
        """Drop cached hashes/resolutions of ``x`` and its ancestors: O(log n).

        Always a copy-on-write write (`PVec.clear`, even of an entry that is None already): a
        cache chunk shared with another tree must only hold entries of subtrees both trees
        hold identically, since cache fills write into shared chunks (`PVec.fill`).  (Only
        the never-written chunk is skipped: `fill` copies it before writing.)"""
        path = direct_path(x, self.n_leaves)
        path.append(x)
        self._hashes.clear(path)
        self._res.clear(path)

    def set_node(self, x: int, value: NodeValue | None) -> None:
        """Set node ``x`` (type-checked against its position) and invalidate caches."""
        self._check_node(x)
        if value is not None:
            if x % 2 == 0 and not isinstance(value, LeafNode):
                raise InvalidArgument(f"node {x} must be a leaf node")
            if x % 2 == 1 and not isinstance(value, ParentNode):
                raise InvalidArgument(f"node {x} must be a parent node")
        self._put(x, value)
        self._invalidate(x)

    def set_path_nodes(self, leaf_index: int, values: Iterable[tuple[int, ParentNode | None]]) -> None:
        """Set parent nodes on the direct path of a leaf and invalidate the path's caches once
        (an UpdatePath merge, RFC 9420 section 7.5): O(log n) instead of one invalidation of
        the path per node."""
        self._check_leaf(leaf_index)
        x = 2 * leaf_index
        on_path = set(direct_path(x, self.n_leaves))
        items = list(values)
        for p, v in items:
            if p not in on_path:
                raise InvalidArgument(f"node {p} is not on the direct path of leaf {leaf_index}")
            if v is not None and not isinstance(v, ParentNode):
                raise InvalidArgument(f"node {p} must be a parent node")
        for p, v in items:
            self._put(p, v)
        self._invalidate(x)

    def set_leaf(self, leaf_index: int, leaf: LeafNode | None) -> None:
        self._check_leaf(leaf_index)
        self.set_node(2 * leaf_index, leaf)

    def set_direct_path(self, leaf_index: int, leaf: LeafNode, parents: Iterable[tuple[int, ParentNode]]) -> None:
        """Set a leaf and its whole direct path at once: the given parent nodes, every other
        node of the path blank, with one invalidation of the path's caches.  The same tree as
        `blank_path`, `set_path_nodes` and `set_leaf` in turn (merging an UpdatePath, RFC 9420
        section 7.5), with each node written once."""
        self._check_leaf(leaf_index)
        if not isinstance(leaf, LeafNode):
            raise InvalidArgument("set_direct_path needs a LeafNode")
        x = 2 * leaf_index
        path = direct_path(x, self.n_leaves)
        values: dict[int, ParentNode] = dict(parents)
        outside = set(values).difference(path)
        if outside:
            raise InvalidArgument(f"node {min(outside)} is not on the direct path of leaf {leaf_index}")
        for p, pv in values.items():
            if not isinstance(pv, ParentNode):
                raise InvalidArgument(f"node {p} must be a parent node")
        nodes = self._nodes
        for p in path:
            v = values.get(p)
            if v is not None or nodes.get(p) is not None:
                self._put(p, v)
        self._put(x, leaf)
        self._invalidate(x)

    def blank_path(self, leaf_index: int) -> None:
        """Blank every parent on the direct path of a leaf (RFC 9420 section 7.4)."""
        self._check_leaf(leaf_index)
        nodes = self._nodes
        for p in direct_path(2 * leaf_index, self.n_leaves):
            if nodes.get(p) is not None:
                self._put(p, None)
        self._invalidate(2 * leaf_index)

    def _extend(self) -> None:
        """Double the number of leaves (RFC 9420 section 7.7)."""
        width = 2 * len(self._nodes) + 1
        self._nodes.resize(width)
        self._hashes.resize(width)
        self._res.resize(width)
        # the new root is the only node whose subtree changed; its cache entry is None already

    def _truncate(self) -> None:
        """Shrink to the smallest ``2^d`` leaves with ``2^d`` > rightmost non-blank leaf (section 7.7)."""
        nodes = self._nodes
        r = max(0, nodes.rfind_not_none(len(nodes) - 1, 2))
        leaves = 1
        while leaves < r // 2 + 1:
            leaves *= 2
        width = 2 * leaves - 1
        if width < len(nodes):
            x = nodes.rfind_not_none(len(nodes) - 1)
            while x >= width:
                self._put(x, None)
                x = nodes.rfind_not_none(x - 1)
            nodes.resize(width)
            self._hashes.resize(width)
            self._res.resize(width)
            self._free_hint = min(self._free_hint, leaves)

    def free_leaf(self) -> int:
        """Index of the leftmost blank leaf, or ``n_leaves`` if the tree is full (amortised O(1))."""
        nodes = self._nodes
        for i in range(2 * self._free_hint, len(nodes), 2):
            if nodes.get(i) is None:
                self._free_hint = i // 2
                return i // 2
        self._free_hint = self.n_leaves
        return self.n_leaves

    def add_leaf(self, leaf: LeafNode) -> int:
        """Add a member at the leftmost blank leaf, extending if needed (RFC 9420 section 12.1.1).

        The new leaf index is added to ``unmerged_leaves`` of every non-blank parent on its
        direct path.  Returns the leaf index.
        """
        if not isinstance(leaf, LeafNode):
            raise InvalidArgument("add_leaf needs a LeafNode")
        index = self.free_leaf()
        if index == self.n_leaves:
            self._extend()
        x = 2 * index
        nodes = self._nodes
        for p in direct_path(x, self.n_leaves):
            v = nodes.get(p)
            if v is not None:
                assert isinstance(v, ParentNode)
                unmerged = list(v.unmerged_leaves)
                insort(unmerged, index)
                nodes.set(p, replace(v, unmerged_leaves=tuple(unmerged)))  # same key: no _put needed
        self._put(x, leaf)
        self._free_hint = index + 1
        self._invalidate(x)
        return index

    def add_leaves(self, leaves: Sequence[LeafNode]) -> list[int]:
        """Add members one after the other as `add_leaf` does -- each at the leftmost blank
        leaf, extending the tree when it is full, its index inserted into ``unmerged_leaves``
        of every non-blank parent on its direct path (RFC 9420 section 12.1.1) -- with each
        changed parent written once and the caches of the union of the new leaves' direct
        paths invalidated once (an add-all of n members: O(n) instead of O(n log n) cache
        writes).  Returns the new leaf indices, in the order of ``leaves`` (ascending)."""
        for leaf in leaves:
            if not isinstance(leaf, LeafNode):
                raise InvalidArgument("add_leaves needs LeafNodes")
        indices: list[int] = []
        if not leaves:
            return indices
        self._own()
        nodes = self._nodes
        n_leaves = self.n_leaves
        for leaf in leaves:
            index = self._free_hint
            if index >= n_leaves or nodes.get(2 * index) is not None:
                index = self.free_leaf()
                if index == n_leaves:
                    self._extend()
                    n_leaves = self.n_leaves
            nodes.set(2 * index, leaf)  # a blank leaf: nothing to count out of the indexes
            self._free_hint = index + 1
            indices.append(index)
        idx = self._keys
        if idx is not None:
            counts: dict[bytes, int] = {}
            for leaf in leaves:
                k = leaf.encryption_key
                counts[k] = counts.get(k, 0) + 1
            idx.add_counts(counts)
        summary = self._leaf_summary
        if summary is not None:
            if not self._owns_summary:
                summary = self._leaf_summary = summary.clone()
                self._owns_summary = True
            summary.add_many(leaves)
        # Each new index is larger than the ones before it (the leftmost blank leaf, and no
        # blank leaf below the previous one), so inserting a parent's new leaves in this
        # order gives add_leaf's lists.  Parents created by an extension are blank.
        root = len(nodes) // 2
        union = [2 * i for i in indices]
        level = list(union)
        lvl = 0
        while level[0] != root:
            step = 1 << lvl
            up = [x - step if (x >> (lvl + 1)) & 1 else x + step for x in level]
            level = list(dict.fromkeys(up))  # the parents at level lvl + 1, ascending
            union += level
            lvl += 1
            span = 1 << lvl  # leaves below a node of level lvl
            for p in level:
                v = nodes.get(p)
                if v is None:
                    continue
                assert isinstance(v, ParentNode)
                first = (p + 1 - span) >> 1
                lo = bisect_left(indices, first)
                hi = bisect_left(indices, first + span, lo)
                unmerged = list(v.unmerged_leaves)
                for i in indices[lo:hi]:
                    insort(unmerged, i)
                nodes.set(p, replace(v, unmerged_leaves=tuple(unmerged)))  # same key: no _put needed
        self._hashes.clear(union)
        self._res.clear(union)
        if len(indices) >= _COLD_ADDS:
            self._cold = self._cold_res = True
        return indices

    def update_leaf(self, leaf_index: int, leaf: LeafNode) -> None:
        """Replace a leaf and blank its direct path (RFC 9420 section 12.1.2)."""
        if self.leaf(leaf_index) is None:
            raise InvalidArgument(f"leaf {leaf_index} is blank")
        self.blank_path(leaf_index)
        self.set_leaf(leaf_index, leaf)

    def remove_leaf(self, leaf_index: int) -> None:
        """Blank a leaf and its direct path, then truncate (RFC 9420 section 12.1.3)."""
        if self.leaf(leaf_index) is None:
            raise InvalidArgument(f"leaf {leaf_index} is already blank")
        self.blank_path(leaf_index)
        self._put(2 * leaf_index, None)
        self._invalidate(2 * leaf_index)
        self._truncate()

    # ------------------------------------------------------------------ resolution / paths

    def resolution(self, x: int) -> tuple[int, ...]:
        """Resolution of node ``x`` as node indices (RFC 9420 section 4.1.1)."""
        cached = self._res.get(x)
        if cached is not None:
            return cached
        if self._cold_res:
            self._resolve_all()
            return self.resolution(x)
        v = self._nodes.get(x)
        out: tuple[int, ...]
        if v is None and x % 2 == 0:
            out = _EMPTY
        elif v is None:
            lc, rc = _children(x)
            out = self.resolution(lc) + self.resolution(rc)
        elif x % 2 == 0:
            out = (x,)
        else:
            assert isinstance(v, ParentNode)
            out = (x, *(2 * u for u in v.unmerged_leaves))
        self._res.fill(x, out)
        return out

    def _resolve_all(self) -> None:
        """Fill every missing resolution bottom up, level by level (section 4.1.1): the values
        `resolution` computes recursively, for trees whose cache is mostly empty."""
        self._cold_res = False
        nodes, res = self._nodes, self._res
        width = len(nodes)
        get, fill = res.get, res.fill
        for x in range(0, width, 2):
            if get(x) is None:
                fill(x, _EMPTY if nodes.get(x) is None else (x,))
        lvl = 1
        while (1 << lvl) <= width:
            half = 1 << (lvl - 1)
            for x in range((1 << lvl) - 1, width, 1 << (lvl + 1)):
                if get(x) is None:
                    v = nodes.get(x)
                    if v is None:
                        left, right = get(x - half), get(x + half)
                        assert left is not None and right is not None
                        fill(x, left + right)
                    else:
                        assert isinstance(v, ParentNode)
                        fill(x, (x, *(2 * u for u in v.unmerged_leaves)))
            lvl += 1

    def resolution_excluding(self, x: int, excluded_leaves: Iterable[int]) -> tuple[int, ...]:
        """Resolution of ``x`` without the given leaves (new members, RFC 9420 section 12.4.1)."""
        ex = {2 * i for i in excluded_leaves}
        res = self.resolution(x)
        if not ex:
            return res
        return tuple(n for n in res if n not in ex)

    def filtered_direct_path(self, leaf_index: int) -> list[int]:
        """Direct path minus nodes whose copath child has an empty resolution (section 4.1.2)."""
        return [p for p, _s in self.filtered_direct_path_with_copath(leaf_index)]

    def filtered_direct_path_with_copath(self, leaf_index: int) -> list[tuple[int, int]]:
        """``(parent, copath child)`` pairs of the filtered direct path (section 4.1.2)."""
        self._check_leaf(leaf_index)
        return [(p, s) for p, s in path_with_siblings(2 * leaf_index, self.n_leaves) if self.resolution(s)]

    # ------------------------------------------------------------------ tree hash

    def tree_hash(self, x: int | None = None) -> bytes:
        """Tree hash of node ``x`` (default: the root) (RFC 9420 section 7.8)."""
        if x is None:
            x = self.root
        else:
            self._check_node(x)
        if self._cold:
            self._hash_all()
        return self._th(x)

    def _hash_all(self) -> None:
        """Fill every missing tree hash bottom up, level by level (RFC 9420 section 7.8): the
        same values as `_th`, without its recursion, for trees whose hashes are mostly
        missing."""
        self._cold = False
        nodes, hashes = self._nodes, self._hashes
        width = len(nodes)
        get, fill = hashes.get, hashes.fill
        sha = self.suite.hash
        for x in range(0, width, 2):
            if get(x) is None:
                leaf = nodes.get(x)
                head = b"\x01" + (x >> 1).to_bytes(4, "big")
                if leaf is None:
                    fill(x, sha(head + b"\x00"))
                else:
                    assert isinstance(leaf, LeafNode)
                    fill(x, sha(head + b"\x01" + leaf.to_bytes()))
        phi = self._parent_hash_input_hash
        lvl = 1
        while (1 << lvl) <= width:
            half = 1 << (lvl - 1)
            for x in range((1 << lvl) - 1, width, 1 << (lvl + 1)):
                if get(x) is None:
                    lh, rh = get(x - half), get(x + half)
                    assert lh is not None and rh is not None
                    fill(x, phi(nodes.get(x), lh, rh))
            lvl += 1

    def tree_hashes(self) -> list[bytes]:
        """Tree hash of every node, in node order."""
        self._th(self.root)
        return [self._th(i) for i in range(len(self._nodes))]

    def _th(self, x: int) -> bytes:
        hashes = self._hashes
        h = hashes.get(x)
        if h is not None:
            return h
        if x % 2 == 1:
            # fill children first without deep recursion on cached subtrees
            left, right = _children(x)
            lh = hashes.get(left) or self._th(left)
            rh = hashes.get(right) or self._th(right)
            h = self._parent_hash_input_hash(self._nodes.get(x), lh, rh)
        else:
            h = self._leaf_hash(x // 2, self._nodes.get(x))
        hashes.fill(x, h)
        return h

    def _leaf_hash(self, leaf_index: int, leaf: NodeValue | None) -> bytes:
        """Hash of TreeHashInput for a leaf (RFC 9420 section 7.8)."""
        head = b"\x01" + leaf_index.to_bytes(4, "big")
        if leaf is None:
            return self.suite.hash(head + b"\x00")
        assert isinstance(leaf, LeafNode)
        return self.suite.hash(head + b"\x01" + leaf.to_bytes())

    def _parent_hash_input_hash(self, node: NodeValue | None, left_hash: bytes, right_hash: bytes) -> bytes:
        """Hash of TreeHashInput for a parent (RFC 9420 section 7.8): ``node_type``, the
        optional ParentNode, the children's hashes as ``opaque<V>`` (assembled directly)."""
        if node is None:
            head = b"\x02\x00"
        else:
            assert isinstance(node, ParentNode)
            key, ph, unmerged = node.encryption_key, node.parent_hash, node.unmerged_leaves
            head = b"".join(
                (
                    b"\x02\x01",
                    encode_varint(len(key)),
                    key,
                    encode_varint(len(ph)),
                    ph,
                    encode_varint(4 * len(unmerged)),
                    *(u.to_bytes(4, "big") for u in unmerged),
                )
            )
        return self.suite.hash(
            head + encode_varint(len(left_hash)) + left_hash + encode_varint(len(right_hash)) + right_hash
        )

    def _th_excluding(self, x: int, excluded: list[int], exset: frozenset[int]) -> bytes:
        """Tree hash of ``x`` with the ``excluded`` leaves (sorted) blanked and dropped from
        unmerged lists; subtrees without excluded leaves use the cache."""
        k = _level(x)
        first = (x - ((1 << k) - 1)) >> 1
        i = bisect_left(excluded, first)
        if i == len(excluded) or excluded[i] >= first + (1 << k):
            return self._th(x)
        if k == 0:
            return self._leaf_hash(x // 2, None)
        v = self._nodes[x]
        if v is not None:
            assert isinstance(v, ParentNode)
            kept = [u for u in v.unmerged_leaves if u not in exset]
            if len(kept) != len(v.unmerged_leaves):
                v = replace(v, unmerged_leaves=tuple(kept))
        lc, rc = _children(x)
        lh = self._th_excluding(lc, excluded, exset)
        rh = self._th_excluding(rc, excluded, exset)
        return self._parent_hash_input_hash(v, lh, rh)

    # ------------------------------------------------------------------ parent hash

    def original_sibling_tree_hash(self, p: int, s: int) -> bytes:
        """Tree hash of ``s`` with ``p``'s unmerged leaves removed (RFC 9420 section 7.9)."""
        v = self._nodes[p]
        if not isinstance(v, ParentNode):
            raise TreeError(f"parent hash of blank node {p}")
        if not v.unmerged_leaves:
            return self._th(s)
        return self._th_excluding(s, sorted(v.unmerged_leaves), frozenset(v.unmerged_leaves))

    def compute_parent_hash(self, p: int, s: int) -> bytes:
        """Parent hash of ``p`` with copath child ``s`` (RFC 9420 section 7.9)."""
        v = self._nodes[p]
        if not isinstance(v, ParentNode):
            raise TreeError(f"parent hash of blank node {p}")
        return self.parent_hash_from(v.encryption_key, v.parent_hash, self.original_sibling_tree_hash(p, s))

    def parent_hash_from(self, encryption_key: bytes, parent_hash: bytes, sibling_hash: bytes) -> bytes:
        """Hash of a ParentHashInput struct (RFC 9420 section 7.9): three ``opaque<V>``."""
        return self.suite.hash(
            b"".join(
                (
                    encode_varint(len(encryption_key)),
                    encryption_key,
                    encode_varint(len(parent_hash)),
                    parent_hash,
                    encode_varint(len(sibling_hash)),
                    sibling_hash,
                )
            )
        )

    def _node_parent_hash(self, x: int) -> bytes | None:
        v = self.node(x)
        if v is None:
            return None
        if isinstance(v, ParentNode):
            return v.parent_hash
        if v.leaf_node_source == LeafNodeSource.COMMIT:
            return v.parent_hash
        return None

    def _resolution_upto(self, x: int, limit: int) -> list[int] | None:
        """The resolution of ``x`` if it has at most ``limit`` nodes, else None (section 4.1.1).

        A depth-first walk that stops as soon as the limit is passed, so a large blank
        subtree costs O(limit + depth) instead of materialising its whole resolution.
        """
        nodes = self.nodes()
        out: list[int] = []
        distinct: set[int] = set()  # (a malformed unmerged list may repeat a leaf)
        stack = [x]
        while stack:
            y = stack.pop()
            v = nodes[y]
            if v is not None:
                found = [y, *(2 * u for u in v.unmerged_leaves)] if isinstance(v, ParentNode) else [y]
                out.extend(found)
                distinct.update(found)
                if len(distinct) > limit:
                    return None
            elif y & 1:
                k = _level(y) - 1
                stack.append(y ^ (3 << k))  # right child, visited after the left one
                stack.append(y ^ (1 << k))
        return out

    def _ph_valid_count(self, p: int, pv: ParentNode, c: int, s: int) -> int:
        """How many nodes D below child ``c`` of ``p`` have a parent hash valid w.r.t. ``p``
        (RFC 9420 section 7.9.2): D in resolution(c), D.parent_hash = ParentHash(p, s), and
        resolution(c) minus D equal to p's unmerged leaves under c."""
        rng = treemath.subtree_leaves(c)
        unmerged_c = {2 * u for u in pv.unmerged_leaves if u in rng}
        # resolution(c) = unmerged_c + {D}: a larger resolution has no valid D
        res_c = self._resolution_upto(c, len(unmerged_c) + 1)
        if res_c is None:
            return 0
        ph: bytes | None = None
        found = 0
        res_set = set(res_c)
        for d in res_c:
            dph = self._node_parent_hash(d)
            if dph is None:
                continue
            if ph is None:
                ph = self.compute_parent_hash(p, s)
            if dph == ph and res_set - {d} == unmerged_c:
                found += 1
        return found

    def parent_hash_valid(self, p: int) -> bool:
        """Whether exactly one descendant chains to parent ``p`` (top-down check, section 7.9.2)."""
        pv = self.node(p)
        if pv is None:
            return True
        assert isinstance(pv, ParentNode)
        left, right = _children(p)
        return self._ph_valid_count(p, pv, left, right) + self._ph_valid_count(p, pv, right, left) == 1

    def verify_parent_hashes(self) -> None:
        """Every non-blank parent node is parent-hash valid, else `TreeError` (section 7.9.2)."""
        for p, v in enumerate(self.nodes()):
            if v is not None and p & 1 and not self.parent_hash_valid(p):
                raise TreeError(f"parent node {p} is not parent-hash valid")

    # ------------------------------------------------------------------ validation

    def verify_unmerged_leaves(self) -> None:
        """Checks on ``unmerged_leaves`` done when joining (RFC 9420 section 12.4.3.1)."""
        n = self.n_leaves
        nodes = self.nodes()
        for p, v in enumerate(nodes):
            if v is None or not p & 1:
                continue
            assert isinstance(v, ParentNode)
            if not v.unmerged_leaves:
                continue
            rng = treemath.subtree_leaves(p)
            prev = -1
            for u in v.unmerged_leaves:
                if u <= prev:
                    raise TreeError(f"unmerged_leaves of node {p} are not sorted and unique")
                prev = u
                if u not in rng or u >= n:
                    raise TreeError(f"unmerged leaf {u} of node {p} is not a descendant")
                if nodes[2 * u] is None:
                    raise TreeError(f"unmerged leaf {u} of node {p} is blank")
                for q in direct_path(2 * u, n):
                    if q == p:
                        break
                    qv = nodes[q]
                    if qv is not None:
                        assert isinstance(qv, ParentNode)
                        if u not in qv.unmerged_leaves:
                            raise TreeError(f"node {q} between leaf {u} and node {p} does not list it as unmerged")

    def verify_key_uniqueness(self) -> None:
        """Encryption keys unique across all nodes, signature keys across leaves (section 7.3)."""
        nodes = self.nodes()
        enc = [v.encryption_key for v in nodes if v is not None]
        sig = [v.signature_key for v in nodes if isinstance(v, LeafNode)]
        if len(set(enc)) == len(enc) and len(set(sig)) == len(sig):
            return
        seen_enc: set[bytes] = set()
        seen_sig: set[bytes] = set()
        for x, v in enumerate(nodes):  # name the first duplicate, in node order
            if v is None:
                continue
            if v.encryption_key in seen_enc:
                raise TreeError(f"encryption key of node {x} appears twice in the tree")
            seen_enc.add(v.encryption_key)
            if isinstance(v, LeafNode):
                if v.signature_key in seen_sig:
                    raise TreeError(f"signature key of leaf {x // 2} appears twice in the tree")
                seen_sig.add(v.signature_key)

    def verify_leaf_signatures(self, group_id: bytes) -> None:
        """Every leaf's signature verifies with ``group_id`` and its index (section 7.3).

        The signatures are checked in one batch (on the worker threads of
        `crdt_mls.mls.parallel`); the error names the lowest failing leaf, as a serial loop would.
        """
        # parallel lists of bytes (no per-leaf tuples kept alive for the garbage collector)
        indices: list[int] = []
        keys: list[bytes] = []
        contents: list[bytes] = []
        signatures: list[bytes] = []
        for i, leaf in self.members():
            indices.append(i)
            keys.append(leaf.signature_key)
            contents.append(leaf.tbs(group_id, i))
            signatures.append(leaf.signature)
        ok = self.suite.verify_labeled_many(keys, "LeafNodeTBS", contents, signatures)
        if not all(ok):
            raise SignatureError(f"LeafNode signature of leaf {indices[ok.index(False)]} does not verify")

    def verify_integrity(self, group_id: bytes, tree_hash: bytes | None = None) -> None:
        """The tree checks a joiner runs (RFC 9420 section 12.4.3.1), except credential
        and capability policy (left to the caller): tree hash, parent hashes, leaf
        signatures, unmerged leaves, key uniqueness."""
        if tree_hash is not None and self.tree_hash() != tree_hash:
            raise TreeError("tree hash of the ratchet tree does not match the group context")
        if not any(True for _ in self.members()):
            raise TreeError("ratchet tree has no members")
        self.verify_unmerged_leaves()
        self.verify_key_uniqueness()
        self.verify_parent_hashes()
        self.verify_leaf_signatures(group_id)

    def _key_index(self) -> PMap[bytes, int]:
        idx = self._keys
        if idx is None:
            counts: dict[bytes, int] = {}
            for v in self._nodes:
                if v is not None:
                    k = v.encryption_key
                    counts[k] = counts.get(k, 0) + 1
            idx = self._keys = PMap(counts.items())
            self._shared = False
        return idx

    def _summary(self) -> _LeafSummary:
        summary = self._leaf_summary
        if summary is None:
            summary = _LeafSummary(PMap(), {}, {})
            for _i, leaf in self.members():
                summary.change(leaf, 1)
            self._leaf_summary = summary
            self._owns_summary = True
        return summary

    def credential_support(self, excluding: Iterable[int] = ()) -> tuple[set[int], set[int]]:
        """(credential types in use, credential types every member supports) over the members
        not in ``excluding`` (RFC 9420 section 7.3); O(|excluding|) from the leaf summary."""
        summary = self._summary()
        gone = [leaf for i in set(excluding) if (leaf := self.leaf(i) if 0 <= i < self.n_leaves else None)]
        if gone:
            summary = summary.clone()
            for leaf in gone:
                summary.change(leaf, -1)
        supported = {t for t, c in summary.support.items() if c == summary.members} if summary.members else set()
        return set(summary.cred_types), supported

    def signature_key_count(self, key: bytes) -> int:
        """Number of leaves whose signature key is ``key`` (O(1) after the leaf summary is built)."""
        return self._summary().sig_keys.get(key, 0)

    def has_encryption_key(self, key: bytes) -> bool:
        """Whether any node holds ``key`` (O(1) after the index is built)."""
        return key in self._key_index()

    def encryption_keys(self) -> set[bytes]:
        """Every HPKE public key present in the tree."""
        return set(self._key_index())

    def find_leaf(self, leaf: LeafNode) -> int | None:
        """Index of a leaf equal to ``leaf`` (used by joiners), or None."""
        for i, v in self.members():
            if v == leaf:
                return i
        return None


def apply_proposal(tree: RatchetTree, proposal: Proposal, sender: int) -> int | None:
    """Apply one Add, Update or Remove to ``tree`` in place (RFC 9420 sections 12.1.1-12.1.3).

    ``sender`` is the proposer's leaf index (used by Update).  Returns the new leaf index for
    an Add, else None.  Other proposal types do not touch the tree and are ignored.  Raises
    `ProposalError` (tree unchanged) for an Update from a blank leaf or a Remove of a blank leaf.
    Proposal-list validation (section 12.2) and leaf node validation are the caller's job.
    """
    if isinstance(proposal, Add):
        return tree.add_leaf(proposal.key_package.leaf_node)
    if isinstance(proposal, Update):
        if not 0 <= sender < tree.n_leaves or tree.leaf(sender) is None:
            raise ProposalError(f"Update from blank or unknown leaf {sender}")
        tree.update_leaf(sender, proposal.leaf_node)
        return None
    if isinstance(proposal, Remove):
        if not 0 <= proposal.removed < tree.n_leaves or tree.leaf(proposal.removed) is None:
            raise ProposalError(f"Remove of blank or unknown leaf {proposal.removed}")
        tree.remove_leaf(proposal.removed)
        return None
    return None


#: Extension types that are "default" and never listed in Capabilities (RFC 9420 section 7.2).
_DEFAULT_EXTENSIONS = frozenset({1, 2, 3, 4, 5})


def validate_leaf_node(
    tree: RatchetTree,
    leaf: LeafNode,
    *,
    source: LeafNodeSource,
    group_id: bytes,
    leaf_index: int | None = None,
    required_capabilities: RequiredCapabilities | None = None,
    now: int | None = None,
    signature_verified: bool = False,
) -> None:
    """Leaf node validation against a group (RFC 9420 section 7.3), except credential
    validation, which is application policy.

    ``source`` is the expected ``leaf_node_source`` (key_package for Add, update for Update,
    commit for an UpdatePath leaf).  ``leaf_index`` is the leaf the node will occupy (needed
    for update/commit signatures; the current occupant is ignored by the uniqueness checks).
    ``now`` (seconds since the epoch), if given, is checked against a key_package lifetime.
    ``signature_verified``: the caller has just verified this leaf's signature for this group
    and leaf index (`crdt_mls.mls.treekem.apply_update_path` does, for an UpdatePath leaf).
    Raises `SignatureError` or `TreeError`.
    """
    if leaf.leaf_node_source != source:
        raise TreeError(f"leaf_node_source is {leaf.leaf_node_source}, expected {source}")
    if source != LeafNodeSource.KEY_PACKAGE and leaf_index is None:
        raise InvalidArgument("an update/commit leaf node is validated at a leaf index")
    if not signature_verified:
        verify_leaf_signature(tree.suite, leaf, group_id, 0 if leaf_index is None else leaf_index)

    caps = leaf.capabilities
    if required_capabilities is not None:
        rc = required_capabilities
        missing_ext = [t for t in rc.extension_types if t not in caps.extensions and t not in _DEFAULT_EXTENSIONS]
        missing_prop = [t for t in rc.proposal_types if t not in caps.proposals and not 1 <= t <= 7]
        missing_cred = [t for t in rc.credential_types if t not in caps.credentials]
        if missing_ext or missing_prop or missing_cred:
            raise TreeError(
                f"leaf node lacks required capabilities: extensions {missing_ext}, "
                f"proposals {missing_prop}, credentials {missing_cred}"
            )
    for ext in leaf.extensions:
        if ext.extension_type not in _DEFAULT_EXTENSIONS and ext.extension_type not in caps.extensions:
            raise TreeError(f"leaf node extension {ext.extension_type} is not listed in its capabilities")
    ctype = leaf.credential.credential_type
    if ctype not in caps.credentials:
        raise TreeError(f"leaf node credential type {ctype} is not listed in its capabilities")

    if source == LeafNodeSource.KEY_PACKAGE and now is not None:
        lt = leaf.lifetime
        if lt is None or not lt.not_before <= now <= lt.not_after:
            raise TreeError("leaf node lifetime does not cover the current time")

    own = None if leaf_index is None or leaf_index >= tree.n_leaves else tree.leaf(leaf_index)
    # validating a leaf already in the tree (e.g. when joining): it may hold its own key once
    allowed = 1 if own is not None and own == leaf else 0
    if tree._key_index().get(leaf.encryption_key, 0) > allowed:
        raise TreeError("leaf node encryption key already appears in the tree")
    # fast path from the cached summary; the exact scan below only runs when it is inconclusive
    summary = tree._summary()
    own_sig = 1 if own is not None and own.signature_key == leaf.signature_key else 0
    if (
        summary.sig_keys.get(leaf.signature_key, 0) <= own_sig
        and summary.supported(ctype)
        and all(t in caps.credentials for t in summary.cred_types)
    ):
        return
    for i, member in tree.members():
        if i == leaf_index:
            continue
        if member.signature_key == leaf.signature_key:
            raise TreeError(f"leaf node signature key is already used by leaf {i}")
        if ctype not in member.capabilities.credentials:
            raise TreeError(f"leaf {i} does not support credential type {ctype}")
        if member.credential.credential_type not in caps.credentials:
            raise TreeError(
                f"leaf node does not support credential type {member.credential.credential_type} of leaf {i}"
            )
