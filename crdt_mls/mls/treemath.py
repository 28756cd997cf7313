"""Array-based left-balanced binary tree math (RFC 9420 section 4.2 and appendix C).

Nodes are numbered in-order: leaf ``i`` is node ``2*i``; parent nodes are odd.  ``n`` is
always the number of *leaves* (a power of two for a full RFC 9420 tree, but the functions
accept any positive count the way appendix C does).
"""

from __future__ import annotations

from functools import lru_cache

from crdt_mls.errors import InvalidArgument


def log2(x: int) -> int:
    """Floor of log2; 0 for x == 0."""
    return x.bit_length() - 1 if x > 0 else 0


def level(x: int) -> int:
    """Level of node ``x``: 0 for leaves, k for a parent with 2^k - 1 trailing ones."""
    if x & 1 == 0:
        return 0
    k = 0
    while (x >> k) & 1 == 1:
        k += 1
    return k


def node_width(n: int) -> int:
    """Number of nodes in a tree with ``n`` leaves."""
    return 0 if n == 0 else 2 * (n - 1) + 1


def root(n: int) -> int:
    """Index of the root of a tree with ``n`` leaves."""
    if n <= 0:
        raise InvalidArgument("a tree has at least one leaf")
    w = node_width(n)
    return (1 << log2(w)) - 1


def left(x: int) -> int:
    k = level(x)
    if k == 0:
        raise InvalidArgument(f"leaf node {x} has no children")
    return x ^ (0x01 << (k - 1))


def right(x: int) -> int:
    k = level(x)
    if k == 0:
        raise InvalidArgument(f"leaf node {x} has no children")
    return x ^ (0x03 << (k - 1))


def parent(x: int, n: int) -> int:
    """Parent of node ``x`` in a tree with ``n`` leaves (``n`` a power of two)."""
    if x == root(n):
        raise InvalidArgument(f"root node {x} has no parent")
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return (x | (1 << k)) ^ (b << (k + 1))


def sibling(x: int, n: int) -> int:
    p = parent(x, n)
    return right(p) if x < p else left(p)


@lru_cache(maxsize=65536)
def _direct_path(x: int, n: int) -> tuple[int, ...]:
    r = root(n)
    if x == r:
        return ()
    out: list[int] = []
    while x != r:
        x = parent(x, n)
        out.append(x)
    return tuple(out)


def direct_path(x: int, n: int) -> tuple[int, ...]:
    """Parents of ``x`` from its parent up to and including the root (RFC 9420 section 4.1)."""
    return _direct_path(x, n)


def copath(x: int, n: int) -> tuple[int, ...]:
    """Siblings of ``x`` and of each node on its direct path, excluding the root."""
    if x == root(n):
        return ()
    d = (x, *direct_path(x, n)[:-1])
    return tuple(sibling(y, n) for y in d)


def common_ancestor(x: int, y: int) -> int:
    """Lowest common ancestor of two nodes (appendix C, `common_ancestor_semantic`)."""
    lx, ly = level(x) + 1, level(y) + 1
    if lx <= ly and x >> ly == y >> ly:
        return y
    if ly <= lx and x >> lx == y >> lx:
        return x
    # shifting both right until they agree takes exactly bit_length(x ^ y) steps
    k = (x ^ y).bit_length()
    return ((x >> k) << k) + (1 << (k - 1)) - 1


def is_leaf(x: int) -> bool:
    return x & 1 == 0


def leaf_to_node(leaf_index: int) -> int:
    return 2 * leaf_index


def node_to_leaf(x: int) -> int:
    if x & 1:
        raise InvalidArgument(f"node {x} is not a leaf")
    return x >> 1


def subtree_leaves(x: int) -> range:
    """Leaf indices below node ``x`` (in a tree large enough to contain the subtree)."""
    k = level(x)
    first = (x - ((1 << k) - 1)) >> 1
    return range(first, first + (1 << k))
