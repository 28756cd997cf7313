"""An ancestor-closed view of a block store: heads, links, heights (docs/causal.md section 3).

Sync keeps every store *closed*: a block is added only after all the blocks it links to
(its parents and its author's previous node).  So a store holds exactly the ancestors of its
heads, "the peer has X" implies "the peer has every ancestor of X", and two stores hold the
same blocks iff they have the same heads.

Each block gets a *height*: 0 without links, else one more than its highest link.  Heights
strictly decrease along links, which lets :func:`dag_difference` compute
``ancestors(include) - ancestors(exclude)`` by walking only the region where they differ.

:class:`MemoryDag` keeps everything in memory.  :class:`StoreDag` wraps any
:class:`crdt_mls.stores.Store` (memory, SQLite, IPFS) and keeps heads and per-block
``(height, links)`` in the store's meta table, written atomically with the blocks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from crdt_mls.causal.delivery import MAX_CID_BYTES
from crdt_mls.errors import DecodeError, InvalidArgument
from crdt_mls.mls.codec import Reader, Writer

__all__ = ["BlockChecker", "BlockStore", "DagView", "MemoryDag", "StoreDag", "dag_difference"]

#: ``check(cid, block) -> links``: verify a block (CID, encoding, signature) and return the
#: CIDs it depends on; raise a ``RemoteInputError`` subclass for a bad block.
BlockChecker = Callable[[bytes, bytes], Sequence[bytes]]


class DagView(Protocol):
    """What sync needs from a replica's block store."""

    def heads(self) -> frozenset[bytes]: ...

    def has(self, cid: bytes) -> bool: ...

    def get(self, cid: bytes) -> bytes | None: ...

    def links(self, cid: bytes) -> tuple[bytes, ...]: ...

    def height(self, cid: bytes) -> int: ...

    def check(self, cid: bytes, block: bytes) -> tuple[bytes, ...]: ...

    def add(self, entries: Sequence[tuple[bytes, bytes, tuple[bytes, ...]]]) -> None: ...


class BlockStore(Protocol):
    """The subset of :class:`crdt_mls.stores.Store` that :class:`StoreDag` uses."""

    def get_block(self, cid: bytes) -> bytes | None: ...

    def has_block(self, cid: bytes) -> bool: ...

    def get_meta(self, key: str) -> bytes | None: ...

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None: ...


def _plan(
    entries: Sequence[tuple[bytes, bytes, tuple[bytes, ...]]],
    has: Callable[[bytes], bool],
    height: Callable[[bytes], int],
    heads: frozenset[bytes],
) -> tuple[list[tuple[bytes, bytes, tuple[bytes, ...], int]], frozenset[bytes]]:
    """Check closure of a batch and compute heights and the new heads (nothing is changed)."""
    new_heights: dict[bytes, int] = {}
    out: list[tuple[bytes, bytes, tuple[bytes, ...], int]] = []
    new_heads = set(heads)
    for cid, block, links in entries:
        if cid in new_heights or has(cid):
            continue
        h = 0
        for link in links:
            if link in new_heights:
                lh = new_heights[link]
            elif has(link):
                lh = height(link)
            else:
                raise InvalidArgument("block added before a block it links to (the store must stay closed)")
            h = max(h, lh + 1)
            new_heads.discard(link)
        new_heights[cid] = h
        new_heads.add(cid)
        out.append((cid, block, links, h))
    return out, frozenset(new_heads)


class MemoryDag:
    """A :class:`DagView` held in memory."""

    __slots__ = ("_blocks", "_checker", "_heads", "_meta")

    def __init__(self, check: BlockChecker) -> None:
        self._checker = check
        self._blocks: dict[bytes, bytes] = {}
        self._meta: dict[bytes, tuple[int, tuple[bytes, ...]]] = {}
        self._heads: frozenset[bytes] = frozenset()

    def __len__(self) -> int:
        return len(self._blocks)

    def cids(self) -> frozenset[bytes]:
        return frozenset(self._blocks)

    def heads(self) -> frozenset[bytes]:
        return self._heads

    def has(self, cid: bytes) -> bool:
        return cid in self._blocks

    def get(self, cid: bytes) -> bytes | None:
        return self._blocks.get(cid)

    def links(self, cid: bytes) -> tuple[bytes, ...]:
        return self._meta[cid][1]

    def height(self, cid: bytes) -> int:
        return self._meta[cid][0]

    def check(self, cid: bytes, block: bytes) -> tuple[bytes, ...]:
        return tuple(self._checker(cid, block))

    def add(self, entries: Sequence[tuple[bytes, bytes, tuple[bytes, ...]]]) -> None:
        """Add verified blocks in topological order (atomic)."""
        plan, heads = _plan(entries, self.has, self.height, self._heads)
        for cid, block, links, h in plan:
            self._blocks[cid] = block
            self._meta[cid] = (h, links)
        self._heads = heads


def _encode_meta(height: int, links: tuple[bytes, ...]) -> bytes:
    w = Writer()
    w.u32(height)
    w.vector(links, Writer.opaque)
    return w.getvalue()


def _decode_meta(data: bytes) -> tuple[int, tuple[bytes, ...]]:
    r = Reader(data)
    h = r.u32()
    links = tuple(r.vector(lambda x: x.opaque(MAX_CID_BYTES)))
    r.finish()
    return h, links


class StoreDag:
    """A :class:`DagView` over a :class:`crdt_mls.stores.Store`.

    Meta keys: ``<namespace>/heads`` (sorted CIDs, ``opaque<V><V>``) and
    ``<namespace>/n/<cid hex>`` (``uint32 height; opaque links<V><V>``); the default namespace
    is ``causal``; use one namespace per group when several groups share a store.  Blocks already in the store that were not added
    through a ``StoreDag`` are invisible to it (call :meth:`adopt` to index them).
    """

    __slots__ = ("_cache", "_checker", "_heads", "_heads_key", "_node_prefix", "store")

    def __init__(self, store: BlockStore, check: BlockChecker, *, namespace: str = "causal") -> None:
        if not namespace or "/" in namespace:
            raise InvalidArgument("namespace must be a non-empty name without '/'")
        self.store = store
        self._checker = check
        self._heads_key = f"{namespace}/heads"
        self._node_prefix = f"{namespace}/n/"
        self._cache: dict[bytes, tuple[int, tuple[bytes, ...]]] = {}
        raw = store.get_meta(self._heads_key)
        if raw is None:
            self._heads: frozenset[bytes] = frozenset()
        else:
            r = Reader(raw)
            self._heads = frozenset(r.vector(lambda x: x.opaque(MAX_CID_BYTES)))
            r.finish()

    def _node(self, cid: bytes) -> tuple[int, tuple[bytes, ...]] | None:
        hit = self._cache.get(cid)
        if hit is None:
            raw = self.store.get_meta(self._node_prefix + cid.hex())
            if raw is None:
                return None
            try:
                hit = _decode_meta(raw)
            except DecodeError as exc:
                raise DecodeError(f"corrupt causal index entry for a block: {exc}") from exc
            self._cache[cid] = hit
        return hit

    def heads(self) -> frozenset[bytes]:
        return self._heads

    def has(self, cid: bytes) -> bool:
        return self._node(cid) is not None

    def get(self, cid: bytes) -> bytes | None:
        return self.store.get_block(cid) if self.has(cid) else None

    def links(self, cid: bytes) -> tuple[bytes, ...]:
        node = self._node(cid)
        if node is None:
            raise InvalidArgument("block not in the store")
        return node[1]

    def height(self, cid: bytes) -> int:
        node = self._node(cid)
        if node is None:
            raise InvalidArgument("block not in the store")
        return node[0]

    def check(self, cid: bytes, block: bytes) -> tuple[bytes, ...]:
        return tuple(self._checker(cid, block))

    def add(self, entries: Sequence[tuple[bytes, bytes, tuple[bytes, ...]]]) -> None:
        """Add verified blocks in topological order, with their index entries, atomically."""
        plan, heads = _plan(entries, self.has, self.height, self._heads)
        if not plan:
            return
        meta: dict[str, bytes | None] = {
            self._node_prefix + cid.hex(): _encode_meta(h, links) for cid, _, links, h in plan
        }
        w = Writer()
        w.vector(sorted(heads), Writer.opaque)
        meta[self._heads_key] = w.getvalue()
        self.store.write_batch([(cid, block) for cid, block, _, _ in plan], meta)
        for cid, _, links, h in plan:
            self._cache[cid] = (h, links)
        self._heads = heads

    def adopt(self, cids: Iterable[bytes]) -> None:
        """Index blocks already in the store (any order; each block is verified)."""
        pending: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
        for cid in cids:
            if self.has(cid) or cid in pending:
                continue
            block = self.store.get_block(cid)
            if block is None:
                raise InvalidArgument("block not in the store")
            pending[cid] = (block, self.check(cid, block))
        ordered: list[tuple[bytes, bytes, tuple[bytes, ...]]] = []
        placed: set[bytes] = set()

        def visit(root: bytes) -> None:
            stack: list[tuple[bytes, bool]] = [(root, False)]
            while stack:
                c, expanded = stack.pop()
                if c in placed or c not in pending:
                    continue
                if expanded:
                    placed.add(c)
                    ordered.append((c, *pending[c]))
                    continue
                stack.append((c, True))
                stack.extend((link, False) for link in pending[c][1] if link not in placed)

        for c in sorted(pending):
            visit(c)
        self.add(ordered)


def dag_difference(view: DagView, include: Iterable[bytes], exclude: Iterable[bytes]) -> list[bytes]:
    """``ancestors(include) - ancestors(exclude)`` (ancestors include the nodes themselves),
    parents before children (ascending height, ties by CID).  CIDs not held are ignored.

    Nodes are visited in descending height; a node's colour is final when it is popped
    because all its descendants in the walk are higher.  The walk stops once no
    "interesting" node is left, so its cost is the region between the two frontiers.
    """
    colour: dict[bytes, int] = {}  # 1 = reachable from include only, 2 = reachable from exclude
    heap: list[tuple[int, bytes]] = []
    interesting = 0
    for c in exclude:
        if c not in colour and view.has(c):
            colour[c] = 2
            heapq.heappush(heap, (-view.height(c), c))
    for c in include:
        if c not in colour and view.has(c):
            colour[c] = 1
            interesting += 1
            heapq.heappush(heap, (-view.height(c), c))
    out: list[bytes] = []
    while heap and interesting:
        _, c = heapq.heappop(heap)
        col = colour[c]
        if col == 1:
            interesting -= 1
            out.append(c)
        for link in view.links(c):
            old = colour.get(link)
            if old is None:
                colour[link] = col
                if col == 1:
                    interesting += 1
                heapq.heappush(heap, (-view.height(link), link))
            elif old == 1 and col == 2:
                colour[link] = 2
                interesting -= 1
    out.sort(key=lambda c: (view.height(c), c))
    return out
