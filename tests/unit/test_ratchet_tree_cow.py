"""The ratchet tree's copy-on-write storage: deriving a tree never changes the one it came
from, caches stay exact across shared chunks, and `RatchetTree.diff` (RFC 9420 sections 4, 7.8)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt_mls.mls import treemath
from crdt_mls.mls.messages import Capabilities, Credential, LeafNode, LeafNodeSource, Lifetime, ParentNode
from crdt_mls.mls.ratchet_tree import NodeValue, RatchetTree
from crdt_mls.mls.suites import get_cipher_suite

SUITE = get_cipher_suite(1)


def _leaf(i: int, credential_types: tuple[int, ...] = (1,)) -> LeafNode:
    return LeafNode(
        os.urandom(32),
        os.urandom(32),
        Credential.basic(b"%d" % i),
        Capabilities(credentials=credential_types),
        LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(0, 1),
        signature=b"sig",
    )


def _parent() -> ParentNode:
    return ParentNode(os.urandom(32), b"", ())


#: Leaves shared by all examples (the same leaf may appear in several trees).
POOL = [_leaf(i, (1,) if i % 3 else (1, 2)) for i in range(24)]


def _big_tree(n_leaves: int) -> RatchetTree:
    nodes: list[NodeValue | None] = [
        _leaf(x // 2) if x % 2 == 0 else _parent() for x in range(treemath.node_width(n_leaves))
    ]
    return RatchetTree(SUITE, nodes)


# ------------------------------------------------------------------------------ diff


def test_diff_of_a_copy_lists_exactly_the_changed_nodes() -> None:
    base = _big_tree(2048)
    base.tree_hash()
    new = base.copy()
    assert base.diff(new) == [] == new.diff(base)
    new.set_leaf(100, _leaf(9999))
    new.blank_path(1500)
    expected = sorted({200, *treemath.direct_path(3000, 2048)})
    assert new.diff(base) == expected
    assert base.diff(new) == expected
    # the original is untouched
    assert base.node(200) != new.node(200)
    assert all(base.node(p) is not None for p in treemath.direct_path(3000, 2048))


def test_diff_compares_values_and_handles_different_widths() -> None:
    leaves = [_leaf(i) for i in range(4)]
    a = RatchetTree.create(SUITE, leaves[0])
    for lf in leaves[1:3]:
        a.add_leaf(lf)
    b = RatchetTree.create(SUITE, leaves[0])
    for lf in leaves[1:3]:
        b.add_leaf(lf)
    assert a.diff(b) == []  # equal values, separately built
    c = a.copy()
    c.add_leaf(leaves[3])  # fills the 4th leaf (node 6) of the same width
    assert a.diff(c) == [6]
    d = c.copy()
    d.add_leaf(_leaf(5))  # extends to 8 leaves: node 8 is new
    assert c.diff(d) == [8]
    d.remove_leaf(4)  # truncates back to 4 leaves
    assert c.diff(d) == []


def test_diff_is_cheap_when_trees_share_chunks() -> None:
    """Shared chunks are skipped without comparing their nodes (counted via __eq__ calls)."""
    base = _big_tree(4096)
    new = base.copy()
    new.set_leaf(7, _leaf(77))
    calls = 0
    original_eq = LeafNode.__eq__

    def counting_eq(self: LeafNode, other: object) -> bool:
        nonlocal calls
        calls += 1
        return original_eq(self, other)

    LeafNode.__eq__ = counting_eq  # type: ignore[method-assign,assignment]
    try:
        assert new.diff(base) == [14]
    finally:
        LeafNode.__eq__ = original_eq  # type: ignore[method-assign]
    assert calls <= 1  # only the changed chunk's nodes were looked at (the others are identical objects)


# ------------------------------------------------------------------------------ persistence


def test_set_path_nodes_equals_node_by_node_and_checks_the_path() -> None:
    import pytest

    from crdt_mls.errors import InvalidArgument

    base = _big_tree(64)
    base.tree_hash()
    path = treemath.direct_path(2 * 9, 64)
    values = [(p, _parent()) for p in path]
    one, many = base.copy(), base.copy()
    one.set_path_nodes(9, values)
    for p, v in values:
        many.set_node(p, v)
    assert list(one.nodes()) == list(many.nodes())
    assert one.tree_hash() == many.tree_hash() == RatchetTree(SUITE, list(one.nodes())).tree_hash()
    with pytest.raises(InvalidArgument):
        base.copy().set_path_nodes(9, [(1, _parent())])  # node 1 is above leaves 0 and 1 only
    with pytest.raises(InvalidArgument):
        base.copy().set_path_nodes(9, [(path[0], _leaf(1))])  # type: ignore[list-item]


def test_set_direct_path_checks_its_arguments_and_leaves_the_tree_as_it_was() -> None:
    import pytest

    from crdt_mls.errors import InvalidArgument

    base = _big_tree(64)
    base.tree_hash()
    path = treemath.direct_path(2 * 9, 64)
    bad: list[list[tuple[int, ParentNode]]] = [
        [(1, _parent())],  # node 1 is above leaves 0 and 1 only
        [(path[0], _leaf(1))],  # type: ignore[list-item]
        [(path[1], _parent()), (2, _parent())],  # a leaf position
    ]
    for values in bad:
        t = base.copy()
        with pytest.raises(InvalidArgument):
            t.set_direct_path(9, _leaf(99), values)
        assert t.diff(base) == [] and t.tree_hash() == base.tree_hash()
    with pytest.raises(InvalidArgument):
        base.copy().set_direct_path(9, _parent(), [])  # type: ignore[arg-type]
    merged = base.copy()
    merged.set_direct_path(9, _leaf(99), [(path[2], _parent())])
    assert merged.diff(base) == sorted([18, *path])  # the leaf, and every path node (blank but one)
    assert [merged.node(p) is None for p in path] == [p != path[2] for p in path]
    assert merged.tree_hash() == RatchetTree(SUITE, list(merged.nodes())).tree_hash()


def test_add_leaves_equals_add_leaf_one_by_one() -> None:
    import pytest

    from crdt_mls.errors import InvalidArgument

    base = _big_tree(16)
    for x in (2, 10, 22):  # blank leaves 1, 5 and 11 below non-blank parents (node 3 covers leaves 0-3)
        base.set_node(x, None)
    base.set_node(3, ParentNode(os.urandom(32), b"", (2,)))
    base.tree_hash()
    new = [_leaf(100 + i) for i in range(40)]  # fills the blanks, then extends twice
    one, many = base.copy(), base.copy()
    want = [one.add_leaf(lf) for lf in new]
    assert many.add_leaves(new) == want
    assert want[:4] == [1, 5, 11, 16] and many.n_leaves == 64
    assert list(many.nodes()) == list(one.nodes())
    assert many.node(3).unmerged_leaves == (1, 2)  # type: ignore[union-attr]
    assert many.node(7).unmerged_leaves == (1, 5)  # type: ignore[union-attr]
    assert many.tree_hash() == one.tree_hash() == RatchetTree(SUITE, list(many.nodes())).tree_hash()
    assert [many.resolution(x) for x in range(many.width)] == [one.resolution(x) for x in range(one.width)]
    assert many.free_leaf() == one.free_leaf()
    assert list(base.nodes())[:31] == list(base.copy().nodes())[:31] and base.n_leaves == 16  # base untouched
    t = base.copy()
    with pytest.raises(InvalidArgument):
        t.add_leaves([_leaf(1), _parent()])  # type: ignore[list-item]
    assert t.diff(base) == []
    assert t.add_leaves([]) == []


def test_bottom_up_tree_hash_and_resolutions_equal_the_recursive_ones() -> None:
    """`_hash_all` and `_resolve_all` (cold trees: new, decoded, after many adds) give every
    node the hash and resolution the recursive `_th` and `resolution` give, also when some
    are cached already."""
    nodes: list[NodeValue | None] = [
        None
        if x % 7 == 3 or x % 11 == 4
        else _leaf(x // 2)
        if x % 2 == 0
        else ParentNode(os.urandom(32), b"ph", (x // 2 % 5,))
        for x in range(treemath.node_width(64))
    ]
    nodes[-1] = _leaf(63)
    bulk, rec = RatchetTree(SUITE, nodes), RatchetTree(SUITE, nodes)
    rec._cold = rec._cold_res = False
    assert bulk._cold and bulk._cold_res
    assert [bulk.resolution(x) for x in range(bulk.width)] == [rec.resolution(x) for x in range(rec.width)]
    assert not bulk._cold_res
    assert bulk.tree_hash() == rec.tree_hash()
    assert not bulk._cold
    assert [bulk.tree_hash(x) for x in range(bulk.width)] == [rec.tree_hash(x) for x in range(rec.width)]
    # partly cached: change a path, mark cold, only the missing entries are computed
    derived = bulk.copy()
    derived.set_leaf(10, None)
    derived._cold = derived._cold_res = True
    ref = RatchetTree(SUITE, list(derived.nodes()))
    ref._cold = ref._cold_res = False
    assert [derived.tree_hash(x) for x in range(derived.width)] == [ref.tree_hash(x) for x in range(ref.width)]
    assert [derived.resolution(x) for x in range(derived.width)] == [ref.resolution(x) for x in range(ref.width)]
    assert bulk.resolution(bulk.root) == rec.resolution(rec.root)
    assert bulk.tree_hash() == rec.tree_hash()  # the original's cache is untouched
    many = bulk.copy()
    many.add_leaves([_leaf(2000 + i) for i in range(1100)])  # extends to 2048 leaves, marks the hashes cold
    assert many._cold and many._cold_res
    ref = RatchetTree(SUITE, list(many.nodes()))
    ref._cold = ref._cold_res = False
    assert many.tree_hash() == ref.tree_hash()
    assert many.resolution(many.root) == ref.resolution(ref.root)


def test_deriving_a_tree_never_changes_the_old_one() -> None:
    base = _big_tree(1024)
    before = list(base.nodes())
    h = base.tree_hash()
    res = [base.resolution(x) for x in range(base.width)]
    has = [base.has_encryption_key(v.encryption_key) for v in before if v is not None]
    derived = base.copy()
    derived.update_leaf(5, _leaf(555))
    derived.remove_leaf(900)
    derived.add_leaf(_leaf(556))
    derived.set_node(1, _parent())
    derived.tree_hash()
    for x in range(derived.width):
        derived.resolution(x)
    assert list(base.nodes()) == before
    assert base.tree_hash() == h
    assert [base.resolution(x) for x in range(base.width)] == res
    assert [base.has_encryption_key(v.encryption_key) for v in before if v is not None] == has
    assert not base.has_encryption_key(derived.leaf(5).encryption_key)  # type: ignore[union-attr]


class TreeFamily(RuleBasedStateMachine):
    """Trees derived from each other by `copy` and changed independently.  After every step:
    each tree holds what the same operations on an unshared tree give, trees not changed in
    this step are unchanged, and every cache (tree hash, resolutions, key index, leaf summary)
    equals a from-scratch computation."""

    def __init__(self) -> None:
        super().__init__()
        t = RatchetTree.create(SUITE, POOL[0])
        for lf in POOL[1:6]:
            t.add_leaf(lf)
        self.trees = [t]
        self.models: list[list[NodeValue | None]] = [list(t.nodes())]

    def _pick(self, which: int) -> int:
        return which % len(self.trees)

    def _apply(self, i: int, op: str, *args: object) -> None:
        """Run ``op`` on tree i and on a fresh unshared tree built from its model."""
        ref = RatchetTree(SUITE, self.models[i])
        getattr(ref, op)(*args)
        getattr(self.trees[i], op)(*args)
        assert list(self.trees[i].nodes()) == list(ref.nodes())
        self.models[i] = list(ref.nodes())

    @rule(src=st.integers(0, 9), warm=st.booleans())
    def copy(self, src: int, warm: bool) -> None:
        i = self._pick(src)
        if warm:  # caches filled before the copy are then shared
            self.trees[i].tree_hash()
            self.trees[i].resolution(self.trees[i].root)
        self.trees.append(self.trees[i].copy())
        self.models.append(list(self.models[i]))

    @rule(which=st.integers(0, 9), leaf=st.integers(0, len(POOL) - 1))
    def add(self, which: int, leaf: int) -> None:
        self._apply(self._pick(which), "add_leaf", POOL[leaf])

    @rule(which=st.integers(0, 9), picks=st.lists(st.integers(0, len(POOL) - 1), max_size=12))
    def add_many(self, which: int, picks: list[int]) -> None:
        """`add_leaves` equals `add_leaf` one by one on an unshared tree (indices, unmerged
        lists, extensions), and the caches stay exact (the invariant below)."""
        i = self._pick(which)
        ref = RatchetTree(SUITE, self.models[i])
        want = [ref.add_leaf(POOL[k]) for k in picks]
        assert self.trees[i].add_leaves([POOL[k] for k in picks]) == want
        assert list(self.trees[i].nodes()) == list(ref.nodes())
        self.models[i] = list(ref.nodes())

    @rule(which=st.integers(0, 9), pos=st.integers(0, 63))
    def remove(self, which: int, pos: int) -> None:
        i = self._pick(which)
        members = [j for j, _ in self.trees[i].members()]
        if len(members) > 1:
            self._apply(i, "remove_leaf", members[pos % len(members)])

    @rule(which=st.integers(0, 9), pos=st.integers(0, 63), leaf=st.integers(0, len(POOL) - 1))
    def update(self, which: int, pos: int, leaf: int) -> None:
        i = self._pick(which)
        members = [j for j, _ in self.trees[i].members()]
        self._apply(i, "update_leaf", members[pos % len(members)], POOL[leaf])

    @rule(which=st.integers(0, 9), pos=st.integers(0, 63))
    def fill_path(self, which: int, pos: int) -> None:
        """A committer's path: fresh parent nodes on a member's direct path."""
        i = self._pick(which)
        members = [j for j, _ in self.trees[i].members()]
        j = members[pos % len(members)]
        for p in treemath.direct_path(2 * j, self.trees[i].n_leaves):
            self._apply(i, "set_node", p, _parent())

    @rule(which=st.integers(0, 9), pos=st.integers(0, 63), blanks=st.integers(0, 7))
    def set_path(self, which: int, pos: int, blanks: int) -> None:
        """`set_path_nodes`: a whole direct path at once (some nodes blank), one invalidation."""
        i = self._pick(which)
        members = [j for j, _ in self.trees[i].members()]
        j = members[pos % len(members)]
        path = treemath.direct_path(2 * j, self.trees[i].n_leaves)
        values = [(p, None if (blanks >> (k % 3)) & 1 else _parent()) for k, p in enumerate(path)]
        self._apply(i, "set_path_nodes", j, values)

    @rule(which=st.integers(0, 9), pos=st.integers(0, 63), blanks=st.integers(0, 7), leaf=st.integers(0, 23))
    def merge_path(self, which: int, pos: int, blanks: int, leaf: int) -> None:
        """`set_direct_path` (an UpdatePath merge in one pass) equals `blank_path`,
        `set_path_nodes` and `set_leaf` in turn on an unshared tree."""
        i = self._pick(which)
        members = [j for j, _ in self.trees[i].members()]
        j = members[pos % len(members)]
        path = treemath.direct_path(2 * j, self.trees[i].n_leaves)
        values = [(p, _parent()) for k, p in enumerate(path) if not (blanks >> (k % 3)) & 1]
        ref = RatchetTree(SUITE, self.models[i])
        ref.blank_path(j)
        ref.set_path_nodes(j, values)
        ref.set_leaf(j, POOL[leaf])
        self.trees[i].set_direct_path(j, POOL[leaf], values)
        assert list(self.trees[i].nodes()) == list(ref.nodes())
        self.models[i] = list(ref.nodes())

    @rule(which=st.integers(0, 9), pos=st.integers(0, 63))
    def blank(self, which: int, pos: int) -> None:
        i = self._pick(which)
        members = [j for j, _ in self.trees[i].members()]
        self._apply(i, "blank_path", members[pos % len(members)])

    @precondition(lambda self: len(self.trees) > 1)
    @rule(a=st.integers(0, 9), b=st.integers(0, 9))
    def diff(self, a: int, b: int) -> None:
        i, j = self._pick(a), self._pick(b)
        ma, mb = self.models[i], self.models[j]
        n = max(len(ma), len(mb))
        pa, pb = ma + [None] * (n - len(ma)), mb + [None] * (n - len(mb))
        assert self.trees[i].diff(self.trees[j]) == [x for x in range(n) if pa[x] != pb[x]]

    @invariant()
    def trees_match_models_and_fresh_caches(self) -> None:
        for t, m in zip(self.trees, self.models, strict=True):
            assert list(t.nodes()) == m
            fresh = RatchetTree(SUITE, m)
            assert t.tree_hash() == fresh.tree_hash()
            for x in range(t.width):
                assert t.resolution(x) == fresh.resolution(x)
                assert t.tree_hash(x) == fresh.tree_hash(x)
            for lf in POOL:
                assert t.has_encryption_key(lf.encryption_key) == fresh.has_encryption_key(lf.encryption_key)
            assert t.encryption_keys() == fresh.encryption_keys()
            assert t.credential_support() == fresh.credential_support()
            assert t.free_leaf() == fresh.free_leaf()


TestTreeFamily = TreeFamily.TestCase
TestTreeFamily.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
