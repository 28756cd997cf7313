"""The joiner's tree checks (RFC 9420 sections 7.9.2, 12.4.3.1) against reference versions.

`RatchetTree.parent_hash_valid` stops enumerating a child's resolution as soon as it is larger
than the parent's unmerged leaves under that child plus one (no descendant can then be
parent-hash valid); `verify_key_uniqueness` compares set sizes before naming a duplicate.
Both must give the verdicts of the plain definitions on valid and corrupted trees.
"""

from __future__ import annotations

import random
from dataclasses import replace

from crdt_mls.errors import TreeError
from crdt_mls.mls import treemath
from crdt_mls.mls.messages import MLS10, GroupContext, LeafNode, LeafNodeSource, ParentNode
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.mls.treekem import create_update_path
from tests.unit.test_ratchet_tree import SUITE, make_member


def reference_parent_hash_valid(tree: RatchetTree, p: int) -> bool:
    """RFC 9420 section 7.9.2, top down, straight from the definition (full resolutions)."""
    pv = tree.node(p)
    if pv is None:
        return True
    assert isinstance(pv, ParentNode)
    left, right = treemath.left(p), treemath.right(p)
    found = 0
    for c, s in ((left, right), (right, left)):
        ph = tree.compute_parent_hash(p, s)
        leaves = treemath.subtree_leaves(c)
        unmerged_c = {2 * u for u in pv.unmerged_leaves if u in leaves}
        res = tree.resolution(c)
        for d in res:
            v = tree.node(d)
            dph = (
                v.parent_hash
                if isinstance(v, ParentNode)
                or (isinstance(v, LeafNode) and v.leaf_node_source == LeafNodeSource.COMMIT)
                else None
            )
            if dph == ph and set(res) - {d} == unmerged_c:
                found += 1
    return found == 1


def _evolve(rng: random.Random, n_members: int, steps: int) -> RatchetTree:
    """A tree shaped by adds (unmerged leaves), commits from random members and removes."""
    members = {i: make_member(i) for i in range(n_members)}
    tree = RatchetTree.create(SUITE, members[0].leaf)
    nxt = n_members
    for i in range(1, n_members):
        tree.add_leaf(members[i].leaf)
    for step in range(steps):
        live = [i for i, _ in tree.members()]
        op = rng.random()
        if op < 0.3 and len(live) > 2:
            victim = rng.choice(live[1:])
            tree.remove_leaf(victim)
            members.pop(victim, None)
        elif op < 0.6:
            m = make_member(nxt)
            nxt += 1
            idx = tree.add_leaf(m.leaf)
            members[idx] = replace(m, index=idx)
        else:
            committer = rng.choice([i for i in live if i in members])
            gc = GroupContext(MLS10, 1, b"g", step, b"", b"")
            created = create_update_path(tree, committer, gc, members[committer].sig_priv)
            tree = created.tree
    return tree


def _corrupt(rng: random.Random, tree: RatchetTree) -> RatchetTree:
    bad = tree.copy()
    parents = [x for x, v in enumerate(bad.nodes()) if v is not None and x & 1]
    blanks = [x for x, v in enumerate(bad.nodes()) if v is None and x & 1]
    choice = rng.random()
    if parents and choice < 0.4:
        p = rng.choice(parents)
        v = bad.node(p)
        assert isinstance(v, ParentNode)
        bad.set_node(p, replace(v, parent_hash=bytes(32) if rng.random() < 0.5 else v.parent_hash[::-1]))
    elif parents and choice < 0.7:
        p = rng.choice(parents)
        v = bad.node(p)
        assert isinstance(v, ParentNode)
        leaves = list(treemath.subtree_leaves(p))
        extra = tuple(sorted(set(v.unmerged_leaves) ^ {rng.choice(leaves)}))
        bad.set_node(p, replace(v, unmerged_leaves=extra))
    elif blanks:
        bad.set_node(rng.choice(blanks), ParentNode(rng.randbytes(32), rng.randbytes(32), ()))
    elif parents:
        bad.set_node(rng.choice(parents), None)
    return bad


def test_parent_hash_checks_agree_with_the_definition() -> None:
    rng = random.Random(7)
    checked = invalid = 0
    for trial in range(12):
        tree = _evolve(rng, rng.randint(2, 12), rng.randint(2, 10))
        for candidate in (tree, _corrupt(rng, tree), _corrupt(rng, _corrupt(rng, tree))):
            for p in range(1, candidate.width, 2):
                want = reference_parent_hash_valid(candidate, p)
                assert candidate.parent_hash_valid(p) == want, f"trial {trial}, node {p}"
                checked += 1
                invalid += not want
    assert checked > 300 and invalid > 5


def test_large_blank_subtrees_do_not_need_their_resolution() -> None:
    """After an add-all commit the copath subtrees are blank with many leaves: every check
    passes without building their resolutions."""
    members = [make_member(i) for i in range(40)]
    tree = RatchetTree.create(SUITE, members[0].leaf)
    for m in members[1:]:
        tree.add_leaf(m.leaf)
    gc = GroupContext(MLS10, 1, b"g", 1, b"", b"")
    created = create_update_path(tree, 0, gc, members[0].sig_priv, excluded_leaves=range(1, 40))
    fresh = RatchetTree.decode(SUITE, created.tree.encode())
    fresh.verify_parent_hashes()
    for p in range(1, fresh.width, 2):
        assert fresh.parent_hash_valid(p) == reference_parent_hash_valid(fresh, p)


def test_key_uniqueness_names_the_first_duplicate_in_node_order() -> None:
    members = [make_member(i) for i in range(6)]
    tree = RatchetTree.create(SUITE, members[0].leaf)
    for m in members[1:]:
        tree.add_leaf(m.leaf)
    tree.verify_key_uniqueness()
    leaf1, leaf4 = tree.leaf(1), tree.leaf(4)
    assert leaf1 is not None and leaf4 is not None
    bad = tree.copy()
    bad.set_leaf(4, replace(leaf4, encryption_key=leaf1.encryption_key))
    bad.set_leaf(5, replace(leaf4, signature_key=leaf1.signature_key))
    try:
        bad.verify_key_uniqueness()
    except TreeError as e:
        assert "node 8" in str(e)
    else:  # pragma: no cover
        raise AssertionError("duplicate key accepted")
    bad = tree.copy()
    bad.set_leaf(5, replace(tree.leaf(5), signature_key=leaf1.signature_key))  # type: ignore[arg-type]
    try:
        bad.verify_key_uniqueness()
    except TreeError as e:
        assert "leaf 5" in str(e)
    else:  # pragma: no cover
        raise AssertionError("duplicate key accepted")
