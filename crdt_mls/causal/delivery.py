"""Causal delivery buffer (docs/causal.md section 1).

Operation nodes arrive in any order, duplicated, or before the nodes they depend on.  A node
is *delivered* (handed to the layers above) only once every CID it depends on -- all of its
``parents`` and its author's ``prev`` -- has been delivered.  Nodes that are not deliverable
yet wait in a bounded buffer; :meth:`CausalBuffer.missing` names the CIDs nobody has
supplied, so the caller can fetch them from a store or a peer.

The buffer is sans-I/O and independent of the node format: any object with the
:class:`CausalNode` attributes works (for example :class:`crdt_mls.causal.nodes.NodeRef`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from crdt_mls.errors import DecodeError, IntegrityError, InvalidArgument, OversizeError
from crdt_mls.mls.codec import Reader, Writer

__all__ = [
    "MAX_CID_BYTES",
    "BufferFullError",
    "CausalBuffer",
    "CausalNode",
    "dependencies",
]

#: Longest CID accepted anywhere in the causal layer (matches ``crdt_mls.dag.cid.MAX_CID_LEN``).
MAX_CID_BYTES = 128

_STATE_VERSION = 1


class CausalNode(Protocol):
    """What the causal layer needs to know about an operation node."""

    @property
    def cid(self) -> bytes: ...

    @property
    def author(self) -> bytes: ...

    @property
    def seq(self) -> int: ...

    @property
    def prev(self) -> bytes | None: ...

    @property
    def parents(self) -> Sequence[bytes]: ...


N = TypeVar("N", bound=CausalNode)


class BufferFullError(OversizeError):
    """Accepting a node would exceed the buffer's configured node or byte limit."""


def dependencies(node: CausalNode) -> frozenset[bytes]:
    """The CIDs a node waits for: its parents and its author's previous node."""
    deps = set(node.parents)
    if node.prev is not None:
        deps.add(node.prev)
    return frozenset(deps)


def _zero(_node: object) -> int:
    return 0


class CausalBuffer(Generic[N]):
    """Hands nodes up in causal order; holds the others until their dependencies arrive.

    ``max_nodes`` and ``max_bytes`` bound what may wait (``size_of`` gives a node's size in
    bytes, for example the length of its block).  A node that is deliverable at once never
    counts against the limits.  :meth:`receive` that would overflow raises
    :class:`BufferFullError` and leaves the buffer unchanged.
    """

    __slots__ = ("_bytes", "_delivered", "_dependents", "_waiting", "max_bytes", "max_nodes", "size_of")

    def __init__(
        self,
        *,
        max_nodes: int = 100_000,
        max_bytes: int = 64 << 20,
        size_of: Callable[[N], int] = _zero,
        delivered: Iterable[bytes] = (),
    ) -> None:
        if max_nodes < 0 or max_bytes < 0:
            raise InvalidArgument("buffer limits must not be negative")
        self.max_nodes = max_nodes
        self.max_bytes = max_bytes
        self.size_of = size_of
        self._delivered: set[bytes] = set(delivered)
        # cid -> (node, the dependencies not delivered yet)
        self._waiting: dict[bytes, tuple[N, set[bytes]]] = {}
        # dependency cid -> cids of waiting nodes that wait for it
        self._dependents: dict[bytes, set[bytes]] = {}
        self._bytes = 0

    # -- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of waiting nodes."""
        return len(self._waiting)

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    def is_delivered(self, cid: bytes) -> bool:
        return cid in self._delivered

    def is_waiting(self, cid: bytes) -> bool:
        return cid in self._waiting

    def knows(self, cid: bytes) -> bool:
        """Whether ``cid`` was delivered or is waiting (a duplicate would be ignored)."""
        return cid in self._delivered or cid in self._waiting

    @property
    def delivered_count(self) -> int:
        return len(self._delivered)

    def waiting_nodes(self) -> list[N]:
        """The waiting nodes, ordered by CID."""
        return [self._waiting[c][0] for c in sorted(self._waiting)]

    def waiting_for(self, cid: bytes) -> frozenset[bytes]:
        """The dependencies the waiting node ``cid`` still waits for."""
        try:
            return frozenset(self._waiting[cid][1])
        except KeyError:
            raise InvalidArgument("no such waiting node") from None

    def waits(self) -> dict[bytes, frozenset[bytes]]:
        """For every waiting node, what it waits for."""
        return {c: frozenset(deps) for c, (_, deps) in self._waiting.items()}

    def missing(self) -> set[bytes]:
        """CIDs some waiting node depends on that are neither delivered nor waiting."""
        return {c for c in self._dependents if c not in self._waiting}

    # -- updates --------------------------------------------------------------------------
    def mark_delivered(self, cids: Iterable[bytes]) -> list[N]:
        """Record nodes delivered out of band (e.g. history loaded from a store).

        Returns the waiting nodes that became deliverable, in causal order.
        """
        out: list[N] = []
        for cid in cids:
            if cid in self._delivered:
                continue
            if cid in self._waiting:
                raise InvalidArgument("cannot mark a waiting node as delivered")
            self._delivered.add(cid)
            out.extend(self._release(cid))
        return out

    def receive(self, node: N) -> list[N]:
        """Take one node; return the nodes now deliverable, in causal order.

        Duplicates return ``[]``.  A node naming itself as a dependency raises
        :class:`IntegrityError`; a node that would have to wait while the buffer is full
        raises :class:`BufferFullError`.  In both cases the buffer is unchanged.
        """
        cid = node.cid
        if not isinstance(cid, bytes) or not 0 < len(cid) <= MAX_CID_BYTES:
            raise DecodeError("node CID must be 1 to 128 bytes")
        if cid in self._delivered or cid in self._waiting:
            return []
        deps = dependencies(node)
        if cid in deps:
            raise IntegrityError("node names itself as a parent or previous node")
        pending = {d for d in deps if d not in self._delivered}
        if pending:
            size = self.size_of(node)
            if len(self._waiting) + 1 > self.max_nodes:
                raise BufferFullError(f"causal buffer full: {len(self._waiting)} nodes wait (limit {self.max_nodes})")
            if self._bytes + size > self.max_bytes:
                raise BufferFullError(
                    f"causal buffer full: {self._bytes} + {size} bytes would exceed the limit of {self.max_bytes}"
                )
            self._waiting[cid] = (node, pending)
            self._bytes += size
            for d in pending:
                self._dependents.setdefault(d, set()).add(cid)
            return []
        self._delivered.add(cid)
        return [node, *self._release(cid)]

    def _release(self, first: bytes) -> list[N]:
        """Deliver, breadth first, every waiting node unblocked by delivering ``first``."""
        out: list[N] = []
        queue: deque[bytes] = deque([first])
        while queue:
            done = queue.popleft()
            children = self._dependents.pop(done, None)
            if not children:
                continue
            for child in sorted(children):
                node, pending = self._waiting[child]
                pending.discard(done)
                if not pending:
                    del self._waiting[child]
                    self._bytes -= self.size_of(node)
                    self._delivered.add(child)
                    out.append(node)
                    queue.append(child)
        return out

    # -- persistence ----------------------------------------------------------------------
    def to_bytes(self, encode_node: Callable[[N], bytes]) -> bytes:
        """Serialize delivered CIDs and waiting nodes (``encode_node`` encodes one node).

        ``struct { uint8 version = 1; opaque delivered<V><V>; opaque waiting<V><V>; }``
        with both lists sorted.
        """
        w = Writer()
        w.u8(_STATE_VERSION)
        w.vector(sorted(self._delivered), Writer.opaque)
        w.vector([encode_node(self._waiting[c][0]) for c in sorted(self._waiting)], Writer.opaque)
        return w.getvalue()

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        decode_node: Callable[[bytes], N],
        *,
        max_nodes: int = 100_000,
        max_bytes: int = 64 << 20,
        size_of: Callable[[N], int] = _zero,
    ) -> CausalBuffer[N]:
        """Restore a buffer saved by :meth:`to_bytes`; malformed input raises DecodeError."""
        r = Reader(data)
        version = r.u8()
        if version != _STATE_VERSION:
            raise DecodeError(f"unknown causal buffer state version {version}")
        delivered = r.vector(lambda rr: rr.opaque(MAX_CID_BYTES))
        blobs = r.vector(Reader.opaque)
        r.finish()
        if delivered != sorted(set(delivered)):
            raise DecodeError("delivered CIDs are not sorted and unique")
        buf: CausalBuffer[N] = cls(max_nodes=max_nodes, max_bytes=max_bytes, size_of=size_of, delivered=delivered)
        for blob in blobs:
            node = decode_node(blob)
            if buf.knows(node.cid):
                raise DecodeError("duplicate waiting node in saved state")
            if buf.receive(node):
                raise DecodeError("saved state holds a waiting node that is deliverable")
        return buf
