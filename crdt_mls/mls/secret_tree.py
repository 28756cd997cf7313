"""The secret tree and per-sender hash ratchets (RFC 9420 section 9).

One `SecretTree` exists per epoch, rooted at the epoch's ``encryption_secret``.  Node
secrets are derived lazily along the path from the root to a sender's leaf and every
consumed value is deleted (section 9.2): a parent secret once its children exist, a leaf
secret once its two ratchets exist, a ratchet secret once the next one is derived, a
key/nonce once it was used.

The node secrets live in a persistent binary tree (path copying) and the leaves' ratchets in
a persistent map by leaf (`crdt_mls.mls.persistent.PMap`): `SecretTree.copy` is O(1), deriving
a leaf's ratchets touches O(log n) nodes once per epoch, and each later key of that leaf
touches one map bucket, so immutable group states can snapshot the tree per message even
for very large groups.

Out-of-order delivery: a receiver may ratchet forward at most ``max_forward`` generations
past the next expected one (bounding the work a hostile ``generation = 0xffffffff`` can
cause, section 15.3) and keeps at most ``max_retained`` skipped keys per ratchet.

Receiving is two-phase so a failed decryption leaves the tree unchanged:
`SecretTree.prepare_key` computes a key without touching state and returns a `PendingKey`;
`SecretTree.commit` applies the deletions after the AEAD succeeded.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from crdt_mls.errors import DecodeError, InvalidArgument, InvalidState, ProtocolError, ReplayError
from crdt_mls.mls import codec
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.persistent import PMap
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite

__all__ = [
    "DEFAULT_MAX_FORWARD",
    "DEFAULT_MAX_RETAINED",
    "PendingKey",
    "RatchetKey",
    "RatchetType",
    "SecretTree",
]

#: Default bound on how far a received generation may jump ahead (RFC 9420 section 15.3).
DEFAULT_MAX_FORWARD = 1024
#: Default number of skipped (not yet used) keys retained per ratchet.
DEFAULT_MAX_RETAINED = 1024
_MAX_GENERATION = 0xFFFFFFFF


class RatchetType(enum.IntEnum):
    """The two ratchets of each leaf (RFC 9420 section 9)."""

    HANDSHAKE = 0
    APPLICATION = 1

    @property
    def label(self) -> str:
        return "handshake" if self is RatchetType.HANDSHAKE else "application"


@dataclass(frozen=True, slots=True)
class RatchetKey:
    """A key and nonce of ratchet generation ``generation`` (RFC 9420 section 9.1)."""

    generation: int
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Ratchet:
    """One hash ratchet: the secret of ``next_generation`` and retained skipped keys.

    Never mutated (the ``skipped`` map is copied on change)."""

    next_generation: int
    secret: bytes = field(repr=False)
    skipped: dict[int, tuple[bytes, bytes]] = field(repr=False, default_factory=dict)


class _Node:
    """Immutable (by convention) node of the persistent secret tree.

    ``secret`` is the not yet consumed tree-node secret (a consumed leaf is a node without
    secret; its ratchets are in `SecretTree._ratchets`).  A plain slotted class rather than a
    frozen dataclass: nodes are created whenever a leaf's ratchets are derived.
    """

    __slots__ = ("left", "right", "secret")

    def __init__(self, secret: bytes | None = None, left: _Node | None = None, right: _Node | None = None) -> None:
        self.secret = secret
        self.left = left
        self.right = right

    def __repr__(self) -> str:
        return f"_Node(has_secret={self.secret is not None})"


@dataclass(frozen=True, slots=True)
class PendingKey:
    """A derived key whose consumption has not been applied yet (see `SecretTree.commit`)."""

    leaf: int
    ratchet_type: RatchetType
    generation: int
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    #: the state stamp the key was prepared from
    _base: object = field(repr=False, compare=False)
    #: the secret tree root after the derivation (the old root if nothing was derived)
    _root: _Node = field(repr=False, compare=False)
    #: the leaf's two ratchets after the key is consumed
    _ratchets: tuple[_Ratchet, _Ratchet] = field(repr=False, compare=False)


_INFOS: dict[int, tuple[bytes, bytes, bytes]] = {}


def _kdf_label_head(length: int, label: bytes) -> bytes:
    """KDFLabel (RFC 9420 section 8) up to the 4-byte generation context: ``uint16 length``,
    ``opaque label<V> = "MLS 1.0 " + label``, the context's length prefix."""
    full = b"MLS 1.0 " + label
    return length.to_bytes(2, "big") + codec.encode_varint(len(full)) + full + codec.encode_varint(4)


def _tree_secret_infos(suite: CipherSuite) -> tuple[bytes, bytes, bytes]:
    """The constant part of the KDFLabel of DeriveTreeSecret for "key", "nonce" and "secret"."""
    infos = _INFOS.get(suite.suite_id)
    if infos is None:
        infos = _INFOS[suite.suite_id] = (
            _kdf_label_head(suite.aead_key_length, b"key"),
            _kdf_label_head(suite.aead_nonce_length, b"nonce"),
            _kdf_label_head(suite.hash_length, b"secret"),
        )
    return infos


def _depth(n_leaves: int) -> int:
    """Number of levels above the leaves in the (power-of-two padded) tree of ``n_leaves``."""
    return (n_leaves - 1).bit_length()


class SecretTree:
    """Per-epoch secret tree with lazily derived, forward-secure sender ratchets (RFC 9420 section 9)."""

    __slots__ = ("_depth", "_n_leaves", "_ratchets", "_root", "_stamp", "_suite", "max_forward", "max_retained")

    _root: _Node
    #: leaf -> (handshake, application) ratchets of every leaf whose secret was consumed
    _ratchets: PMap[int, tuple[_Ratchet, _Ratchet]]
    #: replaced by every `commit`: a `PendingKey` applies only to the state it was prepared from
    _stamp: object

    def __init__(
        self,
        suite: CipherSuite,
        encryption_secret: bytes,
        n_leaves: int,
        *,
        max_forward: int = DEFAULT_MAX_FORWARD,
        max_retained: int = DEFAULT_MAX_RETAINED,
    ) -> None:
        if n_leaves < 1 or n_leaves > 1 << 31:
            raise InvalidArgument(f"n_leaves must be in 1..2^31, got {n_leaves}")
        if len(encryption_secret) != suite.hash_length:
            raise InvalidArgument(f"encryption_secret must be {suite.hash_length} bytes")
        if max_forward < 0 or max_retained < 0:
            raise InvalidArgument("max_forward and max_retained must be non-negative")
        self._suite = suite
        self._n_leaves = n_leaves
        self._depth = _depth(n_leaves)
        self._root = _Node(secret=bytes(encryption_secret))
        self._ratchets = PMap()
        self._stamp = object()
        self.max_forward = max_forward
        self.max_retained = max_retained

    def _stats(self) -> tuple[int, int]:
        nodes = sum(1 for _, node in self._walk() if node.secret is not None)
        return nodes, 2 * len(self._ratchets)

    def __repr__(self) -> str:
        nodes, ratchets = self._stats()
        return (
            f"SecretTree(suite={self._suite.suite_id}, n_leaves={self._n_leaves}, "
            f"stored_nodes={nodes}, ratchets={ratchets})"
        )

    @property
    def n_leaves(self) -> int:
        return self._n_leaves

    @property
    def suite(self) -> CipherSuite:
        return self._suite

    # -- derivation -------------------------------------------------------------------------
    def _key_nonce(self, secret: bytes, generation: int) -> tuple[bytes, bytes]:
        """``DeriveTreeSecret(secret, "key"/"nonce", generation, AEAD.Nk/Nn)`` (RFC 9420 section 9.1)."""
        suite = self._suite
        key_info, nonce_info, _ = _tree_secret_infos(suite)
        gen = generation.to_bytes(4, "big")
        return (
            suite.kdf_expand(secret, key_info + gen, suite.aead_key_length),
            suite.kdf_expand(secret, nonce_info + gen, suite.aead_nonce_length),
        )

    def _next_secret(self, secret: bytes, generation: int) -> bytes:
        """``DeriveTreeSecret(secret, "secret", generation, KDF.Nh)`` (RFC 9420 section 9.1)."""
        suite = self._suite
        return suite.kdf_expand(secret, _tree_secret_infos(suite)[2] + generation.to_bytes(4, "big"), suite.hash_length)

    def _check_leaf(self, leaf: int) -> None:
        if not 0 <= leaf < self._n_leaves:
            raise ProtocolError(f"leaf index {leaf} is outside the tree of {self._n_leaves} leaves")

    def _bits(self, leaf: int) -> list[int]:
        d = self._depth
        return [(leaf >> (d - 1 - i)) & 1 for i in range(d)]

    def _path(self, leaf: int) -> list[_Node | None]:
        """Nodes on the root-to-leaf path (``None`` where no node exists)."""
        path: list[_Node | None] = [self._root]
        node: _Node | None = self._root
        for bit in self._bits(leaf):
            node = None if node is None else (node.right if bit else node.left)
            path.append(node)
        return path

    def _derive(self, leaf: int) -> tuple[tuple[_Ratchet, _Ratchet], _Node]:
        """The leaf's two ratchets and the root of the tree after deriving them.

        Kept ratchets come from the ratchet map (the root is unchanged).  Missing ratchets are
        derived from the nearest ancestor still holding its secret: that secret is consumed,
        every sibling on the way down gets its derived secret and the leaf's node is left
        without secret (nothing is stored below a node that still holds its secret, RFC 9420
        section 9.2).
        """
        ratchets = self._ratchets.get(leaf)
        if ratchets is not None:
            return ratchets, self._root
        path = self._path(leaf)
        suite = self._suite
        nh = suite.hash_length
        bits = self._bits(leaf)
        start = next((i for i, n in enumerate(path) if n is not None and n.secret is not None), None)
        if start is None:
            raise InvalidState(f"secret tree has no secret left for leaf {leaf}")
        start_node = path[start]
        assert start_node is not None and start_node.secret is not None
        secret = start_node.secret
        template: list[_Node | None] = list(path)
        for i in range(start, len(bits)):
            ls = suite.expand_with_label(secret, "tree", b"left", nh)
            rs = suite.expand_with_label(secret, "tree", b"right", nh)
            if bits[i]:
                template[i] = _Node(None, _Node(secret=ls), None)
                secret = rs
            else:
                template[i] = _Node(None, None, _Node(secret=rs))
                secret = ls
        both = (
            _Ratchet(0, suite.expand_with_label(secret, "handshake", b"", nh)),
            _Ratchet(0, suite.expand_with_label(secret, "application", b"", nh)),
        )
        return both, self._rebuild(leaf, template)

    def _rebuild(self, leaf: int, path: list[_Node | None]) -> _Node:
        """Path copying: a new root equal to ``path``'s nodes except the leaf, which is consumed."""
        bits = self._bits(leaf)
        node = _Node()
        for i in range(len(bits) - 1, -1, -1):
            parent = path[i]
            if parent is None:  # pragma: no cover - the path exists down to the derivation point
                raise InvalidState("secret tree path is broken")
            node = _Node(parent.secret, parent.left, node) if bits[i] else _Node(parent.secret, node, parent.right)
        return node

    def prepare_key(self, leaf: int, ratchet_type: RatchetType, generation: int) -> PendingKey:
        """Key and nonce for receiving ``generation`` from ``leaf``; state is not changed.

        Raises `ProtocolError` for a leaf outside the tree or a generation more than
        ``max_forward`` ahead, `ReplayError` for a generation already used or discarded.
        """
        rtype = RatchetType(ratchet_type)
        self._check_leaf(leaf)
        if not 0 <= generation <= _MAX_GENERATION:
            raise ProtocolError(f"generation {generation} out of range")
        both, root = self._derive(leaf)
        ratchet = both[rtype]
        if generation < ratchet.next_generation:
            kn = ratchet.skipped.get(generation)
            if kn is None:
                raise ReplayError(f"generation {generation} of leaf {leaf} was already used or discarded")
            skipped = dict(ratchet.skipped)
            del skipped[generation]
            updated = _Ratchet(ratchet.next_generation, ratchet.secret, skipped)
            key, nonce = kn
        else:
            if generation - ratchet.next_generation > self.max_forward:
                raise ProtocolError(
                    f"generation {generation} of leaf {leaf} is more than {self.max_forward} ahead of "
                    f"{ratchet.next_generation}"
                )
            skipped = dict(ratchet.skipped)
            secret = ratchet.secret
            g = ratchet.next_generation
            while g < generation:
                skipped[g] = self._key_nonce(secret, g)
                secret = self._next_secret(secret, g)
                g += 1
            key, nonce = self._key_nonce(secret, generation)
            next_secret = self._next_secret(secret, generation) if generation < _MAX_GENERATION else b""
            if len(skipped) > self.max_retained:
                for old in sorted(skipped)[: len(skipped) - self.max_retained]:
                    del skipped[old]
            updated = _Ratchet(generation + 1, next_secret, skipped)
        new_both = (updated, both[1]) if rtype == RatchetType.HANDSHAKE else (both[0], updated)
        return PendingKey(leaf, rtype, generation, key, nonce, self._stamp, root, new_both)

    def commit(self, pending: PendingKey) -> None:
        """Apply the deletions of a key returned by `prepare_key` (after it decrypted successfully)."""
        if pending._base is not self._stamp:
            raise InvalidState("the secret tree changed since this key was prepared")
        self._root = pending._root
        self._ratchets[pending.leaf] = pending._ratchets
        self._stamp = object()

    def key_for(self, leaf: int, ratchet_type: RatchetType, generation: int) -> RatchetKey:
        """`prepare_key` and `commit` in one step: the key is consumed (RFC 9420 section 9.2)."""
        pending = self.prepare_key(leaf, ratchet_type, generation)
        self.commit(pending)
        return RatchetKey(pending.generation, pending.key, pending.nonce)

    def next_key(self, leaf: int, ratchet_type: RatchetType) -> RatchetKey:
        """The sender's next unused key of its own ratchet (consumed at once)."""
        rtype = RatchetType(ratchet_type)
        if not 0 <= leaf < self._n_leaves:
            raise InvalidArgument(f"leaf index {leaf} is outside the tree of {self._n_leaves} leaves")
        # `key_for(leaf, rtype, next_generation)` without the two-phase bookkeeping: the next
        # generation skips nothing, so the retained keys stay as they are
        both, root = self._derive(leaf)
        ratchet = both[rtype]
        gen = ratchet.next_generation
        if gen > _MAX_GENERATION:
            raise InvalidState(f"the {rtype.label} ratchet of leaf {leaf} is exhausted")
        key, nonce = self._key_nonce(ratchet.secret, gen)
        next_secret = self._next_secret(ratchet.secret, gen) if gen < _MAX_GENERATION else b""
        updated = _Ratchet(gen + 1, next_secret, ratchet.skipped)
        self._root = root
        self._ratchets[leaf] = (updated, both[1]) if rtype == RatchetType.HANDSHAKE else (both[0], updated)
        self._stamp = object()
        return RatchetKey(gen, key, nonce)

    def next_generation(self, leaf: int, ratchet_type: RatchetType) -> int:
        """The generation the next `next_key` call for ``leaf`` would return."""
        self._check_leaf(leaf)
        ratchets = self._ratchets.get(leaf)
        return 0 if ratchets is None else ratchets[RatchetType(ratchet_type)].next_generation

    # -- snapshots --------------------------------------------------------------------------
    def copy(self) -> SecretTree:
        """An independent copy in O(1) (the persistent structure is shared, never mutated)."""
        other = SecretTree.__new__(SecretTree)
        other._suite = self._suite
        other._n_leaves = self._n_leaves
        other._depth = self._depth
        other._root = self._root
        other._ratchets = self._ratchets.copy()
        other._stamp = self._stamp
        other.max_forward = self.max_forward
        other.max_retained = self.max_retained
        return other

    def _walk(self) -> Iterator[tuple[int, _Node]]:
        """(array node index, node) of every existing node, in index order."""
        stack: list[tuple[_Node, int, int]] = [(self._root, 0, 0)]  # node, depth, position
        out: list[tuple[int, _Node]] = []
        d = self._depth
        while stack:
            node, depth, pos = stack.pop()
            level = d - depth
            out.append(((pos << (level + 1)) + (1 << level) - 1, node))
            if node.left is not None:
                stack.append((node.left, depth + 1, 2 * pos))
            if node.right is not None:
                stack.append((node.right, depth + 1, 2 * pos + 1))
        out.sort(key=lambda item: item[0])
        return iter(out)

    def encode(self, w: Writer) -> None:
        """Private snapshot encoding (contains secrets; store it encrypted)."""
        w.u16(self._suite.suite_id)
        w.u32(self._n_leaves)
        w.u32(self.max_forward)
        w.u32(self.max_retained)
        nodes: list[tuple[int, bytes]] = []
        ratchets: list[tuple[int, int, _Ratchet]] = []
        for index, node in self._walk():
            if node.secret is not None:
                nodes.append((index, node.secret))
        for leaf, pair in sorted(self._ratchets.items(), key=lambda item: item[0]):
            for rtype, r in enumerate(pair):
                ratchets.append((leaf, rtype, r))

        def w_node(wr: Writer, item: tuple[int, bytes]) -> None:
            wr.u32(item[0])
            wr.opaque(item[1])

        def w_skip(wr: Writer, item: tuple[int, tuple[bytes, bytes]]) -> None:
            wr.u32(item[0])
            wr.opaque(item[1][0])
            wr.opaque(item[1][1])

        def w_ratchet(wr: Writer, item: tuple[int, int, _Ratchet]) -> None:
            leaf, rtype, r = item
            wr.u32(leaf)
            wr.u8(rtype)
            wr.u64(r.next_generation)
            wr.opaque(r.secret)
            wr.vector(sorted(r.skipped.items()), w_skip)

        w.vector(nodes, w_node)
        w.vector(ratchets, w_ratchet)

    @classmethod
    def decode(cls, r: Reader) -> SecretTree:
        suite = get_cipher_suite(r.u16())
        n_leaves = r.u32()
        max_forward = r.u32()
        max_retained = r.u32()
        if not 1 <= n_leaves <= 1 << 31:
            raise DecodeError(f"secret tree snapshot has an invalid leaf count {n_leaves}")
        depth = _depth(n_leaves)
        width = 2 << depth  # padded array width bound

        def r_node(rd: Reader) -> tuple[int, bytes]:
            index = rd.u32()
            secret = rd.opaque()
            if index >= width or len(secret) != suite.hash_length:
                raise DecodeError("secret tree snapshot has an invalid node")
            return index, secret

        def r_skip(rd: Reader) -> tuple[int, tuple[bytes, bytes]]:
            return rd.u32(), (rd.opaque(), rd.opaque())

        def r_ratchet(rd: Reader) -> tuple[int, int, _Ratchet]:
            leaf = rd.u32()
            rtype = rd.u8()
            if rtype not in (RatchetType.HANDSHAKE, RatchetType.APPLICATION):
                raise DecodeError(f"invalid ratchet type {rtype}")
            gen = rd.u64()
            secret = rd.opaque()
            skipped = dict(rd.vector(r_skip))
            if gen > _MAX_GENERATION + 1 or leaf >= n_leaves:
                raise DecodeError("secret tree snapshot has an out-of-range ratchet")
            return leaf, rtype, _Ratchet(gen, secret, skipped)

        nodes = r.vector(r_node)
        ratchets = r.vector(r_ratchet)

        # Rebuild the persistent tree with mutable scratch nodes, then freeze.
        scratch: dict[tuple[int, int], dict[str, object]] = {}

        def locate(index: int) -> tuple[int, int]:
            level = (~index & (index + 1)).bit_length() - 1  # number of trailing one bits
            pos = index >> (level + 1)
            return depth - level, pos

        for index, secret in nodes:
            dpt, pos = locate(index)
            if dpt < 0:
                raise DecodeError("secret tree snapshot node is above the root")
            scratch.setdefault((dpt, pos), {})["secret"] = secret
        for leaf, rtype, ratchet in ratchets:
            entry = scratch.setdefault((depth, leaf), {})
            pair = entry.setdefault("ratchets", [None, None])
            assert isinstance(pair, list)
            pair[rtype] = ratchet
        # Make sure every ancestor of a stored entry exists.
        for dpt, pos in list(scratch):
            while dpt > 0:
                dpt, pos = dpt - 1, pos >> 1
                scratch.setdefault((dpt, pos), {})

        kept: PMap[int, tuple[_Ratchet, _Ratchet]] = PMap()

        def build(dpt: int, pos: int) -> _Node | None:
            entry = scratch.get((dpt, pos))
            if entry is None:
                return None
            left = build(dpt + 1, 2 * pos) if dpt < depth else None
            right = build(dpt + 1, 2 * pos + 1) if dpt < depth else None
            secret = entry.get("secret")
            pair = entry.get("ratchets")
            if pair is not None:
                assert isinstance(pair, list)
                if pair[0] is None or pair[1] is None:
                    raise DecodeError("secret tree snapshot leaf lacks one of its two ratchets")
                kept[pos] = (pair[0], pair[1])
            assert secret is None or isinstance(secret, bytes)
            return _Node(secret, left, right)

        root = build(0, 0) or _Node()
        tree = cls.__new__(cls)
        tree._suite = suite
        tree._n_leaves = n_leaves
        tree._depth = depth
        tree._root = root
        tree._ratchets = kept
        tree._stamp = object()
        tree.max_forward = max_forward
        tree.max_retained = max_retained
        return tree

    def to_bytes(self) -> bytes:
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretTree:
        return codec.decode(cls, data)
