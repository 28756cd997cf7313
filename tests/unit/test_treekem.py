"""Unit tests of crdt_mls.mls.treekem (RFC 9420 sections 7.4-7.6, 12.4.2)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from crdt_mls.errors import DecryptionError, InvalidArgument, SignatureError, TreeError
from crdt_mls.mls import treemath
from crdt_mls.mls.messages import MLS10, GroupContext, HPKECiphertext, LeafNode, UpdatePath
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.treekem import (
    CreatedUpdatePath,
    TreePrivateKeys,
    create_update_path,
    derive_node_key_pair,
    process_update_path,
)
from tests.unit.test_ratchet_tree import GROUP_ID, SUITE, build_group, make_member

GC = GroupContext(MLS10, SUITE.suite_id, GROUP_ID, 7, b"", b"\x11" * 32)


def _seeded(seed: int) -> Callable[[int], bytes]:
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def _commit(tree: RatchetTree, sender: int, sig_priv: bytes, **kw: object) -> CreatedUpdatePath:
    return create_update_path(tree, sender, GC, sig_priv, **kw)  # type: ignore[arg-type]


def test_every_member_commits_and_everyone_follows() -> None:
    tree, members, keys = build_group(6)
    for sender in (3, 0, 5, 1):
        created = _commit(tree, sender, members[sender].sig_priv)
        created.tree.verify_integrity(GROUP_ID, created.group_context.tree_hash)
        new_keys = {sender: created.private_keys}
        for i, k in keys.items():
            if i == sender:
                continue
            res = process_update_path(tree, sender, created.update_path, GC, k)
            assert res.tree == created.tree
            assert res.commit_secret == created.commit_secret
            assert res.group_context == created.group_context
            assert res.private_keys is not None
            res.private_keys.verify(SUITE, res.tree)
            # the receiver knows exactly the keys of its own direct path that are non-blank
            expected = {2 * i} | {
                p for p in treemath.direct_path(2 * i, res.tree.n_leaves) if res.tree.node(p) is not None
            }
            assert set(res.private_keys) == expected
            new_keys[i] = res.private_keys
        tree, keys = created.tree, new_keys


def test_excluded_joiners_get_no_ciphertexts_and_use_the_welcome_path_secret() -> None:
    tree, members, keys = build_group(3)
    joiners = [make_member(10 + i) for i in range(3)]
    grown = tree.copy()
    for j in joiners:
        j.index = grown.add_leaf(j.leaf)
    assert [j.index for j in joiners] == [3, 4, 5]
    excluded = [j.index for j in joiners]
    created = _commit(grown, 1, members[1].sig_priv, excluded_leaves=excluded)
    joiner_nodes = {2 * j.index for j in joiners}
    # ciphertext count equals the resolution without the joiners
    for (_p, s), node in zip(grown.filtered_direct_path_with_copath(1), created.update_path.nodes, strict=True):
        res = created.tree.resolution_excluding(s, excluded)
        assert not joiner_nodes & set(res)
        assert len(node.encrypted_path_secret) == len(res)
    for i in (0, 2):
        res2 = process_update_path(grown, 1, created.update_path, GC, keys[i], excluded_leaves=excluded)
        assert res2.commit_secret == created.commit_secret
    for j in joiners:
        ps = created.path_secret_for(j.index)
        assert ps is not None
        lca = treemath.common_ancestor(2, 2 * j.index)
        k = TreePrivateKeys.for_leaf(j.index, j.enc_priv).with_path_secret(SUITE, created.tree, lca, ps)
        k.verify(SUITE, created.tree)
        assert treemath.root(created.tree.n_leaves) in k
        # a joiner processing the path is a no-op for its keys
        out = process_update_path(grown, 1, created.update_path, GC, k, excluded_leaves=excluded)
        assert out.commit_secret is None


def test_deterministic_with_seeded_rng() -> None:
    tree, members, _keys = build_group(4)
    a = _commit(tree, 2, members[2].sig_priv, rng=_seeded(1))
    b = _commit(tree, 2, members[2].sig_priv, rng=_seeded(1))
    assert a.tree == b.tree and a.commit_secret == b.commit_secret
    c = _commit(tree, 2, members[2].sig_priv, rng=_seeded(2))
    assert c.commit_secret != a.commit_secret


def test_single_member_commit() -> None:
    m = make_member(0)
    tree = RatchetTree.create(SUITE, m.leaf)
    created = _commit(tree, 0, m.sig_priv)
    assert created.update_path.nodes == ()
    assert len(created.commit_secret) == SUITE.hash_length
    created.tree.verify_integrity(GROUP_ID)


def test_create_rejects_bad_arguments() -> None:
    tree, members, _keys = build_group(3)
    tree.add_leaf(make_member(9).leaf)
    with pytest.raises(InvalidArgument):
        _commit(tree, 0, members[0].sig_priv, excluded_leaves=[0])
    tree.remove_leaf(2)
    with pytest.raises(InvalidArgument):
        _commit(tree, 2, members[0].sig_priv)


# ------------------------------------------------------------------------------ hostile paths


@pytest.fixture(scope="module")
def scenario() -> tuple[RatchetTree, dict[int, TreePrivateKeys], CreatedUpdatePath, list[bytes]]:
    tree, members, keys = build_group(5)
    created = _commit(tree, 0, members[0].sig_priv)
    return tree, keys, created, [m.sig_priv for m in members]


def _expect_rejected(
    scenario: tuple[RatchetTree, dict[int, TreePrivateKeys], CreatedUpdatePath, list[bytes]],
    path: UpdatePath,
    exc: type[Exception] | tuple[type[Exception], ...],
    receiver: int = 4,
    gc: GroupContext = GC,
) -> None:
    tree, keys, _created, _sigs = scenario
    before = tree.encode()
    before_hash = tree.tree_hash()
    k = keys[receiver]
    with pytest.raises(exc):
        process_update_path(tree, 0, path, gc, k)
    assert tree.encode() == before and tree.tree_hash() == before_hash
    assert keys[receiver] is k


def _resign(leaf: LeafNode, sig_priv: bytes, index: int = 0) -> LeafNode:
    unsigned = leaf.without_signature()
    return unsigned.with_signature(SUITE.sign_with_label(sig_priv, "LeafNodeTBS", unsigned.tbs(GROUP_ID, index)))


def test_good_path_is_accepted(scenario) -> None:  # type: ignore[no-untyped-def]
    tree, keys, created, _sigs = scenario
    res = process_update_path(tree, 0, created.update_path, GC, keys[4])
    assert res.commit_secret == created.commit_secret


def test_tampered_leaf_signature(scenario) -> None:  # type: ignore[no-untyped-def]
    _tree, _keys, created, _sigs = scenario
    leaf = created.update_path.leaf_node
    bad = replace(created.update_path, leaf_node=replace(leaf, signature=bytes(len(leaf.signature))))
    _expect_rejected(scenario, bad, SignatureError)


def test_broken_leaf_parent_hash(scenario) -> None:  # type: ignore[no-untyped-def]
    _tree, _keys, created, sigs = scenario
    leaf = created.update_path.leaf_node
    forged = _resign(replace(leaf, parent_hash=b"\x00" * 32), sigs[0])
    _expect_rejected(scenario, replace(created.update_path, leaf_node=forged), TreeError)


def test_wrong_number_of_path_nodes(scenario) -> None:  # type: ignore[no-untyped-def]
    _tree, _keys, created, _sigs = scenario
    path = created.update_path
    _expect_rejected(scenario, replace(path, nodes=path.nodes[:-1]), TreeError)
    _expect_rejected(scenario, replace(path, nodes=(*path.nodes, path.nodes[-1])), TreeError)


def test_wrong_number_of_ciphertexts(scenario) -> None:  # type: ignore[no-untyped-def]
    _tree, _keys, created, _sigs = scenario
    path = created.update_path
    n0 = path.nodes[-1]
    extra = replace(n0, encrypted_path_secret=(*n0.encrypted_path_secret, n0.encrypted_path_secret[0]))
    _expect_rejected(scenario, replace(path, nodes=(*path.nodes[:-1], extra)), TreeError)


def test_substituted_public_key_breaks_parent_hash(scenario) -> None:  # type: ignore[no-untyped-def]
    _tree, _keys, created, _sigs = scenario
    path = created.update_path
    _priv, pub = SUITE.generate_hpke_key_pair()
    n0 = replace(path.nodes[-1], encryption_key=pub)
    _expect_rejected(scenario, replace(path, nodes=(*path.nodes[:-1], n0)), TreeError)


def test_path_secret_not_matching_public_keys(scenario) -> None:  # type: ignore[no-untyped-def]
    """A committer that encrypts a wrong path secret (consistent parent hashes, signed) is caught
    by the public-key check (RFC 9420 section 7.5 step 6)."""
    tree, _keys, created, sigs = scenario
    path = created.update_path
    # re-encrypt a random path secret to the receiver's resolution node in the last position
    fdp = created.tree.filtered_direct_path_with_copath(0)
    pos = len(fdp) - 1
    res = created.tree.resolution(fdp[pos][1])
    ctx = created.group_context.to_bytes()
    cts = []
    for r in res:
        v = created.tree.node(r)
        assert v is not None
        kem, ct = SUITE.encrypt_with_label(v.encryption_key, "UpdatePathNode", ctx, b"\x42" * SUITE.hash_length)
        cts.append(HPKECiphertext(kem, ct))
    node = replace(path.nodes[pos], encrypted_path_secret=tuple(cts))
    bad = replace(path, nodes=(*path.nodes[:pos], node))
    _expect_rejected(scenario, bad, TreeError)
    assert tree.n_leaves == 8 and sigs


def test_tampered_ciphertext_and_wrong_context(scenario) -> None:  # type: ignore[no-untyped-def]
    _tree, _keys, created, _sigs = scenario
    path = created.update_path
    n0 = path.nodes[-1]
    ct0 = n0.encrypted_path_secret[0]
    flipped = HPKECiphertext(ct0.kem_output, bytes([ct0.ciphertext[0] ^ 1]) + ct0.ciphertext[1:])
    node = replace(n0, encrypted_path_secret=(flipped, *n0.encrypted_path_secret[1:]))
    _expect_rejected(scenario, replace(path, nodes=(*path.nodes[:-1], node)), DecryptionError)
    _expect_rejected(scenario, path, DecryptionError, gc=replace(GC, epoch=GC.epoch + 1))


def test_reused_keys_rejected(scenario) -> None:  # type: ignore[no-untyped-def]
    tree, _keys, created, sigs = scenario
    path = created.update_path
    existing = tree.leaf(3)
    assert existing is not None
    # a path node reusing a key already in the tree
    node = replace(path.nodes[0], encryption_key=existing.encryption_key)
    _expect_rejected(scenario, replace(path, nodes=(node, *path.nodes[1:])), TreeError)
    # a new leaf that keeps the committer's current encryption key
    current = tree.leaf(0)
    assert current is not None
    leaf = _resign(replace(path.leaf_node, encryption_key=current.encryption_key), sigs[0])
    _expect_rejected(scenario, replace(path, leaf_node=leaf), TreeError)


def test_non_commit_leaf_and_bad_sender(scenario) -> None:  # type: ignore[no-untyped-def]
    tree, keys, created, _sigs = scenario
    path = created.update_path
    from crdt_mls.mls.messages import LeafNodeSource

    leaf = replace(path.leaf_node, leaf_node_source=LeafNodeSource.UPDATE, parent_hash=None)
    _expect_rejected(scenario, replace(path, leaf_node=leaf), TreeError)
    with pytest.raises(TreeError):
        process_update_path(tree, 7, path, GC, keys[4])  # blank leaf
    with pytest.raises(TreeError):
        process_update_path(tree, 99, path, GC, keys[4])  # outside the tree
    with pytest.raises(InvalidArgument):
        process_update_path(tree, 0, path, GC, keys[0])  # own path


def test_secrets_not_in_repr(scenario) -> None:  # type: ignore[no-untyped-def]
    tree, keys, created, _sigs = scenario
    res = process_update_path(tree, 0, created.update_path, GC, keys[4])
    texts = [repr(created), repr(res), repr(res.private_keys), repr(created.private_keys)]
    secrets = [created.commit_secret, *created.path_secrets.values(), *created.private_keys.keys.values()]
    assert res.path_secret is not None
    secrets.append(res.path_secret)
    for text in texts:
        for s in secrets:
            assert s.hex() not in text and repr(s) not in text


def test_node_key_derivation_matches_tree(scenario) -> None:  # type: ignore[no-untyped-def]
    _tree, _keys, created, _sigs = scenario
    for node, ps in created.path_secrets.items():
        _priv, pub = derive_node_key_pair(SUITE, ps)
        v = created.tree.node(node)
        assert v is not None and v.encryption_key == pub
    with pytest.raises(TreeError):
        created.private_keys.with_node_secret(SUITE, created.tree, created.tree.root, b"\x00" * 32)


def test_create_rejects_foreign_signature_key() -> None:
    tree, members, _keys = build_group(3)
    with pytest.raises(InvalidArgument):
        _commit(tree, 0, members[1].sig_priv)


# ------------------------------------------------------------------------------ random histories


def _update_leaf(leaf: LeafNode, sig_priv: bytes, index: int) -> tuple[LeafNode, bytes]:
    from crdt_mls.mls.messages import LeafNodeSource

    priv, pub = SUITE.generate_hpke_key_pair()
    unsigned = replace(
        leaf, encryption_key=pub, leaf_node_source=LeafNodeSource.UPDATE, lifetime=None, parent_hash=None
    )
    unsigned = unsigned.without_signature()
    sig = SUITE.sign_with_label(sig_priv, "LeafNodeTBS", unsigned.tbs(GROUP_ID, index))
    return unsigned.with_signature(sig), priv


@pytest.mark.parametrize("seed", range(6))
def test_random_history_converges(seed: int) -> None:
    """Random commits with adds, removes and updates: every member ends with the committer's
    tree and commit secret, the cached tree hash equals a from-scratch one, the tree passes
    the joiner checks, and every member's private keys match the tree."""
    rnd = random.Random(seed)
    tree, members, keys = build_group(rnd.randint(2, 5))
    sig = {m.index: m.sig_priv for m in members}
    next_id = 100
    for _round in range(8):
        current = sorted(keys)
        committer = rnd.choice(current)
        work = tree.copy()
        # updates from other members (RFC 9420 12.2 order: updates, removes, adds)
        updated: dict[int, bytes] = {}
        for i in rnd.sample([i for i in current if i != committer], k=min(len(current) - 1, rnd.randint(0, 1))):
            leaf = work.leaf(i)
            assert leaf is not None
            new_leaf, priv = _update_leaf(leaf, sig[i], i)
            work.update_leaf(i, new_leaf)
            updated[i] = priv
        removable = [i for i in current if i != committer and i not in updated]
        removed = rnd.sample(removable, k=min(len(removable), rnd.randint(0, 2)))
        for i in removed:
            work.remove_leaf(i)
        joiners = []
        for _ in range(rnd.randint(0, 3)):
            m = make_member(next_id)
            next_id += 1
            m.index = work.add_leaf(m.leaf)
            joiners.append(m)
        added = [m.index for m in joiners]
        created = _commit(work, committer, sig[committer], excluded_leaves=added, rng=_seeded(seed * 100 + _round))

        new_keys = {committer: created.private_keys}
        for i in current:
            if i == committer or i in removed:
                continue
            k = keys[i]
            if i in updated:
                k = TreePrivateKeys.for_leaf(i, updated[i])
            res = process_update_path(work, committer, created.update_path, GC, k.pruned(work), excluded_leaves=added)
            assert res.tree == created.tree
            assert res.commit_secret == created.commit_secret
            assert res.private_keys is not None
            new_keys[i] = res.private_keys
        for m in joiners:
            ps = created.path_secret_for(m.index)
            assert ps is not None
            lca = treemath.common_ancestor(2 * committer, 2 * m.index)
            new_keys[m.index] = TreePrivateKeys.for_leaf(m.index, m.enc_priv).with_path_secret(
                SUITE, created.tree, lca, ps
            )
            sig[m.index] = m.sig_priv
        tree, keys = created.tree, new_keys

        assert tree.tree_hash() == RatchetTree(SUITE, list(tree.nodes())).tree_hash()
        assert RatchetTree.decode(SUITE, tree.encode()) == tree
        tree.verify_integrity(GROUP_ID, tree.tree_hash())
        assert sorted(keys) == [i for i, _leaf in tree.members()]
        for k in keys.values():
            k.verify(SUITE, tree)


def test_malformed_public_key_is_decode_error(scenario) -> None:  # type: ignore[no-untyped-def]
    from crdt_mls.errors import DecodeError

    _tree, _keys, created, _sigs = scenario
    path = created.update_path
    node = replace(path.nodes[0], encryption_key=b"\x01" * 5)
    _expect_rejected(scenario, replace(path, nodes=(node, *path.nodes[1:])), DecodeError)


def test_update_path_on_large_tree_rehashes_only_the_path() -> None:
    """On a fully populated 1024-leaf tree, creating and processing an UpdatePath hashes
    O(log n) nodes (tree hash and parent hash caches), not O(n)."""
    from crdt_mls.mls.messages import ParentNode
    from crdt_mls.mls.ratchet_tree import direct_path
    from tests.unit.test_ratchet_tree import CountingSuite, _fake_leaf

    n = 1024
    committer, receiver = make_member(0), make_member(1)
    privs: dict[int, bytes] = {}
    nodes: list[LeafNode | ParentNode | None] = []
    for x in range(2 * n - 1):
        priv, pub = SUITE.generate_hpke_key_pair()
        privs[x] = priv
        if x % 2:
            nodes.append(ParentNode(pub, b"", ()))
        else:
            base = _fake_leaf(x // 2) if x // 2 >= 2 else (committer, receiver)[x // 2].leaf
            nodes.append(replace(base, encryption_key=pub))
    counting = CountingSuite(SUITE)
    tree = RatchetTree(counting, nodes)  # type: ignore[arg-type]
    tree.tree_hash()
    counting.hashes = 0
    created = create_update_path(tree, 0, GC, committer.sig_priv)
    assert counting.hashes <= 3 * 11
    keys = TreePrivateKeys(1, {x: privs[x] for x in (2, *direct_path(2, n))})
    counting.hashes = 0
    res = process_update_path(tree, 0, created.update_path, GC, keys)
    assert counting.hashes <= 3 * 11
    assert res.commit_secret == created.commit_secret
    assert res.tree.tree_hash() == RatchetTree(SUITE, list(res.tree.nodes())).tree_hash()
