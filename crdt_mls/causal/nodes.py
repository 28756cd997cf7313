"""Adapters between signed operation nodes (:mod:`crdt_mls.dag.node`) and the causal layer.

:class:`NodeRef` pairs an :class:`~crdt_mls.dag.node.OpNode` with its CID and block size,
which is what :class:`~crdt_mls.causal.delivery.CausalBuffer` and
:class:`~crdt_mls.causal.logs.MemberLogs` need; :func:`opnode_checker` is the
:data:`~crdt_mls.causal.dagview.BlockChecker` that sync uses to verify fetched blocks
(CID, canonical DAG-CBOR, schema, group tag, signature) and read their links.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdt_mls.causal.dagview import BlockChecker
from crdt_mls.dag.chunks import MAX_CHUNK_SIZE
from crdt_mls.dag.cid import cid_for_block, cid_for_raw
from crdt_mls.dag.node import RAW_SHA256_PREFIX, OpNode, decode_node, encode_node
from crdt_mls.errors import IntegrityError, OversizeError

__all__ = ["NodeRef", "decode_ref", "encode_ref", "opnode_checker", "opnode_links"]


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A verified operation node with its CID (satisfies ``CausalNode``)."""

    cid: bytes
    node: OpNode
    size: int

    @property
    def author(self) -> bytes:
        return self.node.author

    @property
    def seq(self) -> int:
        return self.node.seq

    @property
    def prev(self) -> bytes | None:
        return self.node.prev

    @property
    def parents(self) -> tuple[bytes, ...]:
        return self.node.parents

    @property
    def epoch(self) -> bytes:
        return self.node.epoch

    @property
    def chunks(self) -> tuple[bytes, ...]:
        """The chunk blocks the node's payload refers to (schema version 2)."""
        return self.node.chunks

    @classmethod
    def from_node(cls, node: OpNode) -> NodeRef:
        cid, block = encode_node(node)
        return cls(cid, node, len(block))

    @classmethod
    def from_block(cls, cid: bytes, block: bytes, *, group: bytes | None = None, verify: bool = True) -> NodeRef:
        """Decode a block fetched under ``cid`` (see ``decode_node``).  ``verify=False`` skips
        only the signature check, for blocks already verified when they entered the store."""
        return cls(cid, decode_node(block, cid, group=group, verify_signature=verify), len(block))


def opnode_links(node: OpNode) -> tuple[bytes, ...]:
    """The CIDs a node links to: its parents, then its ``prev`` if not among them, then its
    chunk blocks (schema version 2) not already named.  Sync keeps stores closed under these
    links, so a store that holds a node also holds its chunks."""
    links = node.parents
    if node.prev is not None and node.prev not in node.parents:
        links = (*links, node.prev)
    if node.chunks:
        seen = set(links)
        extra = []
        for c in node.chunks:
            if c not in seen:
                seen.add(c)
                extra.append(c)
        links = (*links, *extra)
    return links


def opnode_checker(group: bytes | None = None) -> BlockChecker:
    """A block checker for sync: verifies a node block fully and returns its links; a raw
    block (a chunk, codec 0x55) is checked against its CID and size and links nothing."""

    def check(cid: bytes, block: bytes) -> tuple[bytes, ...]:
        if cid[:4] == RAW_SHA256_PREFIX:
            if len(block) > MAX_CHUNK_SIZE:
                raise OversizeError(f"chunk block of {len(block)} bytes exceeds {MAX_CHUNK_SIZE}")
            if cid_for_raw(block) != cid:
                raise IntegrityError("chunk block does not match its CID")
            return ()
        return opnode_links(decode_node(block, cid, group=group))

    return check


def encode_ref(ref: NodeRef) -> bytes:
    """The block of a node (for ``CausalBuffer.to_bytes`` / ``MemberLogs.to_bytes``)."""
    return encode_node(ref.node)[1]


def decode_ref(block: bytes) -> NodeRef:
    """Inverse of :func:`encode_ref`; verifies the signature."""
    return NodeRef(cid_for_block(block), decode_node(block), len(block))
