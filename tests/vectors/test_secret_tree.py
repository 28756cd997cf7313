"""secret-tree.json (RFC 9420 sections 6.3.2 and 9): sender-data keys and ratchet keys per leaf."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.mls.framing import sender_data_key_nonce
from crdt_mls.mls.secret_tree import RatchetType, SecretTree
from crdt_mls.mls.suites import get_cipher_suite
from tests.vectors.loader import h, ids, load

ENTRIES = load("secret-tree")


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_sender_data(entry: dict[str, Any]) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    sd = entry["sender_data"]
    key, nonce = sender_data_key_nonce(suite, h(sd["sender_data_secret"]), h(sd["ciphertext"]))
    assert key == h(sd["key"])
    assert nonce == h(sd["nonce"])


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_ratchets(entry: dict[str, Any]) -> None:
    suite = get_cipher_suite(entry["cipher_suite"])
    leaves = entry["leaves"]
    tree = SecretTree(suite, h(entry["encryption_secret"]), len(leaves))
    for leaf, gens in enumerate(leaves):
        assert gens
        for g in gens:
            gen = g["generation"]
            hk = tree.key_for(leaf, RatchetType.HANDSHAKE, gen)
            ak = tree.key_for(leaf, RatchetType.APPLICATION, gen)
            assert (hk.key, hk.nonce) == (h(g["handshake_key"]), h(g["handshake_nonce"]))
            assert (ak.key, ak.nonce) == (h(g["application_key"]), h(g["application_nonce"]))


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_ratchets_reverse_leaf_order(entry: dict[str, Any]) -> None:
    """Deriving leaves in another order (different deletion pattern) gives the same keys."""
    suite = get_cipher_suite(entry["cipher_suite"])
    leaves = entry["leaves"]
    tree = SecretTree(suite, h(entry["encryption_secret"]), len(leaves), max_forward=1 << 20)
    for leaf in reversed(range(len(leaves))):
        last = leaves[leaf][-1]
        ak = tree.key_for(leaf, RatchetType.APPLICATION, last["generation"])
        assert (ak.key, ak.nonce) == (h(last["application_key"]), h(last["application_nonce"]))
