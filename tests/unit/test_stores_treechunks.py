"""Ratchet trees as shared content-addressed chunks (crdt_mls.stores.treechunks)."""

from __future__ import annotations

import random

import pytest

from crdt_mls.errors import StorageError
from crdt_mls.mls.group import Group
from crdt_mls.mls.messages import Node
from crdt_mls.mls.suites import get_cipher_suite
from crdt_mls.mls.welcome import make_key_package
from crdt_mls.stores import treechunks
from crdt_mls.stores.treechunks import changed_nodes, chunk_tree, load_tree

SUITE = get_cipher_suite(1)


def _rng(seed: int):  # type: ignore[no-untyped-def]
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def history(n: int, steps: int, seed: int = 1) -> list[Group]:
    """A group of ``n`` members, then ``steps`` random commits (updates, adds, removes)."""
    rng = _rng(seed)
    pick = random.Random(seed)
    g = Group.create(1, make_key_package(1, b"creator", rng=rng), rng=rng)
    _, _, g = g.commit(add=[make_key_package(1, f"m{i}".encode(), rng=rng).key_package for i in range(n)], rng=rng)
    out = [g]
    for s in range(steps):
        op = pick.choice(["update", "add", "remove"])
        others = [i for i, _ in g.members() if i != g.own_leaf]
        if op == "add":
            _, _, g = g.commit(add=[make_key_package(1, f"x{s}".encode(), rng=rng).key_package], rng=rng)
        elif op == "remove" and others:
            _, _, g = g.commit(remove=[pick.choice(others)], rng=rng)
        else:
            _, _, g = g.commit(rng=rng)
        out.append(g)
    return out


@pytest.mark.parametrize("band", [1, 2, 6])
def test_incremental_chunks_equal_full_chunks_and_load_back(monkeypatch: pytest.MonkeyPatch, band: int) -> None:
    monkeypatch.setattr(treechunks, "BAND", band)
    groups = history(40, 12)
    store: dict[bytes, bytes] = {}
    prev = None
    for g in groups:
        ref, new = chunk_tree(g.tree, base=prev)
        full, all_chunks = chunk_tree(g.tree)
        assert ref == full and dict(ref.table) == dict(full.table)
        assert set(new) <= set(all_chunks)
        store.update(new)
        tree, loaded = load_tree(SUITE, ref.width, ref.root, store.get)
        assert tree.tree_hash() == g.tree.tree_hash() and tree == g.tree
        assert dict(loaded.table) == dict(ref.table)
        prev = (g.tree, ref)


def test_a_commit_writes_a_few_chunks_not_the_tree() -> None:
    groups = history(300, 3)
    ref, chunks = chunk_tree(groups[0].tree)
    total = sum(len(c) for c in chunks.values())
    for g in groups[1:]:
        _, new = chunk_tree(g.tree, base=(groups[0].tree, ref))
        # a path of ~9 levels crosses 2 bands: 2-3 chunks (more if the width grew)
        assert len(new) <= 4 and sum(len(c) for c in new.values()) < total / 4
    # an unchanged tree (e.g. after an application message) computes nothing
    same, none = chunk_tree(groups[0].tree, base=(groups[0].tree, ref))
    assert same == ref and none == {} and changed_nodes(groups[0].tree, groups[0].tree) == []


def test_shared_decode_cache_shares_node_objects() -> None:
    a, b = history(200, 1)[:2]
    ra, ca = chunk_tree(a.tree)
    rb, cb = chunk_tree(b.tree, base=(a.tree, ra))
    store = {**ca, **cb}
    cache: dict[bytes, tuple[list[Node | None], list[bytes]]] = {}
    ta, _ = load_tree(SUITE, ra.width, ra.root, store.get, cache=cache)
    tb, _ = load_tree(SUITE, rb.width, rb.root, store.get, cache=cache)
    shared = sum(1 for x, y in zip(ta.nodes(), tb.nodes(), strict=True) if x is not None and x is y)
    assert shared > len([x for x in ta.nodes() if x is not None]) // 2


def test_damaged_store_is_a_storage_error() -> None:
    g = history(80, 0)[0]
    ref, chunks = chunk_tree(g.tree)
    victim = next(k for k in chunks if k != ref.root)
    missing = {k: v for k, v in chunks.items() if k != victim}
    with pytest.raises(StorageError, match="missing"):
        load_tree(SUITE, ref.width, ref.root, missing.get)
    flipped = dict(chunks)
    data = bytearray(flipped[victim])
    data[-1] ^= 1
    flipped[victim] = bytes(data)
    with pytest.raises(StorageError, match="match"):
        load_tree(SUITE, ref.width, ref.root, flipped.get)
    with pytest.raises(StorageError, match=r"malformed|shape"):
        garbage = {**chunks, victim: b"\x01\x00"}
        load_tree(
            SUITE,
            ref.width,
            ref.root,
            garbage.get,
            id_of=lambda d: victim if d == b"\x01\x00" else treechunks.sha256_id(d),
        )
    keyed = chunk_tree(g.tree, id_of=lambda d: b"k" + treechunks.sha256_id(d))[0]
    assert keyed.root != ref.root


def test_chunk_difference_covers_every_changed_node() -> None:
    groups = history(150, 6, seed=3)
    refs = [chunk_tree(g.tree)[0] for g in groups]
    for (g0, r0), (g1, r1) in zip(zip(groups, refs, strict=True), zip(groups[1:], refs[1:], strict=True), strict=False):
        if r0.width != r1.width:
            continue
        diff = set(treechunks.chunk_difference(r0, r1))
        changed = {x for x in range(g1.tree.width) if g0.tree.node(x) != g1.tree.node(x)}
        assert changed <= diff and len(diff) < g1.tree.width / 2
