"""tree-operations.json: apply an Add/Update/Remove proposal to a ratchet tree (RFC 9420 12.1)."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.mls.codec import decode_with
from crdt_mls.mls.messages import decode_proposal
from crdt_mls.mls.ratchet_tree import RatchetTree, apply_proposal
from crdt_mls.mls.suites import get_cipher_suite
from tests.vectors.loader import h, ids, load

ENTRIES = load("tree-operations")


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_tree_operation(entry: dict[str, Any]) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    tree = RatchetTree.decode(suite, h(entry["tree_before"]))
    assert tree.encode() == h(entry["tree_before"])
    assert tree.tree_hash() == h(entry["tree_hash_before"])
    before = tree.copy()

    proposal = decode_with(decode_proposal, h(entry["proposal"]))
    apply_proposal(tree, proposal, entry["proposal_sender"])

    assert tree.encode() == h(entry["tree_after"])
    assert tree.tree_hash() == h(entry["tree_hash_after"])
    # the cached hashes agree with a tree decoded from scratch
    assert RatchetTree.decode(suite, h(entry["tree_after"])).tree_hash() == h(entry["tree_hash_after"])
    # the copy taken before was not touched
    assert before.encode() == h(entry["tree_before"])
    assert before.tree_hash() == h(entry["tree_hash_before"])
