"""Causal delivery buffer (docs/causal.md section 1).

Operation nodes arrive in any order, duplicated, or before the nodes they depend on.  A node
is *delivered* (handed to the layers above) only once every CID it depends on -- all of its
``parents`` and its author's ``prev`` -- has been delivered.  Nodes that are not deliverable
yet wait in a bounded buffer; :meth:`CausalBuffer.missing` names the CIDs nobody has
supplied, so the caller can fetch them from a store or a peer.

The buffer is sans-I/O and independent of the node format: any object with the
:class:`CausalNode` attributes works (for example :class:`crdt_mls.causal.nodes.NodeRef`).

A *gate* (optional) adds dependencies that are not nodes: just before a node whose parents
are all delivered would be delivered, ``gate(node)`` names the blocks (e.g. chunk blocks of
a large payload, docs/schema.md) that the consumer still lacks to process it; the node then
waits for them like for a parent (they appear in :meth:`CausalBuffer.missing`) and
:meth:`CausalBuffer.available` reports their arrival.  The gate may depend on the consumer's
state, so gated consumers use the lazy forms (:meth:`CausalBuffer.receive_iter`,
:meth:`CausalBuffer.available`) and process each node before asking for the next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
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
#: state version with the blocks each gated waiting node waits for
_STATE_VERSION_GATED = 2


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


#: ``gate(node) -> CIDs of blocks the consumer still needs before it can process ``node``
Gate = Callable[[N], Iterable[bytes]]


class CausalBuffer(Generic[N]):
    """Hands nodes up in causal order; holds the others until their dependencies arrive.

    ``max_nodes`` and ``max_bytes`` bound what may wait (``size_of`` gives a node's size in
    bytes, for example the length of its block).  A node that is deliverable at once never
    counts against the limits.  :meth:`receive` that would overflow raises
    :class:`BufferFullError` and leaves the buffer unchanged.
    """

    __slots__ = (
        "_bytes",
        "_delivered",
        "_dependents",
        "_tx",
        "_tx_waiting",
        "_waiting",
        "gate",
        "max_bytes",
        "max_nodes",
        "size_of",
    )

    def __init__(
        self,
        *,
        max_nodes: int = 100_000,
        max_bytes: int = 64 << 20,
        size_of: Callable[[N], int] = _zero,
        delivered: Iterable[bytes] = (),
        gate: Gate[N] | None = None,
    ) -> None:
        if max_nodes < 0 or max_bytes < 0:
            raise InvalidArgument("buffer limits must not be negative")
        self.max_nodes = max_nodes
        self.max_bytes = max_bytes
        self.size_of = size_of
        self.gate: Gate[N] | None = gate
        self._delivered: set[bytes] = set(delivered)
        # cid -> (node, the dependencies not delivered yet)
        self._waiting: dict[bytes, tuple[N, set[bytes]]] = {}
        # dependency cid -> cids of waiting nodes that wait for it
        self._dependents: dict[bytes, set[bytes]] = {}
        self._bytes = 0
        # an open transaction: nodes delivered since `begin`, and the waiting state at `begin`
        self._tx: list[bytes] | None = None
        self._tx_waiting: tuple[dict[bytes, tuple[N, set[bytes]]], dict[bytes, set[bytes]], int] | None = None

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
        """CIDs some waiting node depends on that are neither delivered nor waiting (parents,
        and blocks a gate asked for)."""
        return {c for c in self._dependents if c not in self._waiting}

    def _gated(self, node: N) -> bool:
        """Whether a waiting node waits only for gate blocks (its parents are all delivered)."""
        return all(d in self._delivered for d in dependencies(node))

    # -- transactions ---------------------------------------------------------------------
    def begin(self) -> None:
        """Start recording changes, so that :meth:`rollback` can undo them (cost: a copy of the
        waiting nodes' bookkeeping, not of the delivered history)."""
        self._tx = []
        self._tx_waiting = (
            {c: (n, set(p)) for c, (n, p) in self._waiting.items()},
            {c: set(d) for c, d in self._dependents.items()},
            self._bytes,
        )

    def commit(self) -> list[bytes]:
        """End the transaction; returns the CIDs delivered during it, in delivery order."""
        out = self._tx or []
        self._tx = self._tx_waiting = None
        return out

    def journal(self) -> list[bytes]:
        """The CIDs delivered in the open transaction so far, in order (``[]`` without one)."""
        return list(self._tx or ())

    def rollback(self) -> None:
        """Undo everything since :meth:`begin` (no-op without a transaction)."""
        if self._tx is None or self._tx_waiting is None:
            return
        for cid in self._tx:
            self._delivered.discard(cid)
        self._waiting, self._dependents, self._bytes = self._tx_waiting
        self._tx = self._tx_waiting = None

    def _mark(self, cid: bytes) -> None:
        if cid not in self._delivered:
            self._delivered.add(cid)
            if self._tx is not None:
                self._tx.append(cid)

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
            self._mark(cid)
            out.extend(self._release(cid))
        return out

    def receive(self, node: N) -> list[N]:
        """Take one node; return the nodes now deliverable, in causal order.

        Duplicates return ``[]``.  A node naming itself as a dependency raises
        :class:`IntegrityError`; a node that would have to wait while the buffer is full
        raises :class:`BufferFullError`.  In both cases the buffer is unchanged.  With a gate
        whose answer depends on the consumer's state use :meth:`receive_iter`.
        """
        return list(self.receive_iter(node))

    def receive_iter(self, node: N) -> Iterator[N]:
        """:meth:`receive`, lazily: each node is delivered (and the gate of the next one asked)
        only when the consumer asks for it, so the consumer processes a node before the gate
        of its descendants runs.  The checks that raise run before the first item; the
        iterator must be exhausted."""
        cid = node.cid
        if not isinstance(cid, bytes) or not 0 < len(cid) <= MAX_CID_BYTES:
            raise DecodeError("node CID must be 1 to 128 bytes")
        if cid in self._delivered or cid in self._waiting:
            return iter(())
        deps = dependencies(node)
        if cid in deps:
            raise IntegrityError("node names itself as a parent or previous node")
        pending = {d for d in deps if d not in self._delivered}
        if not pending and self.gate is not None:
            pending = {b for b in self.gate(node) if b not in self._delivered}
        if pending:
            self._wait(node, pending)
            return iter(())
        self._mark(cid)
        return self._deliver_from(node)

    def available(self, cids: Iterable[bytes]) -> Iterator[N]:
        """Blocks a gate asked for have arrived: deliver, lazily, the nodes they unblock (their
        gate is asked again first).  The iterator must be exhausted."""
        for cid in list(cids):
            children = self._dependents.pop(cid, None)
            if not children:
                continue
            for child in sorted(children):
                entry = self._waiting.get(child)
                if entry is None:
                    continue
                pending = entry[1]
                pending.discard(cid)
                if not pending:
                    yield from self._ready(child)

    def _wait(self, node: N, pending: set[bytes]) -> None:
        size = self.size_of(node)
        if len(self._waiting) + 1 > self.max_nodes:
            raise BufferFullError(f"causal buffer full: {len(self._waiting)} nodes wait (limit {self.max_nodes})")
        if self._bytes + size > self.max_bytes:
            raise BufferFullError(
                f"causal buffer full: {self._bytes} + {size} bytes would exceed the limit of {self.max_bytes}"
            )
        self._waiting[node.cid] = (node, pending)
        self._bytes += size
        for d in pending:
            self._dependents.setdefault(d, set()).add(node.cid)

    def _held(self, cid: bytes, node: N, pending: set[bytes]) -> bool:
        """Ask the gate about a node whose parents are delivered; if it names blocks still
        absent, the node keeps waiting for them (``True``)."""
        if self.gate is None:
            return False
        blocks = {b for b in self.gate(node) if b not in self._delivered}
        if not blocks:
            return False
        pending.update(blocks)
        for d in blocks:
            self._dependents.setdefault(d, set()).add(cid)
        return True

    def _ready(self, cid: bytes) -> Iterator[N]:
        """A waiting node's parents (and earlier gate blocks) are all here: deliver it and
        what it unblocks, unless the gate names more blocks to wait for."""
        node, pending = self._waiting[cid]
        if self._held(cid, node, pending):
            return
        del self._waiting[cid]
        self._bytes -= self.size_of(node)
        self._mark(cid)
        yield node
        yield from self._deliver_from_cid(cid)

    def _deliver_from(self, node: N) -> Iterator[N]:
        """Yield ``node`` (already marked delivered), then what it unblocks."""
        yield node
        yield from self._deliver_from_cid(node.cid)

    def _release(self, first: bytes) -> list[N]:
        """Deliver, breadth first, every waiting node unblocked by delivering ``first``."""
        return list(self._deliver_from_cid(first))

    def _deliver_from_cid(self, first: bytes) -> Iterator[N]:
        """Breadth first from the delivered ``first``: every waiting node it unblocks, children
        in CID order (docs/causal.md section 1)."""
        queue: deque[bytes] = deque([first])
        while queue:
            done = queue.popleft()
            children = self._dependents.pop(done, None)
            if not children:
                continue
            for child in sorted(children):
                entry = self._waiting.get(child)
                if entry is None:
                    continue
                n, pending = entry
                pending.discard(done)
                if pending or self._held(child, n, pending):
                    continue
                del self._waiting[child]
                self._bytes -= self.size_of(n)
                self._mark(child)
                yield n
                queue.append(child)

    # -- persistence ----------------------------------------------------------------------
    def _w_waiting(self, w: Writer, encode_node: Callable[[N], bytes], gated: bool, waiting: bool = True) -> None:
        if not waiting:
            w.vector([], Writer.opaque)
            return

        def entry(ww: Writer, c: bytes) -> None:
            node, pending = self._waiting[c]
            ww.opaque(encode_node(node))
            ww.vector(sorted(pending) if self._gated(node) else [], Writer.opaque)

        if gated:
            w.vector(sorted(self._waiting), entry)
        else:
            w.vector([encode_node(self._waiting[c][0]) for c in sorted(self._waiting)], Writer.opaque)

    def to_bytes(self, encode_node: Callable[[N], bytes], *, waiting: bool = True) -> bytes:
        """Serialize delivered CIDs and waiting nodes (``encode_node`` encodes one node;
        ``waiting=False``: the delivered CIDs only, with an empty waiting list).

        ``struct { uint8 version = 1; opaque delivered<V><V>; opaque waiting<V><V>; }``
        with both lists sorted; when some node waits for gate blocks, version 2 where each
        waiting entry is ``struct { opaque node<V>; opaque blocks<V><V>; }`` (blocks empty
        unless the node's parents are all delivered).
        """
        gated = waiting and any(self._gated(n) for n, _ in self._waiting.values())
        w = Writer()
        w.u8(_STATE_VERSION_GATED if gated else _STATE_VERSION)
        w.vector(sorted(self._delivered), Writer.opaque)
        self._w_waiting(w, encode_node, gated, waiting)
        return w.getvalue()

    def waiting_to_bytes(self, encode_node: Callable[[N], bytes]) -> bytes:
        """Only the waiting nodes (version 2 entries), for incremental persistence: the
        delivered set is then kept by the caller (see :meth:`restore_waiting`)."""
        w = Writer()
        self._w_waiting(w, encode_node, True)
        return w.getvalue()

    def _r_waiting(self, r: Reader, decode_node: Callable[[bytes], N], gated: bool) -> None:
        if gated:
            entries = r.vector(lambda rr: (rr.opaque(), rr.vector(lambda x: x.opaque(MAX_CID_BYTES))))
        else:
            entries = [(b, []) for b in r.vector(Reader.opaque)]
        for blob, blocks in entries:
            node = decode_node(blob)
            if self.knows(node.cid):
                raise DecodeError("duplicate waiting node in saved state")
            deps = dependencies(node)
            if node.cid in deps:
                raise DecodeError("saved waiting node names itself as a dependency")
            pending = {d for d in deps if d not in self._delivered}
            if not pending:
                pending = {b for b in blocks if b not in self._delivered}
            elif blocks:
                raise DecodeError("saved waiting node waits for blocks before its parents")
            if not pending:
                raise DecodeError("saved state holds a waiting node that is deliverable")
            self._wait(node, pending)

    def restore_waiting(self, data: bytes, decode_node: Callable[[bytes], N]) -> None:
        """Put back the waiting nodes saved by :meth:`waiting_to_bytes` (the delivered set
        must already be restored); malformed or inconsistent input raises DecodeError."""
        if self._waiting:
            raise InvalidArgument("restore_waiting needs a buffer with no waiting node")
        r = Reader(data)
        self._r_waiting(r, decode_node, True)
        r.finish()

    def mark_delivered_silently(self, cid: bytes) -> None:
        """Record a node as delivered without releasing waiting nodes (replaying a journal of
        deliveries before :meth:`restore_waiting`)."""
        self._mark(cid)

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        decode_node: Callable[[bytes], N],
        *,
        max_nodes: int = 100_000,
        max_bytes: int = 64 << 20,
        size_of: Callable[[N], int] = _zero,
        gate: Gate[N] | None = None,
    ) -> CausalBuffer[N]:
        """Restore a buffer saved by :meth:`to_bytes`; malformed input raises DecodeError."""
        r = Reader(data)
        version = r.u8()
        if version not in (_STATE_VERSION, _STATE_VERSION_GATED):
            raise DecodeError(f"unknown causal buffer state version {version}")
        delivered = r.vector(lambda rr: rr.opaque(MAX_CID_BYTES))
        if delivered != sorted(set(delivered)):
            raise DecodeError("delivered CIDs are not sorted and unique")
        buf: CausalBuffer[N] = cls(
            max_nodes=max_nodes, max_bytes=max_bytes, size_of=size_of, delivered=delivered, gate=gate
        )
        buf._r_waiting(r, decode_node, version == _STATE_VERSION_GATED)
        r.finish()
        return buf
