"""Ratchet trees as content-addressed chunks shared between epochs (docs/api.md, "State at rest").

A replica keeps the public ratchet tree (RFC 9420 section 7.8) of several epochs; at 50,000
members one tree is ~10 MB, and a commit changes only the O(log n) nodes of one path.  So a
tree is stored as a Merkle tree of *chunks*, each a blocked piece of the array-based tree
(RFC 9420 appendix C), named by a hash of its bytes; a new epoch's tree shares every chunk
it did not change with the tree it was derived from, and saving it writes only the chunks on
the changed paths (about ``ceil(levels / band)`` chunks per path: 3 at 50,000 members).

Layout.  A tree of width ``2^(d+1) - 1`` has levels ``0..d``.  Levels are cut into *bands*
of ``BAND`` levels from the leaves up; band ``b`` holds levels ``b*BAND .. R_b`` with
``R_b = min(b*BAND + BAND - 1, d)``.  A chunk of band ``b`` is rooted at a node ``r`` of
level ``R_b`` and holds the nodes of ``r``'s subtree whose level is in band ``b`` (at most
``2^BAND - 1`` nodes), in index order, and (for ``b > 0``) the ids of the ``2^(R_b - b*BAND + 1)``
band ``b - 1`` chunks below it, in index order.  The chunk of the top band holding the root
is the tree's root chunk.  Encoding (TLS presentation language, RFC 9420 section 2.1)::

    struct {
        uint8 version = 1;
        optional<Node> nodes<V>;     // RFC 9420 section 12.4.3.3 node encoding
        opaque children<V><V>;       // ids of the chunks below
    } TreeChunk;

A chunk's id is ``id_of(encoding)``: SHA-256 by default; the replica uses an HMAC keyed by its
state key so that stored ids reveal nothing about the (public) tree to someone who can read
the store's key names.  The ids are recomputed and checked when a tree is loaded.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress

from crdt_mls.errors import DecodeError, IntegrityError, StorageError
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.mls.messages import Node, encode_ratchet_tree, read_ratchet_tree
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.suites import CipherSuite

__all__ = ["BAND", "TreeRef", "changed_nodes", "chunk_difference", "chunk_tree", "load_tree", "sha256_id"]

#: Levels per band: band-0 chunks hold 32 leaves and the 31 parents above them.
BAND = 6
_VERSION = 1

IdOf = Callable[[bytes], bytes]


def sha256_id(data: bytes) -> bytes:
    """The default chunk id: SHA-256 with a domain label."""
    return hashlib.sha256(b"crdt-mls tree chunk\x00" + data).digest()


@dataclass(frozen=True, slots=True)
class TreeRef:
    """Where a tree is: its width and root chunk id; ``table`` (chunk root node -> chunk id for
    every chunk, in memory only) lets the next tree be chunked incrementally."""

    width: int
    root: bytes
    table: Mapping[int, bytes] = field(default_factory=dict, compare=False, repr=False)

    def chunk_ids(self) -> Iterable[bytes]:
        """Every chunk id of the tree (with repeats if two chunks are equal)."""
        return self.table.values()


def _depth(width: int) -> int:
    d = (width + 1).bit_length() - 2
    if width < 1 or (1 << (d + 1)) - 1 != width:
        raise DecodeError(f"a ratchet tree has 2^(d+1)-1 nodes, not {width}")
    return d


def _top(b: int, d: int) -> int:
    return min(b * BAND + BAND - 1, d)


def _level(x: int) -> int:
    return (~x & (x + 1)).bit_length() - 1


def _chunk_root(x: int, level: int) -> int:
    """The ancestor of ``x`` at ``level``."""
    return ((x >> (level + 1)) << (level + 1)) + (1 << level) - 1


def _at_level(r: int, r_level: int, level: int) -> range:
    """Node indices of level ``level`` in the subtree of ``r`` (level ``r_level``)."""
    start = r - ((1 << r_level) - 1) + ((1 << level) - 1)
    return range(start, r + (1 << r_level), 1 << (level + 1))


def _members(r: int, b: int, d: int) -> list[int]:
    top = _top(b, d)
    out: list[int] = []
    for level in range(b * BAND, top + 1):
        out.extend(_at_level(r, top, level))
    out.sort()
    return out


def _children(r: int, b: int, d: int) -> range:
    return _at_level(r, _top(b, d), b * BAND - 1) if b else range(0)


def _encode_chunk(nodes: Sequence[Node | None], children: Sequence[bytes]) -> bytes:
    w = Writer()
    w.u8(_VERSION)
    w.fixed(encode_ratchet_tree(nodes))
    w.vector(children, Writer.opaque)
    return w.getvalue()


def _decode_chunk(data: bytes) -> tuple[list[Node | None], list[bytes]]:
    r = Reader(data)
    if r.u8() != _VERSION:
        raise DecodeError("unknown tree chunk version")
    nodes = read_ratchet_tree(r)
    children = r.vector(Reader.opaque)
    r.finish()
    return nodes, children


#: the last few diffs computed: a commit asks for the same pair of trees several times (its
#: record, its events, its chunks); bounded, compared by identity
_DIFFS: list[tuple[RatchetTree, RatchetTree, list[int] | None]] = []
_DIFFS_KEPT = 4


def changed_nodes(old: RatchetTree, new: RatchetTree) -> list[int] | None:
    """Indices of nodes whose values differ (by identity) between two trees of equal width,
    ``None`` if the widths differ.  Uses ``RatchetTree.diff`` when the tree offers it."""
    if old.width != new.width:
        return None
    for a, b, known in _DIFFS:
        if a is old and b is new:
            return known
    diff = getattr(new, "diff", None)
    if diff is not None:
        out = sorted(diff(old))
    else:
        na, nb = old.nodes(), new.nodes()
        out = [] if na is nb else list(compress(range(len(nb)), map(operator.is_not, na, nb)))
    _DIFFS.insert(0, (old, new, out))
    del _DIFFS[_DIFFS_KEPT:]
    return out


def chunk_tree(
    tree: RatchetTree,
    id_of: IdOf = sha256_id,
    base: tuple[RatchetTree, TreeRef] | None = None,
) -> tuple[TreeRef, dict[bytes, bytes]]:
    """The chunks of ``tree``: its `TreeRef` and ``{id: encoding}`` of the chunks computed.

    With ``base`` (a tree this one shares structure with, and its ref) only the chunks on
    changed paths are computed (O(changed nodes x levels / BAND)); the others keep their ids.
    """
    width = tree.width
    d = _depth(width)
    nodes = tree.nodes()
    bands = d // BAND + 1
    changed = None if base is None else changed_nodes(base[0], tree)
    table: dict[int, bytes]
    dirty: list[set[int]] = [set() for _ in range(bands)]
    if changed is None or base is None:
        table = {}
        for b in range(bands):
            dirty[b].update(_at_level((width - 1) // 2, d, _top(b, d)))
    else:
        table = dict(base[1].table)
        for x in changed:
            lv = _level(x)
            for b in range(lv // BAND, bands):
                dirty[b].add(_chunk_root(x, _top(b, d)))
    out: dict[bytes, bytes] = {}
    for b in range(bands):
        for r in sorted(dirty[b]):
            members = _members(r, b, d)
            kids = [table[c] for c in _children(r, b, d)]
            data = _encode_chunk([nodes[x] for x in members], kids)
            cid = id_of(data)
            table[r] = cid
            out[cid] = data
    root = (width - 1) // 2
    return TreeRef(width, table[root], table), out


def chunk_difference(a: TreeRef, b: TreeRef) -> list[int]:
    """Node indices of the chunks whose ids differ between two refs of the same width (with
    their tables): the nodes where the trees may differ."""
    if a.width != b.width:
        raise DecodeError("trees of different widths")
    d = _depth(a.width)
    out: list[int] = []
    for b_band in range(d // BAND + 1):
        for r in _at_level((a.width - 1) // 2, d, _top(b_band, d)):
            if a.table.get(r) != b.table.get(r):
                out.extend(_members(r, b_band, d))
    return out


def load_tree(
    suite: CipherSuite,
    width: int,
    root: bytes,
    get: Callable[[bytes], bytes | None],
    id_of: IdOf = sha256_id,
    cache: dict[bytes, tuple[list[Node | None], list[bytes]]] | None = None,
) -> tuple[RatchetTree, TreeRef]:
    """Rebuild a tree from its chunks (``get(id)`` reads one); decoded chunks are shared
    through ``cache`` (trees of several epochs then share their node objects).  A missing
    chunk, an id that does not match its bytes or a malformed chunk is a `StorageError`."""
    d = _depth(width)
    bands = d // BAND + 1
    cache = {} if cache is None else cache
    nodes: list[Node | None] = [None] * width
    table: dict[int, bytes] = {}
    todo = [(bands - 1, (width - 1) // 2, root)]
    while todo:
        b, r, cid = todo.pop()
        table[r] = cid
        members = _members(r, b, d)
        kids = list(_children(r, b, d))
        decoded = cache.get(cid)
        if decoded is None:
            data = get(cid)
            if data is None:
                raise StorageError("a chunk of a saved ratchet tree is missing")
            if id_of(data) != cid:
                raise StorageError("a chunk of a saved ratchet tree does not match its id")
            try:
                values, children = _decode_chunk(data)
            except (DecodeError, IntegrityError) as e:
                raise StorageError(f"a chunk of a saved ratchet tree is malformed: {e}") from None
            if len(values) != len(members) or len(children) != len(kids):
                raise StorageError("a chunk of a saved ratchet tree has the wrong shape")
            cache[cid] = (values, children)
        else:
            values, children = decoded
            if len(values) != len(members) or len(children) != len(kids):
                raise StorageError("a chunk of a saved ratchet tree has the wrong shape")
        for x, v in zip(members, values, strict=True):
            nodes[x] = v
        for c, kid in zip(kids, children, strict=True):
            todo.append((b - 1, c, kid))
    try:
        tree = RatchetTree(suite, nodes)
    except Exception as e:  # InvalidArgument: a node of the wrong kind at a position
        raise StorageError(f"a saved ratchet tree is malformed: {e}") from None
    return tree, TreeRef(width, root, table)
