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
    """Feed every record to ``name``'s view the way its replica would see it."""
    dag = GroupDag.for_joiner()
    mine = {e for (n, e) in w.states if n == name}
    for rec in w.records:
        readable = rec.cid in mine or (all(e in mine for e in rec.epochs) and rec.epochs)
        # joined here: from a Welcome, or from a merge Welcome (not in every parent epoch)
        first_epoch = rec.is_commit and rec.cid in mine and not (rec.epochs and all(e in mine for e in rec.epochs))
        if first_epoch:  # joined here (Welcome or merge Welcome): pin the state from the tree
            dag.add_root(rec, membership_from_tree(w.trees[rec.cid], rec.cid))
        elif readable and (rec.is_commit or rec.epochs[0] in mine):
            dag.add(rec)
        else:
            dag.add_opaque(rec.cid, rec.author, rec.seq, rec.prev, rec.parents, commit=rec.is_commit)
    return dag


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
