"""A tiny operation-node format for testing the causal layer without crdt_mls.dag.

``struct { opaque author<V>; uint64 seq; optional<CID> prev; CID parents<V>; uint64 epoch;
opaque payload<V>; } ToyNode`` (TLS encoding); its CID is a raw-codec sha2-256 CIDv1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crdt_mls.dag.cid import cid_for_raw, verify_block
from crdt_mls.errors import DecodeError
from crdt_mls.mls.codec import Reader, Writer


@dataclass(frozen=True, slots=True)
class ToyNode:
    author: bytes
    seq: int
    prev: bytes | None
    parents: tuple[bytes, ...]
    epoch: int = 0
    payload: bytes = b""
    block: bytes = field(init=False, repr=False, compare=False)
    cid: bytes = field(init=False, compare=False)

    def __post_init__(self) -> None:
        w = Writer()
        w.opaque(self.author)
        w.u64(self.seq)
        w.optional(self.prev, Writer.opaque)
        w.vector(self.parents, Writer.opaque)
        w.u64(self.epoch)
        w.opaque(self.payload)
        block = w.getvalue()
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "cid", cid_for_raw(block))

    @property
    def size(self) -> int:
        return len(self.block)

    @classmethod
    def from_block(cls, block: bytes) -> ToyNode:
        r = Reader(block)
        node = cls(r.opaque(), r.u64(), r.optional(Reader.opaque), tuple(r.vector(Reader.opaque)), r.u64(), r.opaque())
        r.finish()
        return node


def encode_toy(node: ToyNode) -> bytes:
    return node.block


def toy_links(node: ToyNode) -> tuple[bytes, ...]:
    links = list(node.parents)
    if node.prev is not None and node.prev not in links:
        links.append(node.prev)
    return tuple(links)


def toy_check(cid: bytes, block: bytes) -> tuple[bytes, ...]:
    """A :data:`~crdt_mls.causal.dagview.BlockChecker` for toy nodes."""
    verify_block(cid, block)
    node = ToyNode.from_block(block)
    if node.cid != cid:  # pragma: no cover - verify_block already checked
        raise DecodeError("toy node CID mismatch")
    return toy_links(node)


class ToyAuthor:
    """Writes one member's log: each node names the previous one and the given parents."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.seq = 0
        self.last: bytes | None = None

    def write(self, parents: tuple[bytes, ...] = (), epoch: int = 0, payload: bytes = b"") -> ToyNode:
        node = ToyNode(self.name, self.seq, self.last, tuple(sorted(set(parents))), epoch, payload)
        self.seq += 1
        self.last = node.cid
        return node
