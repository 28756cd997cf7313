"""Sans-I/O block sync between two replicas (docs/causal.md section 3).

Each side runs one :class:`SyncSession` per peer over its :class:`~crdt_mls.causal.dagview.DagView`
and moves the bytes of :meth:`SyncSession.generate_message` to the peer's
:meth:`SyncSession.receive_message` over any transport, in any order, with losses and
duplicates.  When neither side has anything left to say, ``generate_message`` returns
``None`` on both sides and both stores hold the same blocks (and so the same heads).  After a
loss the caller's timer calls :meth:`SyncSession.on_timeout`, which makes the next message
restate everything that may have been lost.

Wire format (TLS presentation language, RFC 9420 section 2.1)::

    opaque CID<1..128>;
    struct { CID cid; opaque data<V>; } Block;
    struct {
        uint8 version = 1;
        opaque session[8];          // random per session; a new value = the peer restarted
        uint32 counter;             // per-session message number; older ones only give blocks
        bool restated;              // sent after a retransmission timeout
        CID heads<V>;               // sender's heads, strictly ascending
        CID need<V>;                // CIDs the sender asks for, strictly ascending
        CID since<V>;               // heads the sender believes both hold, strictly ascending
        optional<BloomFilter> have; // sender's blocks not below `since`
        Block blocks<V>;            // blocks for the receiver, parents first, no duplicates
    } SyncMessage;
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise

from crdt_mls.causal.bloom import BloomFilter
from crdt_mls.causal.dagview import DagView, dag_difference
from crdt_mls.causal.delivery import MAX_CID_BYTES
from crdt_mls.errors import DecodeError, InvalidArgument, OversizeError
from crdt_mls.mls.codec import Reader, Writer

__all__ = ["SYNC_VERSION", "SyncMessage", "SyncSession"]

SYNC_VERSION = 1
SESSION_ID_BYTES = 8
#: Most CIDs in one heads/need/since list.
MAX_LIST = 1 << 17


def _cid(r: Reader) -> bytes:
    c = r.opaque(MAX_CID_BYTES)
    if not c:
        raise DecodeError("empty CID")
    return c


def _cid_list(r: Reader, what: str) -> tuple[bytes, ...]:
    items = r.vector(_cid)
    if len(items) > MAX_LIST:
        raise OversizeError(f"sync message {what} list of {len(items)} CIDs exceeds {MAX_LIST}")
    for a, b in pairwise(items):
        if not a < b:
            raise DecodeError(f"sync message {what} list is not strictly ascending")
    return tuple(items)


def _block(r: Reader) -> tuple[bytes, bytes]:
    return _cid(r), r.opaque()


@dataclass(frozen=True, slots=True)
class SyncMessage:
    """One sync message (see the module docstring for the wire format)."""

    session: bytes
    counter: int
    heads: tuple[bytes, ...]
    need: tuple[bytes, ...]
    since: tuple[bytes, ...]
    have: BloomFilter | None
    blocks: tuple[tuple[bytes, bytes], ...]
    restated: bool = False

    def encode(self, w: Writer) -> None:
        w.u8(SYNC_VERSION)
        w.fixed(self.session)
        w.u32(self.counter)
        w.boolean(self.restated)
        for lst in (self.heads, self.need, self.since):
            w.vector(sorted(lst), Writer.opaque)
        w.optional(self.have, lambda ww, b: b.encode(ww))

        def put_block(ww: Writer, blk: tuple[bytes, bytes]) -> None:
            ww.opaque(blk[0])
            ww.opaque(blk[1])

        w.vector(self.blocks, put_block)

    @classmethod
    def decode(cls, r: Reader) -> SyncMessage:
        version = r.u8()
        if version != SYNC_VERSION:
            raise DecodeError(f"unknown sync message version {version}")
        session = r.fixed(SESSION_ID_BYTES)
        counter = r.u32()
        restated = r.boolean()
        heads = _cid_list(r, "heads")
        need = _cid_list(r, "need")
        since = _cid_list(r, "since")
        have = r.optional(BloomFilter.decode)
        blocks = tuple(r.vector(_block))
        if len({c for c, _ in blocks}) != len(blocks):
            raise DecodeError("sync message carries a block twice")
        return cls(session, counter, heads, need, since, have, blocks, restated)

    def to_bytes(self) -> bytes:
        w = Writer()
        self.encode(w)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> SyncMessage:
        r = Reader(data)
        msg = cls.decode(r)
        r.finish()
        return msg


class SyncSession:
    """One side of a sync conversation with one peer (docs/causal.md section 3).

    ``max_message_bytes`` is the block budget of an outgoing message (a single larger block
    is still sent alone); ``max_incoming_bytes`` rejects larger incoming messages
    (:class:`OversizeError`).  Blocks whose links are not held yet wait in a per-session
    area bounded by ``max_pending`` blocks / ``max_pending_bytes``.

    ``known_shared`` may name heads this peer held when it was last in sync with us (e.g.
    :attr:`peer_heads` saved then); it makes the first exchange of two diverged replicas
    incremental.  A wrong hint costs speed (missing blocks are then found by explicit
    requests, one level per round trip), never correctness.
    """

    __slots__ = (
        "_counter",
        "_flushed",
        "_have_key",
        "_id",
        "_last_sent_heads",
        "_last_sent_need",
        "_outbox",
        "_outbox_key",
        "_peer_counter",
        "_peer_id",
        "_pending",
        "_pending_bytes",
        "_restate",
        "_retired",
        "_sent",
        "_since",
        "_their_have",
        "_their_heads",
        "_their_need",
        "_their_since",
        "max_incoming_bytes",
        "max_message_bytes",
        "max_need",
        "max_pending",
        "max_pending_bytes",
        "view",
    )

    def __init__(
        self,
        view: DagView,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        max_message_bytes: int = 1 << 20,
        max_incoming_bytes: int = 32 << 20,
        max_pending: int = 100_000,
        max_pending_bytes: int = 64 << 20,
        max_need: int = 4096,
        known_shared: Iterable[bytes] = (),
    ) -> None:
        if min(max_message_bytes, max_incoming_bytes, max_pending, max_pending_bytes, max_need) <= 0:
            raise InvalidArgument("sync limits must be positive")
        sid = rng(SESSION_ID_BYTES)
        if len(sid) != SESSION_ID_BYTES:
            raise InvalidArgument("rng returned the wrong number of bytes")
        self.view = view
        self.max_message_bytes = max_message_bytes
        self.max_incoming_bytes = max_incoming_bytes
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.max_need = max_need
        self._id = sid
        self._counter = 0
        self._peer_id: bytes | None = None
        self._peer_counter = -1
        self._retired: set[bytes] = set()
        self._pending: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
        self._pending_bytes = 0
        self._flushed: list[bytes] = []
        self._restate = False
        # blocks both sides hold (with their ancestors); seeded from the caller's hint
        self._since: frozenset[bytes] = frozenset(c for c in known_shared if view.has(c))
        self._reset_peer_view()
        self._reset_flight()

    def _reset_peer_view(self) -> None:
        self._their_heads: frozenset[bytes] | None = None
        self._their_need: tuple[bytes, ...] = ()
        self._their_since: frozenset[bytes] = frozenset()
        self._their_have: BloomFilter | None = None

    def _reset_flight(self) -> None:
        """Forget what was sent: everything may have been lost."""
        self._sent: set[bytes] = set()
        self._last_sent_heads: frozenset[bytes] | None = None
        self._last_sent_need: tuple[bytes, ...] | None = None
        self._have_key: tuple[frozenset[bytes], frozenset[bytes]] | None = None
        self._outbox: list[bytes] = []
        self._outbox_key: object = None

    # -- queries --------------------------------------------------------------------------
    @property
    def session_id(self) -> bytes:
        return self._id

    @property
    def peer_heads(self) -> frozenset[bytes] | None:
        """The peer's heads as of its latest message (``None`` before the first)."""
        return self._their_heads

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def in_sync(self) -> bool:
        """Whether the peer's latest heads equal ours and nothing waits.  A replica calls
        :meth:`on_timeout` only while this is false and no message arrived for a while."""
        return self._their_heads == self.view.heads() and not self._pending

    def take_flushed(self) -> list[bytes]:
        """CIDs that :meth:`generate_message` moved from the waiting area into the store
        (their links arrived through another session) since the last call, parents first.
        Blocks added by :meth:`receive_message` are returned by it instead."""
        out, self._flushed = self._flushed, []
        return out

    # -- timers ---------------------------------------------------------------------------
    def on_timeout(self) -> None:
        """The caller's retransmission timer fired: the next message restates everything
        (and asks the peer to do the same)."""
        self._reset_flight()
        self._restate = True

    # -- receiving ------------------------------------------------------------------------
    def receive_message(self, data: bytes) -> list[bytes]:
        """Process one message from the peer; return the CIDs newly added to the store,
        parents first.  Malformed messages raise :class:`DecodeError`, bad blocks the
        checker's error, a full pending area :class:`OversizeError`; the session and the
        store are then unchanged."""
        if len(data) > self.max_incoming_bytes:
            raise OversizeError(f"sync message of {len(data)} bytes exceeds the limit of {self.max_incoming_bytes}")
        msg = SyncMessage.from_bytes(data)
        view = self.view
        pending = dict(self._pending)
        pending_bytes = self._pending_bytes
        for cid, block in msg.blocks:
            if cid in pending or view.has(cid):
                continue
            links = view.check(cid, block)
            if cid in links:
                raise DecodeError("block links to itself")
            pending[cid] = (block, links)
            pending_bytes += len(block)
        ready, remaining = self._plan_flush(pending)
        left_bytes = sum(len(pending[c][0]) for c in remaining)
        if len(remaining) > self.max_pending or left_bytes > self.max_pending_bytes:
            raise OversizeError(
                f"sync: {len(remaining)} blocks / {left_bytes} bytes would wait for their links "
                f"(limits {self.max_pending} / {self.max_pending_bytes})"
            )
        if ready:
            view.add(ready)
        self._pending = {c: pending[c] for c in remaining}
        self._pending_bytes = left_bytes
        self._take_state(msg)
        return [c for c, _, _ in ready]

    def _plan_flush(
        self, pending: dict[bytes, tuple[bytes, tuple[bytes, ...]]]
    ) -> tuple[list[tuple[bytes, bytes, tuple[bytes, ...]]], set[bytes]]:
        """Which pending blocks can enter the store now (parents first), and which must wait."""
        if not pending:
            return [], set()
        view = self.view
        ready: list[tuple[bytes, bytes, tuple[bytes, ...]]] = []
        # Kahn's algorithm over the pending blocks.
        waiting_on: dict[bytes, int] = {}
        children: dict[bytes, list[bytes]] = {}
        queue: list[bytes] = []
        held = {c for c in pending if view.has(c)}  # arrived meanwhile through another session
        for cid, (_, links) in pending.items():
            if cid in held:
                continue
            n = 0
            for link in set(links):
                if link in pending and link not in held:
                    n += 1
                    children.setdefault(link, []).append(cid)
                elif not view.has(link):
                    n = -1
                    break
            if n == 0:
                queue.append(cid)
            waiting_on[cid] = n
        queue.sort(reverse=True)
        while queue:
            cid = queue.pop()
            block, links = pending[cid]
            ready.append((cid, block, links))
            for child in children.get(cid, ()):
                if waiting_on[child] > 0:
                    waiting_on[child] -= 1
                    if waiting_on[child] == 0:
                        queue.append(child)
        placed = {c for c, _, _ in ready}
        return ready, {c for c in pending if c not in placed and c not in held}

    def _take_state(self, msg: SyncMessage) -> None:
        if msg.session == self._peer_id:
            if msg.counter <= self._peer_counter:
                return  # duplicate or reordered: its blocks were used, its state is stale
        elif msg.session in self._retired:
            return
        else:
            if self._peer_id is not None:
                self._retired.add(self._peer_id)
                self._reset_peer_view()
                self._reset_flight()
                self._since = frozenset()
            self._peer_id = msg.session
        self._peer_counter = msg.counter
        self._their_heads = frozenset(msg.heads)
        self._their_need = msg.need
        self._their_since = frozenset(msg.since)
        if msg.have is not None:
            self._their_have = msg.have
        self._update_since()
        if msg.restated:
            # The peer's timer fired: our messages may have been lost too.  Restate ours, so
            # that a peer waiting for our heads (while we consider ourselves in sync) hears them.
            self._reset_flight()

    def _update_since(self) -> None:
        if self._their_heads is None:
            return
        held = frozenset(c for c in self._their_heads if self.view.has(c))
        if held == self._their_heads:
            self._since = held
        else:
            since = self._since | held
            if len(since) > 256:
                since = frozenset(sorted(since)[-256:])
            self._since = since

    # -- sending --------------------------------------------------------------------------
    def generate_message(self) -> bytes | None:
        """The next message for the peer, or ``None`` if there is nothing to say."""
        view = self.view
        if self._pending:
            ready, remaining = self._plan_flush(self._pending)
            if len(remaining) < len(self._pending):
                view.add(ready)
                self._flushed.extend(c for c, _, _ in ready)
                self._pending = {c: self._pending[c] for c in remaining}
                self._pending_bytes = sum(len(b) for b, _ in self._pending.values())
        self._update_since()
        heads = view.heads()
        need = self._need()

        blocks: list[tuple[bytes, bytes]] = []
        budget = self.max_message_bytes
        chosen: set[bytes] = set()

        def take(cid: bytes) -> bool:
            nonlocal budget
            if cid in self._sent or cid in chosen:
                return True
            data = view.get(cid)
            if data is None:
                return True
            if blocks and len(data) > budget:
                return False
            blocks.append((cid, data))
            chosen.add(cid)
            budget -= len(data)
            return True

        asked = sorted((c for c in self._their_need if view.has(c)), key=lambda c: (view.height(c), c))
        for cid in asked:
            if not take(cid):
                break
        if budget > 0:
            self._refresh_outbox(heads)
            taken = 0
            for cid in self._outbox:
                if not take(cid):
                    break
                taken += 1
            del self._outbox[:taken]

        # The peer needs our summary only if each side has blocks the other lacks: if we hold
        # all its heads we push an exact diff, and if it holds all ours it pushes one (it
        # says it lacks something of ours by asking for it).
        lacking = self._their_heads is not None and not all(view.has(c) for c in self._their_heads)
        have_key = (heads, self._since)
        have_needed = lacking and bool(self._their_need) and have_key != self._have_key
        heads_changed = heads != self._last_sent_heads
        need_changed = bool(need) and need != self._last_sent_need
        if not (heads_changed or blocks or need_changed or have_needed):
            return None
        have: BloomFilter | None = None
        if have_needed:
            have = BloomFilter.build(dag_difference(view, heads, self._since))
            self._have_key = have_key
        msg = SyncMessage(
            self._id,
            self._counter,
            tuple(sorted(heads)),
            need,
            tuple(sorted(self._since)),
            have,
            tuple(blocks),
            self._restate,
        )
        self._restate = False
        self._counter += 1
        self._sent.update(chosen)
        self._last_sent_heads = heads
        self._last_sent_need = need
        return msg.to_bytes()

    def _need(self) -> tuple[bytes, ...]:
        view = self.view
        want: set[bytes] = set()
        if self._their_heads is not None:
            want.update(c for c in self._their_heads if not view.has(c) and c not in self._pending)
        for _, links in self._pending.values():
            want.update(c for c in links if c not in self._pending and not view.has(c))
        return tuple(sorted(want)[: self.max_need])

    def _refresh_outbox(self, heads: frozenset[bytes]) -> None:
        if self._their_heads is None:
            return
        key = (heads, self._their_heads, self._their_since, self._since, self._their_have)
        if key == self._outbox_key:
            return
        self._outbox_key = key
        view = self.view
        base = {c for c in self._their_heads | self._their_since | self._since if view.has(c)}
        if not self._their_heads <= base:
            # The peer has blocks we lack, so we cannot tell what it lacks without its summary.
            if self._their_have is None:
                self._outbox = []
                return
            bloom = self._their_have
            cands = [c for c in dag_difference(view, heads, base) if c not in bloom]
        else:
            cands = dag_difference(view, heads, base)
        self._outbox = [c for c in cands if c not in self._sent]
