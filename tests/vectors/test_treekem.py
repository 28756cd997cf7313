"""treekem.json: private state, processing and creating UpdatePaths (RFC 9420 7.4-7.6, 12.4.2)."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_mls.mls.codec import decode
from crdt_mls.mls.messages import MLS10, GroupContext, UpdatePath
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite
from crdt_mls.mls.treekem import TreePrivateKeys, create_update_path, process_update_path
from tests.vectors.loader import h, ids, load

ENTRIES = load("treekem")


def _setup(
    entry: dict[str, Any],
) -> tuple[CipherSuite, RatchetTree, GroupContext, dict[int, tuple[TreePrivateKeys, bytes]]]:
    suite = get_cipher_suite(entry["cipher_suite"])
    tree = RatchetTree.decode(suite, h(entry["ratchet_tree"]))
    gc = GroupContext(
        MLS10, entry["cipher_suite"], h(entry["group_id"]), entry["epoch"], b"", h(entry["confirmed_transcript_hash"])
    )
    privs: dict[int, tuple[TreePrivateKeys, bytes]] = {}
    for lp in entry["leaves_private"]:
        keys = TreePrivateKeys.for_leaf(lp["index"], h(lp["encryption_priv"]))
        for ps in lp["path_secrets"]:
            keys = keys.with_node_secret(suite, tree, ps["node"], h(ps["path_secret"]))
        privs[lp["index"]] = (keys, h(lp["signature_priv"]))
    return suite, tree, gc, privs


@pytest.mark.parametrize("entry", ENTRIES, ids=ids(ENTRIES))
def test_treekem(entry: dict[str, Any]) -> None:
    """One test per entry (the conformance table counts entries): process the vector's
    UpdatePaths, then create and process new ones."""
    _check_process(entry)
    _check_create(entry)


def _check_process(entry: dict[str, Any]) -> None:
    suite, tree, gc, privs = _setup(entry)
    assert tree.encode() == h(entry["ratchet_tree"])
    tree.verify_parent_hashes()
    # private state is consistent with the public tree
    for index, (keys, sig_priv) in privs.items():
        keys.verify(suite, tree)
        leaf = tree.leaf(index)
        assert leaf is not None
        assert suite.signature_public_key(sig_priv) == leaf.signature_key

    for up in entry["update_paths"]:
        path = decode(UpdatePath, h(up["update_path"]))
        sender = up["sender"]
        receivers = 0
        for index, (keys, _sig) in privs.items():
            if index == sender:
                assert up["path_secrets"][index] is None
                continue
            res = process_update_path(tree, sender, path, gc, keys)
            assert res.path_secret == h(up["path_secrets"][index])
            assert res.commit_secret == h(up["commit_secret"])
            assert res.tree.tree_hash() == h(up["tree_hash_after"])
            assert res.group_context.tree_hash == h(up["tree_hash_after"])
            res.tree.verify_parent_hashes()
            assert res.private_keys is not None
            res.private_keys.verify(suite, res.tree)
            receivers += 1
        # a public-only observer gets the same tree
        public = process_update_path(tree, sender, path, gc, None)
        assert public.tree.tree_hash() == h(up["tree_hash_after"])
        assert public.commit_secret is None
        assert receivers == len(privs) - (1 if sender in privs else 0)
        # the input tree is untouched
        assert tree.encode() == h(entry["ratchet_tree"])


def _check_create(entry: dict[str, Any]) -> None:
    """Each member with private state creates a new UpdatePath; every other member processes it."""
    suite, tree, gc, privs = _setup(entry)
    for sender, (_keys, sig_priv) in privs.items():
        created = create_update_path(tree, sender, gc, sig_priv)
        created.tree.verify_parent_hashes()
        created.private_keys.verify(suite, created.tree)
        assert created.group_context.tree_hash == created.tree.tree_hash()
        for index, (keys, _sig) in privs.items():
            if index == sender:
                continue
            res = process_update_path(tree, sender, created.update_path, gc, keys)
            assert res.tree == created.tree
            assert res.tree.tree_hash() == created.tree.tree_hash()
            assert res.commit_secret == created.commit_secret
            assert res.path_secret == created.path_secret_for(index)
            assert res.private_keys is not None
            res.private_keys.verify(suite, res.tree)
