"""A member that joined after the genesis keeps its own GroupDag: history it cannot read is
opaque, the epoch it joined (or a merge it joined from the merge Welcome) is a pinned root
(docs/merge.md section 4)."""

from __future__ import annotations

import pytest

from crdt_mls.errors import InvalidArgument, InvalidState
from crdt_mls.merge.dag import GroupDag
from crdt_mls.merge.records import membership_from_tree
from tests.scenarios.harness import World


def _joiner_view(w: World, name: str) -> GroupDag:
    return w.view(name)


def _keys(dag: GroupDag, heads: set[bytes] | None = None) -> set[bytes]:
    return set(dag.state(heads).membership.keys())


def test_joiner_follows_linear_history() -> None:
    w = World(["alice", "bob", "carol"])
    g = w.genesis
    a1 = w.commit("alice", g, add=("eve",))
    b2 = w.commit("bob", a1, remove=("carol",))
    w.activity("eve", b2)
    e3 = w.commit("eve", b2, add=("frank",))
    view = _joiner_view(w, "eve")
    assert view.heads() == {e3}
    assert _keys(view) == _keys(w.dag) == {w.key(n) for n in ("alice", "bob", "eve", "frank")}


def test_joiner_of_one_branch_rejoins_at_the_merge() -> None:
    w = World(["alice", "bob", "carol", "dave"])
    g = w.genesis
    a1 = w.commit("alice", g, add=("eve",))
    b1 = w.commit("bob", g, remove=("dave",))  # Eve can never read this branch
    partial = _joiner_view(w, "eve")
    assert partial.heads() == {a1, b1}  # the unreadable branch is an opaque head: a merge is due
    assert b1 in partial.frontier() and partial.readable_frontier() == {a1}  # Eve names only a1
    with pytest.raises(InvalidState):
        partial.state()  # ...which Eve cannot compute
    m = w.merge("carol")  # Eve joins the merged epoch from the merge Welcome
    n1 = w.commit("eve", m, add=("frank",))
    view = _joiner_view(w, "eve")
    assert view.heads() == {n1}
    assert _keys(view) == _keys(w.dag)
    assert b1 in view and view.in_past(b1, n1)


def test_joiner_cannot_merge_history_it_cannot_read() -> None:
    w = World(["alice", "bob", "carol"])
    g = w.genesis
    a1 = w.commit("alice", g, add=("eve",))
    e2 = w.commit("eve", a1)
    w.commit("bob", g)
    b2 = w.records[-1].cid
    view = _joiner_view(w, "eve")
    assert view.heads() == {e2, b2}
    assert _keys(view, {e2}) == _keys(w.dag, {e2})
    with pytest.raises(InvalidState):
        view.state({e2, b2})  # b2 is opaque for Eve: only a merge Welcome can help
    with pytest.raises(InvalidArgument):
        view.add_root(view.record(e2), membership_from_tree(w.trees[e2], e2))
