"""Unit tests of crdt_mls.mls.ratchet_tree (RFC 9420 sections 4, 7)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.errors import DecodeError, InvalidArgument, ProposalError, SignatureError, TreeError
from crdt_mls.mls import treemath
from crdt_mls.mls.codec import Writer
from crdt_mls.mls.messages import (
    Capabilities,
    Credential,
    Extension,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ParentNode,
    Remove,
    RequiredCapabilities,
    Update,
    encode_ratchet_tree,
)
from crdt_mls.mls.ratchet_tree import (
    NodeValue,
    RatchetTree,
    apply_proposal,
    validate_leaf_node,
    verify_leaf_signature,
)
from crdt_mls.mls.suites import CipherSuite, get_cipher_suite
from crdt_mls.mls.treekem import TreePrivateKeys, create_update_path

SUITE = get_cipher_suite(1)
GROUP_ID = b"unit-test-group"


# ------------------------------------------------------------------------------ helpers


@dataclass
class Member:
    index: int
    sig_priv: bytes
    enc_priv: bytes
    leaf: LeafNode


def make_member(i: int, suite: CipherSuite = SUITE) -> Member:
    """A member with a signed key_package-source LeafNode."""
    sig_priv, sig_pub = suite.generate_signature_key_pair()
    enc_priv, enc_pub = suite.generate_hpke_key_pair()
    leaf = LeafNode(
        enc_pub,
        sig_pub,
        Credential.basic(b"member-%d" % i),
        Capabilities(cipher_suites=(suite.suite_id,)),
        LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(0, 2**64 - 1),
    )
    leaf = leaf.with_signature(suite.sign_with_label(sig_priv, "LeafNodeTBS", leaf.tbs()))
    return Member(i, sig_priv, enc_priv, leaf)


def _gc(tree_hash: bytes = b"") -> Any:
    from crdt_mls.mls.messages import MLS10, GroupContext

    return GroupContext(MLS10, SUITE.suite_id, GROUP_ID, 1, tree_hash, b"\x00" * 32)


def build_group(n: int) -> tuple[RatchetTree, list[Member], dict[int, TreePrivateKeys]]:
    """Member 0 creates the group, adds n-1 members, and commits with an UpdatePath;
    the joiners install the path secret the way a Welcome gives it to them."""
    members = [make_member(i) for i in range(n)]
    tree = RatchetTree.create(SUITE, members[0].leaf)
    for m in members[1:]:
        assert tree.add_leaf(m.leaf) == m.index
    created = create_update_path(tree, 0, _gc(), members[0].sig_priv, excluded_leaves=range(1, n))
    tree = created.tree
    keys: dict[int, TreePrivateKeys] = {0: created.private_keys}
    for m in members[1:]:
        k = TreePrivateKeys.for_leaf(m.index, m.enc_priv)
        ps = created.path_secret_for(m.index)
        assert ps is not None
        lca = treemath.common_ancestor(0, 2 * m.index)
        keys[m.index] = k.with_path_secret(SUITE, tree, lca, ps)
        keys[m.index].verify(SUITE, tree)
    return tree, members, keys


def _fake_leaf(i: int) -> LeafNode:
    return LeafNode(
        os.urandom(32),
        os.urandom(32),
        Credential.basic(b"%d" % i),
        Capabilities(),
        LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(0, 1),
        signature=b"sig",
    )


def _fake_parent(unmerged: tuple[int, ...] = ()) -> ParentNode:
    return ParentNode(os.urandom(32), b"", unmerged)


class CountingSuite:
    """Delegates to a real suite and counts hash calls."""

    def __init__(self, suite: CipherSuite) -> None:
        self._suite = suite
        self.hashes = 0

    def hash(self, data: bytes) -> bytes:
        self.hashes += 1
        return self._suite.hash(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._suite, name)


# ------------------------------------------------------------------------------ structure


def test_add_extends_and_remove_truncates() -> None:
    tree = RatchetTree.create(SUITE, _fake_leaf(0))
    assert (tree.n_leaves, tree.width) == (1, 1)
    assert tree.add_leaf(_fake_leaf(1)) == 1
    assert (tree.n_leaves, tree.width) == (2, 3)
    assert tree.add_leaf(_fake_leaf(2)) == 2
    assert (tree.n_leaves, tree.width) == (4, 7)
    assert tree.add_leaf(_fake_leaf(3)) == 3
    assert tree.add_leaf(_fake_leaf(4)) == 4
    assert tree.n_leaves == 8
    # removing a middle member keeps the size; the hole is reused first
    tree.remove_leaf(1)
    assert tree.n_leaves == 8 and tree.leaf(1) is None
    assert tree.free_leaf() == 1
    assert tree.add_leaf(_fake_leaf(5)) == 1
    # removing the rightmost member truncates to the smallest power of two above the last leaf
    tree.remove_leaf(4)
    assert tree.n_leaves == 4
    tree.remove_leaf(3)
    tree.remove_leaf(2)
    assert tree.n_leaves == 2
    tree.remove_leaf(1)
    assert tree.n_leaves == 1 and tree.width == 1
    # encoding strips trailing blanks and decodes back to the same tree
    tree.add_leaf(_fake_leaf(6))
    tree.add_leaf(_fake_leaf(7))
    tree.remove_leaf(1)
    assert RatchetTree.decode(SUITE, tree.encode()) == tree
    assert tree.free_leaf() == 1


def test_add_marks_unmerged_in_nonblank_parents() -> None:
    tree, _members, _keys = build_group(3)  # parents 1 and 3 are set by member 0's commit
    assert tree.n_leaves == 4
    idx = tree.add_leaf(_fake_leaf(9))
    assert idx == 3
    p3 = tree.parent_node(3)
    assert p3 is not None and p3.unmerged_leaves == (3,)
    p5 = tree.parent_node(5)
    assert p5 is None
    assert tree.resolution(5) == (4, 6)
    assert tree.resolution(3) == (3, 6)


def _resolution_example() -> RatchetTree:
    """The tree of RFC 9420 section 4.1.1, figure 'A Tree with Blanks and Unmerged Leaves'."""
    nodes: list[NodeValue | None] = [None] * 15
    for leaf in (0, 1, 3, 4, 5, 7):
        nodes[2 * leaf] = _fake_leaf(leaf)
    nodes[3] = _fake_parent((1,))  # X[B]
    nodes[9] = _fake_parent()  # Y
    return RatchetTree(SUITE, nodes)


def test_resolution_rfc_example() -> None:
    tree = _resolution_example()
    assert tree.resolution(3) == (3, 2)  # X, B
    assert tree.resolution(4) == ()  # leaf 2
    assert tree.resolution(12) == ()  # leaf 6
    assert tree.resolution(7) == (3, 2, 9, 14)  # X, B, Y, H
    assert tree.resolution_excluding(7, [1, 7]) == (3, 9)


def test_filtered_direct_path_rfc_example() -> None:
    """RFC 9420 section 4.1.2, figure 'A Complete Tree with Five Members'."""
    nodes: list[NodeValue | None] = [None] * 15
    for leaf in (0, 1, 4, 5, 6):
        nodes[2 * leaf] = _fake_leaf(leaf)
    for p in (1, 9, 11, 7):  # T, X, Y, W
        nodes[p] = _fake_parent()
    tree = RatchetTree(SUITE, nodes)
    assert tree.filtered_direct_path(0) == [1, 7]  # A: T, W
    assert tree.filtered_direct_path(1) == [1, 7]
    assert tree.filtered_direct_path(4) == [9, 11, 7]  # E: X, Y, W
    assert tree.filtered_direct_path(5) == [9, 11, 7]
    assert tree.filtered_direct_path(6) == [11, 7]  # G: Y, W


# ------------------------------------------------------------------------------ decoding


def test_decode_rejects_bad_trees() -> None:
    leaf = _fake_leaf(0)
    with pytest.raises(DecodeError):
        RatchetTree.decode(SUITE, encode_ratchet_tree([]))
    with pytest.raises(DecodeError):  # last node blank
        RatchetTree.decode(SUITE, encode_ratchet_tree([leaf, None, None]))
    with pytest.raises(DecodeError):  # parent at a leaf position
        RatchetTree.decode(SUITE, encode_ratchet_tree([_fake_parent()]))
    with pytest.raises(DecodeError):  # leaf at a parent position
        RatchetTree.decode(SUITE, encode_ratchet_tree([leaf, _fake_leaf(1), _fake_leaf(2)]))
    good = encode_ratchet_tree([leaf, None, _fake_leaf(1)])
    with pytest.raises(DecodeError):  # trailing bytes
        RatchetTree.decode(SUITE, good + b"\x00")
    with pytest.raises(DecodeError):  # truncated
        RatchetTree.decode(SUITE, good[:-1])
    # a short encoding is extended with blanks to the next full width
    t = RatchetTree.decode(SUITE, encode_ratchet_tree([leaf, None, _fake_leaf(1), None, _fake_leaf(2)]))
    assert (t.n_leaves, t.width) == (4, 7)


def test_constructor_rejects_wrong_size_and_types() -> None:
    with pytest.raises(InvalidArgument):
        RatchetTree(SUITE, [None, None])
    with pytest.raises(InvalidArgument):
        RatchetTree(SUITE, [])
    with pytest.raises(InvalidArgument):
        RatchetTree(SUITE, [_fake_parent()])
    tree = RatchetTree(SUITE, [_fake_leaf(0), None, None])
    with pytest.raises(InvalidArgument):
        tree.set_node(1, _fake_leaf(1))
    with pytest.raises(InvalidArgument):
        tree.leaf(2)
    with pytest.raises(InvalidArgument):
        tree.node(3)


# ------------------------------------------------------------------------------ hashing / caching


def test_tree_hash_recomputes_only_the_changed_path() -> None:
    n = 1024
    counting = CountingSuite(SUITE)
    nodes: list[NodeValue | None] = [
        _fake_leaf(x // 2) if x % 2 == 0 else _fake_parent() for x in range(treemath.node_width(n))
    ]
    tree = RatchetTree(counting, nodes)  # type: ignore[arg-type]
    full = tree.tree_hash()
    assert counting.hashes == treemath.node_width(n)
    counting.hashes = 0
    assert tree.tree_hash() == full
    assert counting.hashes == 0

    snapshot = tree.copy()
    leaf = 300
    tree.set_leaf(leaf, _fake_leaf(10_000))
    for p in treemath.direct_path(2 * leaf, n):
        tree.set_node(p, _fake_parent())
    new = tree.tree_hash()
    assert new != full
    assert counting.hashes == 11  # the leaf and its 10 ancestors: O(log n)
    # the copy keeps its own cache and contents
    counting.hashes = 0
    assert snapshot.tree_hash() == full
    assert counting.hashes == 0
    # and a from-scratch hash agrees with the incrementally maintained one
    assert RatchetTree(SUITE, list(tree.nodes())).tree_hash() == new


def test_blank_and_unmerged_excluded_sibling_hash() -> None:
    """original_sibling_tree_hash drops the parent's unmerged leaves (RFC 9420 section 7.9)."""
    tree, _m, _k = build_group(3)
    sibling_before = tree.tree_hash(5)
    tree.add_leaf(_fake_leaf(5))  # leaf 3: unmerged at the root (node 3)
    root = tree.parent_node(3)
    assert root is not None and root.unmerged_leaves == (3,)
    # the right subtree (node 5) now holds leaf 3, but the original sibling hash blanks it
    assert tree.tree_hash(5) != sibling_before
    assert tree.original_sibling_tree_hash(3, 5) == sibling_before
    assert tree.original_sibling_tree_hash(3, 1) == tree.tree_hash(1)
    tree.verify_parent_hashes()


# ------------------------------------------------------------------------------ validation


def test_valid_group_passes_integrity() -> None:
    tree, _members, _keys = build_group(5)
    tree.verify_integrity(GROUP_ID, tree.tree_hash())
    decoded = RatchetTree.decode(SUITE, tree.encode())
    decoded.verify_integrity(GROUP_ID, tree.tree_hash())


def test_broken_parent_hash_is_tree_error() -> None:
    tree, _members, _keys = build_group(4)
    root = tree.parent_node(tree.root)
    assert root is not None
    bad = tree.copy()
    bad.set_node(bad.root, replace(root, encryption_key=os.urandom(32)))
    with pytest.raises(TreeError):
        bad.verify_parent_hashes()
    with pytest.raises(TreeError):
        bad.verify_integrity(GROUP_ID)
    p1 = tree.parent_node(1)
    assert p1 is not None
    bad = tree.copy()
    bad.set_node(1, replace(p1, parent_hash=b"\x01" * 32))
    assert not bad.parent_hash_valid(tree.root)
    with pytest.raises(TreeError):
        bad.verify_parent_hashes()
    # an extra parent node that no leaf chains to
    bad = RatchetTree.decode(SUITE, tree.encode())
    bad.add_leaf(_fake_leaf(7))
    bad.add_leaf(_fake_leaf(8))
    assert bad.parent_node(5) is None
    bad.set_node(5, _fake_parent())
    with pytest.raises(TreeError):
        bad.verify_parent_hashes()
    # the original tree is still fine
    tree.verify_parent_hashes()


def test_bad_leaf_signature_is_signature_error() -> None:
    tree, members, _keys = build_group(3)
    leaf = tree.leaf(1)
    assert leaf is not None
    verify_leaf_signature(SUITE, leaf, GROUP_ID, 1)
    bad = tree.copy()
    bad.set_leaf(1, replace(leaf, credential=Credential.basic(b"mallory")))
    with pytest.raises(SignatureError):
        bad.verify_leaf_signatures(GROUP_ID)
    with pytest.raises((SignatureError, TreeError)):  # the parent hash over leaf 1 breaks too
        bad.verify_integrity(GROUP_ID)
    # a commit-source leaf is bound to the group id and to its leaf index
    committer = tree.leaf(0)
    assert committer is not None and committer.leaf_node_source == LeafNodeSource.COMMIT
    verify_leaf_signature(SUITE, committer, GROUP_ID, 0)
    with pytest.raises(SignatureError):
        verify_leaf_signature(SUITE, committer, b"other group", 0)
    with pytest.raises(SignatureError):
        verify_leaf_signature(SUITE, committer, GROUP_ID, 1)
    assert members[0].leaf.signature_key == committer.signature_key


def test_duplicate_keys_and_bad_unmerged_are_tree_errors() -> None:
    tree, _members, _keys = build_group(3)
    leaf1 = tree.leaf(1)
    leaf2 = tree.leaf(2)
    assert leaf1 is not None and leaf2 is not None
    bad = tree.copy()
    bad.set_leaf(2, replace(leaf2, encryption_key=leaf1.encryption_key))
    assert bad.has_encryption_key(leaf1.encryption_key)
    with pytest.raises(TreeError):
        bad.verify_key_uniqueness()
    bad = tree.copy()
    bad.set_leaf(2, replace(leaf2, signature_key=leaf1.signature_key))
    with pytest.raises(TreeError):
        bad.verify_key_uniqueness()

    root = tree.parent_node(tree.root)
    assert root is not None
    for unmerged in ((0,), (3,), (2, 1), (1, 1)):
        bad = tree.copy()
        bad.set_node(bad.root, replace(root, unmerged_leaves=unmerged))
        with pytest.raises(TreeError):
            bad.verify_unmerged_leaves()
    with pytest.raises(TreeError):
        tree.verify_integrity(GROUP_ID, tree_hash=b"\x00" * 32)


def test_apply_proposal_errors_leave_tree_unchanged() -> None:
    tree, _members, _keys = build_group(3)
    before = tree.encode()
    with pytest.raises(ProposalError):
        apply_proposal(tree, Remove(3), 0)
    with pytest.raises(ProposalError):
        apply_proposal(tree, Remove(17), 0)
    with pytest.raises(ProposalError):
        apply_proposal(tree, Update(_fake_leaf(1)), 3)
    assert tree.encode() == before
    apply_proposal(tree, Remove(2), 0)
    assert tree.n_leaves == 2
    assert tree.width == 3 and tree.parent_node(1) is not None  # the old root went with the right half
    tree.verify_parent_hashes()


def test_repr_is_short() -> None:
    tree, _members, keys = build_group(3)
    assert repr(tree) == "RatchetTree(n_leaves=4, members=3)"
    r = repr(keys[1])
    for priv in keys[1].keys.values():
        assert priv.hex() not in r and repr(priv) not in r


def test_encode_writer_roundtrip() -> None:
    tree, _members, _keys = build_group(4)
    w = Writer()
    w.fixed(tree.encode())
    assert RatchetTree.decode(SUITE, w.getvalue()) == tree


# ------------------------------------------------------------------------------ leaf node validation


def _sign(leaf: LeafNode, sig_priv: bytes, index: int | None = None) -> LeafNode:
    unsigned = leaf.without_signature()
    tbs = unsigned.tbs() if index is None else unsigned.tbs(GROUP_ID, index)
    return unsigned.with_signature(SUITE.sign_with_label(sig_priv, "LeafNodeTBS", tbs))


def test_validate_leaf_node_accepts_good_leaves() -> None:
    tree, members, _keys = build_group(3)
    newcomer = make_member(7)
    validate_leaf_node(tree, newcomer.leaf, source=LeafNodeSource.KEY_PACKAGE, group_id=GROUP_ID, now=5)
    # an existing leaf validated in place (a joiner checking the tree)
    leaf1 = tree.leaf(1)
    assert leaf1 is not None
    validate_leaf_node(tree, leaf1, source=LeafNodeSource.KEY_PACKAGE, group_id=GROUP_ID, leaf_index=1)
    # an Update from leaf 1 with a fresh encryption key, same signature key
    _priv, pub = SUITE.generate_hpke_key_pair()
    upd = _sign(
        replace(leaf1, encryption_key=pub, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None),
        members[1].sig_priv,
        1,
    )
    validate_leaf_node(tree, upd, source=LeafNodeSource.UPDATE, group_id=GROUP_ID, leaf_index=1)
    # required capabilities that are listed
    rc = RequiredCapabilities(credential_types=(1,))
    validate_leaf_node(
        tree, newcomer.leaf, source=LeafNodeSource.KEY_PACKAGE, group_id=GROUP_ID, required_capabilities=rc
    )


def test_validate_leaf_node_rejections() -> None:
    tree, members, _keys = build_group(3)
    newcomer = make_member(7)
    kp = LeafNodeSource.KEY_PACKAGE

    def bad(leaf: LeafNode, exc: type[Exception] = TreeError, **kw: Any) -> None:
        args: dict[str, Any] = {"source": kp, "group_id": GROUP_ID}
        args.update(kw)
        with pytest.raises(exc):
            validate_leaf_node(tree, leaf, **args)

    bad(newcomer.leaf, source=LeafNodeSource.UPDATE, leaf_index=1)  # wrong source
    bad(replace(newcomer.leaf, signature=bytes(64)), SignatureError)
    leaf1 = tree.leaf(1)
    assert leaf1 is not None
    bad(_sign(replace(newcomer.leaf, signature_key=leaf1.signature_key), newcomer.sig_priv), SignatureError)
    bad(_sign(replace(newcomer.leaf, encryption_key=leaf1.encryption_key), newcomer.sig_priv))
    # a signature key already used by another member (signed with that member's key)
    dup_sig = _sign(replace(newcomer.leaf, signature_key=leaf1.signature_key), members[1].sig_priv)
    bad(dup_sig)
    # unlisted extension, unlisted credential type, missing required capability, expired lifetime
    ext = Extension(0x0F0F, b"x")
    bad(_sign(replace(newcomer.leaf, extensions=(ext,)), newcomer.sig_priv))
    bad(_sign(replace(newcomer.leaf, capabilities=Capabilities(credentials=(2,))), newcomer.sig_priv))
    bad(newcomer.leaf, required_capabilities=RequiredCapabilities(extension_types=(0x0F0F,)))
    bad(newcomer.leaf, now=2**64)
    # an Update that keeps the current encryption key
    upd = _sign(replace(leaf1, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None), members[1].sig_priv, 1)
    bad(upd, source=LeafNodeSource.UPDATE, leaf_index=1)
    # a member that does not support the newcomer's credential type
    x509 = _sign(
        replace(newcomer.leaf, credential=Credential(2, b""), capabilities=Capabilities(credentials=(1, 2))),
        newcomer.sig_priv,
    )
    bad(x509)


def test_validate_leaf_node_cache_follows_tree_changes() -> None:
    tree, _members, _keys = build_group(3)
    a, b = make_member(20), make_member(21)
    kp = LeafNodeSource.KEY_PACKAGE
    validate_leaf_node(tree, a.leaf, source=kp, group_id=GROUP_ID)  # builds the cached summary
    snapshot = tree.copy()
    tree.add_leaf(a.leaf)
    clash = _sign(replace(b.leaf, signature_key=a.leaf.signature_key), a.sig_priv)
    with pytest.raises(TreeError):
        validate_leaf_node(tree, clash, source=kp, group_id=GROUP_ID)
    validate_leaf_node(snapshot, clash, source=kp, group_id=GROUP_ID)  # the copy is unaffected
    tree.remove_leaf(3)
    validate_leaf_node(tree, clash, source=kp, group_id=GROUP_ID)


@given(st.integers(0, 2**12 - 2), st.integers(0, 2**12 - 2))
@settings(max_examples=500)
def test_common_ancestor_is_the_lowest_node_whose_subtree_holds_both(x: int, y: int) -> None:
    """RFC 9420 appendix C: the common ancestor, checked against the definition (the lowest
    node on both nodes' ancestor chains, in a tree wide enough for both)."""
    n = 1 << 12

    def chain(v: int) -> list[int]:
        out = [v]
        while out[-1] != treemath.root(n):
            out.append(treemath.parent(out[-1], n))
        return out

    cx, cy = chain(x), set(chain(y))
    assert treemath.common_ancestor(x, y) == next(v for v in cx if v in cy)
