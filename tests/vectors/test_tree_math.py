"""tree-math.json (RFC 9420 appendix C)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from crdt_mls.errors import InvalidArgument
from crdt_mls.mls import treemath
from tests.vectors.loader import load

ENTRIES = load("tree-math")


def _maybe(f: Callable[[], int]) -> int | None:
    try:
        return f()
    except InvalidArgument:
        return None


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"n{e['n_leaves']}" for e in ENTRIES])
def test_tree_math(entry: dict[str, object]) -> None:
    n = entry["n_leaves"]
    assert isinstance(n, int)
    assert treemath.node_width(n) == entry["n_nodes"]
    assert treemath.root(n) == entry["root"]
    for x in range(treemath.node_width(n)):
        assert _maybe(lambda: treemath.left(x)) == entry["left"][x]  # type: ignore[index]
        assert _maybe(lambda: treemath.right(x)) == entry["right"][x]  # type: ignore[index]
        assert _maybe(lambda: treemath.parent(x, n)) == entry["parent"][x]  # type: ignore[index]
        assert _maybe(lambda: treemath.sibling(x, n)) == entry["sibling"][x]  # type: ignore[index]
