"""Per-member append-only logs and equivocation detection (docs/causal.md section 2).

Every member appends to its own log: the node with sequence number ``s`` names the
member's node ``s - 1`` as ``prev`` (the first node has ``seq == first_seq`` and no
``prev``).  :class:`MemberLogs` receives nodes in causal order (from a
:class:`~crdt_mls.causal.delivery.CausalBuffer`) and keeps, per author, the contiguous
delivered prefix and its tail.  Two different nodes with one author and sequence number,
or a node whose ``prev`` is not the author's previous node, is *equivocation*: the
evidence (both CIDs) is kept and every later node of that author is refused.

:class:`CausalReceiver` combines the buffer and the logs: nodes in, (delivered nodes,
events) out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from crdt_mls.causal.delivery import MAX_CID_BYTES, CausalBuffer, CausalNode
from crdt_mls.errors import DecodeError, EquivocationError, InvalidArgument, ProtocolError, UnknownParentError
from crdt_mls.mls.codec import Reader, Writer

__all__ = [
    "CausalReceiver",
    "Delivery",
    "Equivocation",
    "EquivocationDetected",
    "Gap",
    "LogError",
    "LogGapError",
    "MemberLogs",
    "Refused",
]

N = TypeVar("N", bound=CausalNode)
E = TypeVar("E")

_STATE_VERSION = 1
_REASONS = ("fork", "prev-mismatch")


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Evidence that ``author`` forked its log at ``seq``.

    ``reason`` is ``"fork"`` (``first`` is the logged node with that sequence number,
    ``second`` another node with the same author and sequence number) or
    ``"prev-mismatch"`` (``first`` is the author's tail, ``second`` a node with the next
    sequence number whose ``prev`` is not that tail).
    """

    author: bytes
    seq: int
    first: bytes
    second: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A delivered node that the logs refused; it is not handed up."""

    cid: bytes
    author: bytes
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers ``first..last`` (inclusive) of ``author`` are known to exist but missing."""

    author: bytes
    first: int
    last: int


class EquivocationDetected(EquivocationError):
    """An author's log forked; ``evidence`` holds both CIDs."""

    def __init__(self, message: str, evidence: Equivocation) -> None:
        super().__init__(message)
        self.evidence = evidence


class LogError(ProtocolError):
    """A node breaks the per-member log rules (bad first node, sequence number)."""


class LogGapError(UnknownParentError):
    """A node skips sequence numbers of its author's log (its predecessor is not delivered)."""


@dataclass(slots=True)
class _AuthorLog(Generic[N]):
    cids: list[bytes]
    tail: N
    equivocation: Equivocation | None = None


def _short(cid: bytes) -> str:
    return cid[-6:].hex()


class MemberLogs(Generic[N]):
    """The delivered prefix of every member's log, its tail, and equivocation evidence."""

    __slots__ = ("_logs", "_refused_authors", "_tx", "first_seq")

    def __init__(self, *, first_seq: int = 0) -> None:
        if first_seq < 0:
            raise InvalidArgument("first_seq must not be negative")
        self.first_seq = first_seq
        self._logs: dict[bytes, _AuthorLog[N]] = {}
        # authors that equivocated before their first logged node could be kept
        self._refused_authors: dict[bytes, Equivocation] = {}
        # an open transaction: each touched author's log as it was (None: the author was new)
        self._tx: dict[bytes, tuple[int, N, Equivocation | None] | None] | None = None

    # -- transactions ---------------------------------------------------------------------
    def begin(self) -> None:
        """Start recording which logs change, so that :meth:`rollback` can undo it."""
        self._tx = {}

    def commit(self) -> None:
        self._tx = None

    def rollback(self) -> None:
        """Undo every change since :meth:`begin` (no-op without a transaction)."""
        if self._tx is None:
            return
        for author, before in self._tx.items():
            if before is None:
                self._logs.pop(author, None)
            else:
                n, tail, ev = before
                log = self._logs[author]
                del log.cids[n:]
                log.tail, log.equivocation = tail, ev
        self._tx = None

    def _touch(self, author: bytes) -> None:
        if self._tx is not None and author not in self._tx:
            log = self._logs.get(author)
            self._tx[author] = None if log is None else (len(log.cids), log.tail, log.equivocation)

    # -- queries --------------------------------------------------------------------------
    def authors(self) -> list[bytes]:
        return sorted(self._logs)

    def length(self, author: bytes) -> int:
        """Number of delivered nodes of ``author`` (0 if none)."""
        log = self._logs.get(author)
        return 0 if log is None else len(log.cids)

    def next_seq(self, author: bytes) -> int:
        """The sequence number ``author``'s next node must carry."""
        return self.first_seq + self.length(author)

    def cid_at(self, author: bytes, seq: int) -> bytes | None:
        log = self._logs.get(author)
        i = seq - self.first_seq
        if log is None or not 0 <= i < len(log.cids):
            return None
        return log.cids[i]

    def log(self, author: bytes) -> tuple[bytes, ...]:
        """The CIDs of ``author``'s contiguous delivered prefix, in sequence order."""
        log = self._logs.get(author)
        return () if log is None else tuple(log.cids)

    def tail(self, author: bytes) -> N | None:
        """The latest delivered node of ``author``."""
        log = self._logs.get(author)
        return None if log is None else log.tail

    def tails(self) -> dict[bytes, N]:
        """The latest delivered node of every author."""
        return {a: log.tail for a, log in self._logs.items()}

    def equivocation(self, author: bytes) -> Equivocation | None:
        log = self._logs.get(author)
        if log is not None and log.equivocation is not None:
            return log.equivocation
        return self._refused_authors.get(author)

    def equivocations(self) -> list[Equivocation]:
        """Evidence against every author caught equivocating."""
        out = [log.equivocation for log in self._logs.values() if log.equivocation is not None]
        out.extend(self._refused_authors.values())
        return sorted(out, key=lambda e: (e.author, e.seq))

    def gaps(self, seen: Iterable[CausalNode]) -> list[Gap]:
        """Missing sequence numbers, given nodes ``seen`` but not delivered (e.g. waiting).

        Cost O(k log k) in the number of seen nodes, whatever sequence numbers they claim.
        """
        present: dict[bytes, set[int]] = {}
        for node in seen:
            if node.seq >= self.next_seq(node.author):
                present.setdefault(node.author, set()).add(node.seq)
        gaps: list[Gap] = []
        for author in sorted(present):
            expected = self.next_seq(author)
            for s in sorted(present[author]):
                if s > expected:
                    gaps.append(Gap(author, expected, s - 1))
                expected = s + 1
        return gaps

    def oldest_tail_epoch(
        self,
        epoch_of: Callable[[N], E],
        key: Callable[[E], Any],
        members: Iterable[bytes] | None = None,
    ) -> E | None:
        """The oldest epoch any member may still be in: the minimum, by ``key``, of the
        epochs of the members' tails (``members`` restricts to current members; a member
        without a delivered node is ignored).  ``None`` if no tail qualifies."""
        authors = self._logs.keys() if members is None else [a for a in members if a in self._logs]
        best: E | None = None
        best_key: Any = None
        for a in sorted(authors):
            ep = epoch_of(self._logs[a].tail)
            k = key(ep)
            if best is None or k < best_key:
                best, best_key = ep, k
        return best

    # -- updates --------------------------------------------------------------------------
    def append(self, node: N) -> bool:
        """Log a node delivered in causal order.

        Returns ``False`` for a node already logged.  Raises :class:`EquivocationDetected`
        (fork, prev mismatch, or any node of an author caught equivocating before),
        :class:`LogError` (a first node that is not ``first_seq`` without ``prev``) or
        :class:`LogGapError` (a sequence number beyond the next one).  On error nothing
        changes except that the evidence of a new equivocation is recorded.
        """
        author, seq, cid = node.author, node.seq, node.cid
        self._touch(author)
        log = self._logs.get(author)
        earlier = self.equivocation(author)
        if earlier is not None:
            if log is not None and self.cid_at(author, seq) == cid:
                return False
            raise EquivocationDetected(
                f"author {_short(author)} equivocated at seq {earlier.seq}; node seq {seq} refused", earlier
            )
        if log is None:
            if node.prev is not None or seq != self.first_seq:
                if seq != self.first_seq:
                    raise LogGapError(f"author {_short(author)}: first node has seq {seq}, expected {self.first_seq}")
                raise LogError(f"author {_short(author)}: first node (seq {seq}) must not have a prev")
            self._logs[author] = _AuthorLog([cid], node)
            return True
        i = seq - self.first_seq
        if 0 <= i < len(log.cids):
            if log.cids[i] == cid:
                return False
            ev = Equivocation(author, seq, log.cids[i], cid, "fork")
            log.equivocation = ev
            raise EquivocationDetected(f"author {_short(author)} published two nodes with seq {seq}", ev)
        if i < 0:
            raise LogError(f"author {_short(author)}: seq {seq} below the first sequence number {self.first_seq}")
        if i > len(log.cids):
            raise LogGapError(f"author {_short(author)}: seq {seq} skips ahead of the next seq {self.next_seq(author)}")
        if node.prev != log.cids[-1]:
            ev = Equivocation(author, seq, log.cids[-1], cid, "prev-mismatch")
            log.equivocation = ev
            raise EquivocationDetected(
                f"author {_short(author)}: node seq {seq} does not name the author's previous node", ev
            )
        log.cids.append(cid)
        log.tail = node
        return True

    def record_equivocation(self, evidence: Equivocation) -> None:
        """Mark an author as equivocating on evidence found elsewhere (e.g. from a peer)."""
        log = self._logs.get(evidence.author)
        if log is not None:
            if log.equivocation is None:
                log.equivocation = evidence
        else:
            self._refused_authors.setdefault(evidence.author, evidence)

    # -- persistence ----------------------------------------------------------------------
    def to_bytes(self, encode_node: Callable[[N], bytes]) -> bytes:
        """Serialize the logs; ``encode_node`` encodes a tail node."""
        w = Writer()
        w.u8(_STATE_VERSION)
        w.u64(self.first_seq)

        def put_log(ww: Writer, author: bytes) -> None:
            log = self._logs[author]
            ww.opaque(author)
            ww.vector(log.cids, Writer.opaque)
            ww.opaque(encode_node(log.tail))
            ww.optional(log.equivocation, _put_evidence)

        w.vector(sorted(self._logs), put_log)
        w.vector([self._refused_authors[a] for a in sorted(self._refused_authors)], _put_evidence)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, decode_node: Callable[[bytes], N]) -> MemberLogs[N]:
        """Restore logs saved by :meth:`to_bytes`; malformed input raises DecodeError."""
        r = Reader(data)
        version = r.u8()
        if version != _STATE_VERSION:
            raise DecodeError(f"unknown member log state version {version}")
        logs: MemberLogs[N] = cls(first_seq=r.u64())

        def get_log(rr: Reader) -> tuple[bytes, _AuthorLog[N]]:
            author = rr.opaque()
            cids = rr.vector(lambda x: x.opaque(MAX_CID_BYTES))
            tail = decode_node(rr.opaque())
            ev = rr.optional(_get_evidence)
            if not cids or tail.cid != cids[-1] or tail.author != author:
                raise DecodeError("saved member log is inconsistent")
            return author, _AuthorLog(cids, tail, ev)

        entries = r.vector(get_log)
        refused = r.vector(_get_evidence)
        r.finish()
        authors = [a for a, _ in entries]
        if authors != sorted(set(authors)):
            raise DecodeError("saved member logs are not sorted by author")
        logs._logs = dict(entries)
        for ev in refused:
            if ev.author in logs._logs or ev.author in logs._refused_authors:
                raise DecodeError("duplicate equivocation evidence in saved state")
            logs._refused_authors[ev.author] = ev
        return logs


def _put_evidence(w: Writer, ev: Equivocation) -> None:
    w.opaque(ev.author)
    w.u64(ev.seq)
    w.opaque(ev.first)
    w.opaque(ev.second)
    w.u8(_REASONS.index(ev.reason))


def _get_evidence(r: Reader) -> Equivocation:
    author = r.opaque()
    seq = r.u64()
    first = r.opaque(MAX_CID_BYTES)
    second = r.opaque(MAX_CID_BYTES)
    reason = r.u8()
    if reason >= len(_REASONS):
        raise DecodeError(f"unknown equivocation reason {reason}")
    return Equivocation(author, seq, first, second, _REASONS[reason])


@dataclass(frozen=True, slots=True)
class Delivery(Generic[N]):
    """The outcome of :meth:`CausalReceiver.receive`."""

    delivered: tuple[N, ...]
    events: tuple[Equivocation | Refused, ...]


class CausalReceiver(Generic[N]):
    """A causal buffer feeding per-member logs (docs/causal.md sections 1-2).

    Nodes the logs refuse (equivocation, broken log) are reported as events and not handed
    up, but they count as delivered for the buffer, so honest nodes that depend on them are
    not held back forever; the layer above decides what such a dependency means.
    """

    __slots__ = ("buffer", "logs")

    def __init__(self, buffer: CausalBuffer[N] | None = None, logs: MemberLogs[N] | None = None) -> None:
        self.buffer: CausalBuffer[N] = buffer if buffer is not None else CausalBuffer()
        self.logs: MemberLogs[N] = logs if logs is not None else MemberLogs()

    def receive(self, node: N) -> Delivery[N]:
        """Take one node; return the nodes now deliverable and the log events."""
        delivered: list[N] = []
        events: list[Equivocation | Refused] = []
        for item in self.receive_iter(node):
            if isinstance(item, (Equivocation, Refused)):
                events.append(item)
            else:
                delivered.append(item)
        return Delivery(tuple(delivered), tuple(events))

    def receive_iter(self, node: N) -> Iterator[N | Equivocation | Refused]:
        """:meth:`receive`, lazily (for a gated buffer, docs/causal.md section 1): yields each
        node the logs accept, and the events of those they refuse (a `Refused` for each), in
        delivery order.  The iterator must be exhausted."""
        return self._log(self.buffer.receive_iter(node))

    def available_iter(self, cids: Iterable[bytes]) -> Iterator[N | Equivocation | Refused]:
        """Blocks a gate waited for have arrived: as :meth:`receive_iter` for what they unblock."""
        return self._log(self.buffer.available(cids))

    def _log(self, ready: Iterable[N]) -> Iterator[N | Equivocation | Refused]:
        for n in ready:
            try:
                ok = self.logs.append(n)
            except EquivocationDetected as exc:
                if exc.evidence.second == n.cid:
                    yield exc.evidence
                yield Refused(n.cid, n.author, n.seq, "equivocation")
                continue
            except (LogError, LogGapError) as exc:
                yield Refused(n.cid, n.author, n.seq, str(exc))
                continue
            if ok:
                yield n

    def replay(self, node: N) -> None:
        """Re-apply a node known to have passed the buffer earlier (restoring from a journal
        of deliveries, in the original order): marked delivered, appended to the logs (a
        refusal is replayed as well: same order, same evidence)."""
        self.buffer.mark_delivered_silently(node.cid)
        with contextlib.suppress(EquivocationDetected, LogError, LogGapError):
            self.logs.append(node)

    def missing(self) -> set[bytes]:
        return self.buffer.missing()

    def begin(self) -> None:
        """Start a transaction: :meth:`rollback` undoes every receive until :meth:`commit`."""
        self.buffer.begin()
        self.logs.begin()

    def commit(self) -> list[bytes]:
        """End the transaction; the CIDs of the nodes that passed the buffer, in order (a
        journal of deliveries that :meth:`replay` restores)."""
        self.logs.commit()
        return self.buffer.commit()

    def rollback(self) -> None:
        self.buffer.rollback()
        self.logs.rollback()

    def journal(self) -> list[bytes]:
        """The CIDs that passed the buffer in the open transaction so far (``[]`` without one)."""
        return self.buffer.journal()

    def gaps(self) -> list[Gap]:
        return self.logs.gaps(self.buffer.waiting_nodes())

    def to_bytes(self, encode_node: Callable[[N], bytes]) -> bytes:
        w = Writer()
        w.opaque(self.buffer.to_bytes(encode_node))
        w.opaque(self.logs.to_bytes(encode_node))
        return w.getvalue()

    def checkpoint_bytes(self, encode_node: Callable[[N], bytes]) -> bytes:
        """:meth:`to_bytes` without the waiting nodes: the delivered set and the logs, for a
        checkpoint that a journal of deliveries (:meth:`replay`) and a separately saved
        waiting set (:meth:`CausalBuffer.waiting_to_bytes`) complete."""
        w = Writer()
        w.opaque(self.buffer.to_bytes(encode_node, waiting=False))
        w.opaque(self.logs.to_bytes(encode_node))
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, decode_node: Callable[[bytes], N], **buffer_limits: Any) -> CausalReceiver[N]:
        r = Reader(data)
        b = r.opaque()
        lg = r.opaque()
        r.finish()
        return cls(CausalBuffer.from_bytes(b, decode_node, **buffer_limits), MemberLogs.from_bytes(lg, decode_node))
