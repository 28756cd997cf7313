"""The secret tree and per-sender hash ratchets (RFC 9420 section 9).

One `SecretTree` exists per epoch, rooted at the epoch's ``encryption_secret``.  Node
secrets are derived lazily along the path from the root to a sender's leaf (O(log n)
work and storage per sender) and every consumed value is deleted (section 9.2): a parent
secret once its children exist, a leaf secret once its two ratchets exist, a ratchet
secret once the next one is derived, a key/nonce once it was used.

Out-of-order delivery: a receiver may ratchet forward at most ``max_forward`` generations
past the next expected one (bounding the work a hostile ``generation = 0xffffffff`` can
cause, section 15.3) and keeps at most ``max_retained`` skipped keys per ratchet.

Receiving is two-phase so a failed decryption leaves the tree unchanged:
`SecretTree.prepare_key` computes a key without touching state and returns a `PendingKey`;
`SecretTree.commit` applies the deletions after the AEAD succeeded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from crdt_mls.errors import DecodeError, InvalidArgument, InvalidState, ProtocolError, ReplayError
from crdt_mls.mls import codec, treemath
from crdt_mls.mls.codec import Reader, Writer
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
    """State of one hash ratchet: the secret of ``next_generation`` and retained skipped keys."""

    next_generation: int
    secret: bytes = field(repr=False)
    skipped: dict[int, tuple[bytes, bytes]] = field(repr=False, default_factory=dict)


@dataclass(frozen=True, slots=True)
class PendingKey:
    """A derived key whose consumption has not been applied yet (see `SecretTree.commit`)."""

    leaf: int
    ratchet_type: RatchetType
    generation: int
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    _version: int = field(repr=False)
    _node_removed: int | None = field(repr=False)
    _node_added: tuple[tuple[int, bytes], ...] = field(repr=False)
    _ratchets: tuple[tuple[tuple[int, int], _Ratchet], ...] = field(repr=False)


class SecretTree:
    """Per-epoch secret tree with lazily derived, forward-secure sender ratchets (RFC 9420 section 9)."""

    __slots__ = ("_n_leaves", "_nodes", "_ratchets", "_suite", "_version", "max_forward", "max_retained")

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
        self._nodes: dict[int, bytes] = {treemath.root(n_leaves): bytes(encryption_secret)}
        self._ratchets: dict[tuple[int, int], _Ratchet] = {}
        self._version = 0
        self.max_forward = max_forward
        self.max_retained = max_retained

    def __repr__(self) -> str:
        return (
            f"SecretTree(suite={self._suite.suite_id}, n_leaves={self._n_leaves}, "
            f"stored_nodes={len(self._nodes)}, ratchets={len(self._ratchets)})"
        )

    @property
    def n_leaves(self) -> int:
        return self._n_leaves

    @property
    def suite(self) -> CipherSuite:
        return self._suite

    # -- derivation -------------------------------------------------------------------------
    def _leaf_ratchets(
        self, leaf: int
    ) -> tuple[int | None, tuple[tuple[int, bytes], ...], dict[tuple[int, int], _Ratchet]]:
        """Derive (without storing) the path to ``leaf``: removed node, added siblings, new ratchets."""
        suite = self._suite
        nh = suite.hash_length
        target = treemath.leaf_to_node(leaf)
        x = treemath.root(self._n_leaves)
        path: list[int] = []
        while True:
            path.append(x)
            if x in self._nodes or x == target:
                break
            x = treemath.left(x) if target < x else treemath.right(x)
        start = path[-1]
        secret = self._nodes.get(start)
        if secret is None:
            raise InvalidState(f"secret tree has no secret left for leaf {leaf}")
        added: list[tuple[int, bytes]] = []
        x = start
        while x != target:
            left, right = treemath.left(x), treemath.right(x)
            ls = suite.expand_with_label(secret, "tree", b"left", nh)
            rs = suite.expand_with_label(secret, "tree", b"right", nh)
            if target < x:
                added.append((right, rs))
                x, secret = left, ls
            else:
                added.append((left, ls))
                x, secret = right, rs
        ratchets = {(leaf, int(t)): _Ratchet(0, suite.expand_with_label(secret, t.label, b"", nh)) for t in RatchetType}
        return start, tuple(added), ratchets

    def _key_nonce(self, secret: bytes, generation: int) -> tuple[bytes, bytes]:
        suite = self._suite
        key = suite.derive_tree_secret(secret, "key", generation, suite.aead_key_length)
        nonce = suite.derive_tree_secret(secret, "nonce", generation, suite.aead_nonce_length)
        return key, nonce

    def _next_secret(self, secret: bytes, generation: int) -> bytes:
        return self._suite.derive_tree_secret(secret, "secret", generation, self._suite.hash_length)

    def _check_leaf(self, leaf: int) -> None:
        if not 0 <= leaf < self._n_leaves:
            raise ProtocolError(f"leaf index {leaf} is outside the tree of {self._n_leaves} leaves")

    def _current(
        self, leaf: int, rtype: RatchetType
    ) -> tuple[_Ratchet, int | None, tuple[tuple[int, bytes], ...], dict[tuple[int, int], _Ratchet]]:
        ratchet = self._ratchets.get((leaf, int(rtype)))
        if ratchet is not None:
            return ratchet, None, (), {}
        removed, added, new = self._leaf_ratchets(leaf)
        return new[(leaf, int(rtype))], removed, added, new

    def prepare_key(self, leaf: int, ratchet_type: RatchetType, generation: int) -> PendingKey:
        """Key and nonce for receiving ``generation`` from ``leaf``; state is not changed.

        Raises `ProtocolError` for a leaf outside the tree or a generation more than
        ``max_forward`` ahead, `ReplayError` for a generation already used or discarded.
        """
        rtype = RatchetType(ratchet_type)
        self._check_leaf(leaf)
        if not 0 <= generation <= _MAX_GENERATION:
            raise ProtocolError(f"generation {generation} out of range")
        ratchet, removed, added, new = self._current(leaf, rtype)
        rkey = (leaf, int(rtype))
        if generation < ratchet.next_generation:
            kn = ratchet.skipped.get(generation)
            if kn is None:
                raise ReplayError(f"generation {generation} of leaf {leaf} was already used or discarded")
            skipped = dict(ratchet.skipped)
            del skipped[generation]
            updated = _Ratchet(ratchet.next_generation, ratchet.secret, skipped)
            new[rkey] = updated
            return PendingKey(leaf, rtype, generation, kn[0], kn[1], self._version, removed, added, tuple(new.items()))
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
        new[rkey] = _Ratchet(generation + 1, next_secret, skipped)
        return PendingKey(leaf, rtype, generation, key, nonce, self._version, removed, added, tuple(new.items()))

    def commit(self, pending: PendingKey) -> None:
        """Apply the deletions of a key returned by `prepare_key` (after it decrypted successfully)."""
        if pending._version != self._version:
            raise InvalidState("the secret tree changed since this key was prepared")
        if pending._node_removed is not None:
            del self._nodes[pending._node_removed]
        for node, secret in pending._node_added:
            self._nodes[node] = secret
        for rkey, ratchet in pending._ratchets:
            self._ratchets[rkey] = ratchet
        self._version += 1

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
        ratchet, _, _, _ = self._current(leaf, rtype)
        if ratchet.next_generation > _MAX_GENERATION or (ratchet.next_generation > 0 and not ratchet.secret):
            raise InvalidState(f"the {rtype.label} ratchet of leaf {leaf} is exhausted")
        return self.key_for(leaf, rtype, ratchet.next_generation)

    def next_generation(self, leaf: int, ratchet_type: RatchetType) -> int:
        """The generation the next `next_key` call for ``leaf`` would return."""
        self._check_leaf(leaf)
        ratchet = self._ratchets.get((leaf, int(RatchetType(ratchet_type))))
        return 0 if ratchet is None else ratchet.next_generation

    # -- snapshots --------------------------------------------------------------------------
    def copy(self) -> SecretTree:
        """An independent copy (values are immutable, so a shallow copy of the maps suffices)."""
        other = SecretTree.__new__(SecretTree)
        other._suite = self._suite
        other._n_leaves = self._n_leaves
        other._nodes = dict(self._nodes)
        other._ratchets = dict(self._ratchets)
        other._version = 0
        other.max_forward = self.max_forward
        other.max_retained = self.max_retained
        return other

    def encode(self, w: Writer) -> None:
        """Private snapshot encoding (contains secrets; store it encrypted)."""
        w.u16(self._suite.suite_id)
        w.u32(self._n_leaves)
        w.u32(self.max_forward)
        w.u32(self.max_retained)

        def node(wr: Writer, item: tuple[int, bytes]) -> None:
            wr.u32(item[0])
            wr.opaque(item[1])

        def skip(wr: Writer, item: tuple[int, tuple[bytes, bytes]]) -> None:
            wr.u32(item[0])
            wr.opaque(item[1][0])
            wr.opaque(item[1][1])

        def ratchet(wr: Writer, item: tuple[tuple[int, int], _Ratchet]) -> None:
            (leaf, rtype), r = item
            wr.u32(leaf)
            wr.u8(rtype)
            wr.u64(r.next_generation)
            wr.opaque(r.secret)
            wr.vector(sorted(r.skipped.items()), skip)

        w.vector(sorted(self._nodes.items()), node)
        w.vector(sorted(self._ratchets.items()), ratchet)

    @classmethod
    def decode(cls, r: Reader) -> SecretTree:
        suite = get_cipher_suite(r.u16())
        n_leaves = r.u32()
        max_forward = r.u32()
        max_retained = r.u32()

        def node(rd: Reader) -> tuple[int, bytes]:
            return rd.u32(), rd.opaque()

        def skip(rd: Reader) -> tuple[int, tuple[bytes, bytes]]:
            return rd.u32(), (rd.opaque(), rd.opaque())

        def ratchet(rd: Reader) -> tuple[tuple[int, int], _Ratchet]:
            leaf = rd.u32()
            raw_type = rd.u8()
            if raw_type not in (RatchetType.HANDSHAKE, RatchetType.APPLICATION):
                raise DecodeError(f"invalid ratchet type {raw_type}")
            gen = rd.u64()
            secret = rd.opaque()
            skipped = dict(rd.vector(skip))
            if gen > _MAX_GENERATION + 1 or leaf >= n_leaves:
                raise DecodeError("secret tree snapshot has an out-of-range ratchet")
            return (leaf, raw_type), _Ratchet(gen, secret, skipped)

        if not 1 <= n_leaves <= 1 << 31:
            raise DecodeError(f"secret tree snapshot has an invalid leaf count {n_leaves}")
        tree = cls.__new__(cls)
        tree._suite = suite
        tree._n_leaves = n_leaves
        tree._nodes = dict(r.vector(node))
        tree._ratchets = dict(r.vector(ratchet))
        tree._version = 0
        tree.max_forward = max_forward
        tree.max_retained = max_retained
        return tree

    def to_bytes(self) -> bytes:
        return codec.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretTree:
        return codec.decode(cls, data)
