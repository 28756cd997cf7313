"""DAG views and the height-ordered difference walk (crdt_mls.causal.dagview)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.causal import MemoryDag, dag_difference
from crdt_mls.errors import InvalidArgument
from tests.properties.toy import ToyAuthor, ToyNode, toy_check, toy_links


def build(seed: int, count: int) -> tuple[MemoryDag, list[ToyNode]]:
    rnd = random.Random(seed)
    writers = [ToyAuthor(bytes([i])) for i in range(4)]
    view = MemoryDag(toy_check)
    nodes: list[ToyNode] = []
    for _ in range(count):
        w = writers[rnd.randrange(4)]
        # parents anywhere in history, including very old ones (long-absent members)
        parents = tuple(n.cid for n in rnd.sample(nodes, rnd.randint(0, min(3, len(nodes)))))
        n = w.write(parents=parents)
        view.add([(n.cid, n.block, toy_links(n))])
        nodes.append(n)
    return view, nodes


def ancestors(view: MemoryDag, roots: list[bytes]) -> set[bytes]:
    seen: set[bytes] = set()
    stack = list(roots)
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        stack.extend(view.links(c))
    return seen


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32), count=st.integers(1, 60), data=st.data())
def test_difference_matches_brute_force(seed: int, count: int, data: st.DataObject) -> None:
    view, nodes = build(seed, count)
    cids = [n.cid for n in nodes]
    include = data.draw(st.lists(st.sampled_from(cids), max_size=4))
    exclude = data.draw(st.lists(st.sampled_from(cids), max_size=4))
    got = dag_difference(view, include, exclude)
    assert set(got) == ancestors(view, include) - ancestors(view, exclude)
    assert len(got) == len(set(got))
    pos = {c: i for i, c in enumerate(got)}
    for c in got:  # parents first
        assert all(pos[link] < pos[c] for link in view.links(c) if link in pos)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), count=st.integers(1, 60))
def test_heads_and_heights(seed: int, count: int) -> None:
    view, nodes = build(seed, count)
    linked = {link for n in nodes for link in toy_links(n)}
    assert view.heads() == {n.cid for n in nodes} - linked
    for n in nodes:
        links = toy_links(n)
        assert view.height(n.cid) == (1 + max(view.height(x) for x in links) if links else 0)


def test_add_is_atomic_and_requires_closure() -> None:
    a = ToyAuthor(b"a")
    n0, n1, n2 = a.write(), a.write(), a.write()
    view = MemoryDag(toy_check)
    with pytest.raises(InvalidArgument):
        view.add([(n0.cid, n0.block, toy_links(n0)), (n2.cid, n2.block, toy_links(n2))])
    assert len(view) == 0 and view.heads() == frozenset()
    view.add([(n0.cid, n0.block, ()), (n1.cid, n1.block, toy_links(n1)), (n0.cid, n0.block, ())])
    assert view.heads() == {n1.cid} and len(view) == 2
