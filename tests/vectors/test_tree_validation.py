"""tree-validation.json: resolutions, tree hashes, parent hashes, leaf signatures (RFC 9420 4.1, 7.3, 7.8, 7.9)."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.suites import get_cipher_suite
from tests.vectors.loader import h, ids, load

ENTRIES = load("tree-validation")


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_tree_validation(entry: dict[str, Any]) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    data = h(entry["tree"])
    tree = RatchetTree.decode(suite, data)
    assert tree.encode() == data
    assert tree.width == len(entry["tree_hashes"]) == len(entry["resolutions"])

    assert [th.hex() for th in tree.tree_hashes()] == entry["tree_hashes"]
    for x, expected in enumerate(entry["resolutions"]):
        assert list(tree.resolution(x)) == expected, f"resolution of node {x}"
    # per-node tree hashes again, one at a time, on a fresh tree (no warm cache)
    fresh = RatchetTree.decode(suite, data)
    for x in reversed(range(fresh.width)):
        assert fresh.tree_hash(x) == h(entry["tree_hashes"][x])

    for p in range(1, tree.width, 2):
        assert tree.parent_hash_valid(p), f"parent node {p}"
    tree.verify_parent_hashes()
    tree.verify_leaf_signatures(h(entry["group_id"]))
    tree.verify_integrity(h(entry["group_id"]), tree_hash=h(entry["tree_hashes"][tree.root]))
