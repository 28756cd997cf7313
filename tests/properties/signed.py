"""Writers of real signed operation nodes (crdt_mls.dag.node) for causal-layer tests."""

from __future__ import annotations

import nacl.signing

from crdt_mls.causal import NodeRef
from crdt_mls.dag import NodeFields, NodeKind, sign_node

GROUP = bytes(range(32))


class SignedAuthor:
    """One member writing its own log of signed nodes."""

    def __init__(self, index: int, group: bytes = GROUP) -> None:
        self.key = nacl.signing.SigningKey(bytes([index + 1]) * 32)
        self.group = group
        self.seq = 0
        self.last: bytes | None = None

    @property
    def name(self) -> bytes:
        return bytes(self.key.verify_key)

    def write(self, parents: tuple[bytes, ...] = (), epoch: bytes = b"", payload: bytes = b"") -> NodeRef:
        kind = NodeKind.APPLICATION
        fields = NodeFields(kind, self.group, self.seq, self.last, tuple(parents), epoch, payload)
        ref = NodeRef.from_node(sign_node(fields, self.key))
        self.seq += 1
        self.last = ref.cid
        return ref

    def fork(self, seq: int, prev: bytes | None, payload: bytes) -> NodeRef:
        """A second node with an already used sequence number (equivocation)."""
        fields = NodeFields(NodeKind.APPLICATION, self.group, seq, prev, (), b"", payload)
        return NodeRef.from_node(sign_node(fields, self.key))
