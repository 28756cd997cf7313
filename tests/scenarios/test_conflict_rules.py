"""One scenario per conflict rule of docs/merge.md section 3, with real MLS groups.

Each scenario forks a group, merges the branches with a merge commit and checks (via
`World.check_epoch`) that every member of the merged group holds the same GroupContext,
epoch authenticator and exporter secret and can talk, that nobody outside it holds the
epoch, plus the rule's own outcome.
"""

from __future__ import annotations

import pytest

from crdt_mls.errors import InvalidState
from crdt_mls.merge.dag import OperationVoided
from crdt_mls.merge.rules import MutualRemoval
from tests.scenarios.harness import World


def _world(mode: MutualRemoval = MutualRemoval.BOTH, n: int = 4) -> World:
    return World(["alice", "bob", "carol", "dave", "frank", "gina"][:n], mode=mode)


def test_concurrent_adds_same_person_added_once() -> None:
    w = _world()
    g = w.genesis
    a1 = w.commit("alice", g, add=("eve",))
    b1 = w.commit("bob", g, add=("eve",), same_key=True)  # another KeyPackage of the same person
    st = w.dag.state()
    eve = st.membership.get(w.key("eve"))
    assert eve is not None and len(st.membership) == 5
    first = min((a1, b1), key=w.dag.rank)
    assert eve.added_in == first  # the first add in the deterministic order stands
    m = w.merge("carol")
    w.check_epoch(m)
    assert w.members(m) == {"alice", "bob", "carol", "dave", "eve"}


def test_same_leaf_taken_twice_moves_the_later_joiner() -> None:
    w = _world()
    g = w.genesis
    a1 = w.commit("alice", g, add=("eve",))
    b1 = w.commit("bob", g, add=("frank",))
    assert w.trees[a1].leaf(4) is not None and w.trees[b1].leaf(4) is not None  # both took leaf 4
    st = w.dag.state()
    later = "frank" if w.dag.rank(b1) > w.dag.rank(a1) else "eve"
    assert st.moved == {w.key(later)}
    leaves = {m.key: m.leaf for m in st.membership.members}
    assert leaves[w.key(later)] == 5 and leaves[w.key("frank" if later == "eve" else "eve")] == 4
    m = w.merge("carol")
    w.check_epoch(m)
    # the moved joiner knows no kept node at its old position: it is unmerged everywhere above it
    tree = w.trees[m]
    for x in (9, 11, 7):  # ancestors of leaves 4 and 5 in an 8-leaf tree
        node = tree.parent_node(x) if x < tree.width else None
        if node is not None and x != 9:
            assert 5 in node.unmerged_leaves or x in w.states[(later, m)].private_keys


def test_concurrent_removes_of_one_member_and_of_two() -> None:
    w = _world(n=5)
    g = w.genesis
    w.commit("alice", g, remove=("dave",))
    w.commit("bob", g, remove=("dave",))
    w.commit("carol", g, remove=("frank",))
    st = w.dag.state()
    assert w.key("dave") not in st.membership and w.key("frank") not in st.membership
    assert not st.void
    m = w.merge("carol")
    w.check_epoch(m)
    assert w.members(m) == {"alice", "bob", "carol"}
    for gone in ("dave", "frank"):
        assert not w.knows(gone, m)
        assert w.adversary_opens(w.stolen_keys(gone), m) == 0


def test_remove_voids_the_removed_members_concurrent_commit() -> None:
    w = _world()
    g = w.genesis
    a1 = w.commit("alice", g, remove=("dave",))
    d1 = w.commit("dave", g, add=("zed",), remove=("bob",))  # Dave, concurrently: adds Zed, removes Bob
    events = w.dag.add(w.records[-1])  # idempotent re-add returns nothing
    assert events == []
    st = w.dag.state()
    assert st.void == {d1}
    assert w.members_of(st) == {"alice", "bob", "carol"}  # Bob stays, Zed never joined
    m = w.merge("bob", (a1, d1))
    w.check_epoch(m)
    for out in ("dave", "zed"):
        assert not w.knows(out, m)
        assert w.adversary_opens(w.stolen_keys(out), m) == 0


def test_remove_vs_update_by_the_removed_member() -> None:
    w = _world()
    g = w.genesis
    upd = w.propose("dave", g, update=True)
    w.commit("carol", g, proposals=(upd,))  # Dave's update, committed concurrently with his removal
    w.commit("alice", g, remove=("dave",))
    m = w.merge("bob")
    w.check_epoch(m)
    assert "dave" not in w.members(m)
    assert w.adversary_opens(w.stolen_keys("dave"), m) == 0


def test_voided_events_are_reported() -> None:
    w = _world()
    g = w.genesis
    w.commit("alice", g, remove=("dave",))
    w.commit("dave", g, add=("zed",), deliver=True)
    # replay the records into a fresh replica and look at the events
    from crdt_mls.merge.dag import GroupDag

    dag = GroupDag(w.records[0])
    events = [e for r in w.records[1:] for e in dag.add(r)]
    assert any(isinstance(e, OperationVoided) for e in events)


def test_mutual_removal_both_removed() -> None:
    w = _world()
    g = w.genesis
    w.commit("alice", g, remove=("bob",))
    w.commit("bob", g, remove=("alice",))
    st = w.dag.state()
    assert w.members_of(st) == {"carol", "dave"}
    m = w.merge("carol")
    w.check_epoch(m)
    for out in ("alice", "bob"):
        assert not w.knows(out, m)
        assert w.adversary_opens(w.stolen_keys(out), m) == 0


def test_mutual_removal_seniority_keeps_the_earlier_member() -> None:
    w = _world(MutualRemoval.SENIORITY)
    g = w.genesis
    e1 = w.commit("alice", g, add=("eve",))  # Eve joins after Alice: Alice is senior
    w.commit("alice", e1, remove=("eve",))
    w.commit("eve", e1, remove=("alice",))
    st = w.dag.state()
    assert w.members_of(st) == {"alice", "bob", "carol", "dave"}
    m = w.merge("carol")  # Alice was removed on Eve's branch: she comes back through the Welcome
    w.check_epoch(m)
    assert not w.knows("eve", m)
    assert w.adversary_opens(w.stolen_keys("eve"), m) == 0


def test_readd_after_remove_is_a_new_instance() -> None:
    w = _world()
    g = w.genesis
    a1 = w.commit("alice", g, remove=("bob",))
    b1 = w.commit("bob", g, add=("zed",))  # Bob, concurrently with his removal: void
    a2 = w.commit("alice", a1, add=("bob",), same_key=True)  # Bob re-added (same identity, new leaf)
    st = w.dag.state()
    assert b1 in st.void
    bob = st.membership.get(w.key("bob"))
    assert bob is not None and bob.added_in == a2
    assert w.key("zed") not in st.membership
    m = w.merge("carol")
    w.check_epoch(m)
    assert "bob" in w.members(m) and "zed" not in w.members(m)


def test_concurrent_updates_of_one_leaf_keep_one() -> None:
    w = _world()
    g = w.genesis
    u1 = w.propose("bob", g, update=True)
    u2 = w.propose("bob", g, update=True)
    a1 = w.commit("alice", g, proposals=(u1,))
    c1 = w.commit("carol", g, proposals=(u2,))
    st = w.dag.state()
    bob = st.membership.get(w.key("bob"))
    assert bob is not None
    last = max((a1, c1), key=w.dag.rank)
    assert bob.updated_in == last  # the last update in the order wins
    m = w.merge("dave")
    w.check_epoch(m)  # Bob holds the private key of the kept leaf (from the branch that kept it)


def test_proposal_committed_by_two_concurrent_commits_applies_once() -> None:
    w = _world(n=5)
    g = w.genesis
    prop = w.propose("dave", g, remove="frank")
    w.commit("alice", g, proposals=(prop,))
    w.commit("carol", g, proposals=(prop,))
    st = w.dag.state()
    assert not st.void
    assert w.members_of(st) == {"alice", "bob", "carol", "dave"}
    m = w.merge("bob")
    w.check_epoch(m)
    assert not w.knows("frank", m)


def test_idle_eviction_void_when_evicted_member_was_active() -> None:
    w = _world()
    g = w.genesis
    w.commit("alice", g, evict=("dave",))
    w.commit("dave", g)  # Dave was not idle: he committed concurrently
    st = w.dag.state()
    assert w.members_of(st) == {"alice", "bob", "carol", "dave"}
    m = w.merge("bob")
    w.check_epoch(m)  # Dave, evicted on Alice's branch, is back through the merge Welcome
    assert "dave" in w.members(m)


def test_idle_eviction_stands_when_evicted_member_was_idle() -> None:
    w = _world()
    g = w.genesis
    w.activity("dave", g)  # activity *before* the eviction does not void it
    d0 = w.records[-1].cid
    w.seen_extra = d0
    a1 = w.commit_after("alice", g, (d0,), evict=("dave",))
    w.commit("bob", g)
    st = w.dag.state()
    assert "dave" not in w.members_of(st)
    assert a1 in w.dag.heads()
    m = w.merge("carol")
    w.check_epoch(m)
    assert not w.knows("dave", m)


def test_partition_where_each_side_evicts_the_other_heals_into_one_group() -> None:
    w = _world()
    g = w.genesis
    a1 = w.commit("alice", g, evict=("carol", "dave"))  # side {alice, bob}
    c1 = w.commit("carol", g, evict=("alice", "bob"))  # side {carol, dave}
    st = w.dag.state({a1, c1})
    assert w.members_of(st) == {"alice", "carol"}  # Bob and Dave idle so far: evictions stand
    w.activity("bob", a1)  # both sides stay active during the partition
    w.activity("dave", c1)
    st = w.dag.state()
    assert w.members_of(st) == {"alice", "bob", "carol", "dave"}
    # nobody is a member of both parent epochs: Alice includes her side's init secret, the
    # other side's parent is foreign, and everyone else joins from the merge Welcome
    m = w.merge("alice")
    w.check_epoch(m)
    assert w.members(m) == {"alice", "bob", "carol", "dave"}
    assert w.dag.heads() == {m}
    # one group again: a later ordinary commit works for everybody
    n = w.commit("dave", m)
    w.check_epoch(n)


def test_partition_with_several_commits_per_side_heals_in_two_rounds() -> None:
    """Each side evicts the other and keeps committing, so neither side can read the other's
    later commits: round 1 a member of one side merges what it can read (the other side's
    first commit, sent in the common epoch, as a foreign parent) and welcomes the other side;
    round 2 a member of the other side, now in both, merges the rest (docs/merge.md 3.9, 6.2)."""
    w = _world()
    g = w.genesis
    d0 = w.activity("dave", g)  # Dave talks in the common epoch while the partition starts
    a1 = w.commit("alice", g, evict=("carol", "dave"))
    c1 = w.commit("carol", g, evict=("alice", "bob"))
    a2 = w.commit("bob", a1)
    c2 = w.commit("dave", c1, add=("eve",))  # the other side even grows
    alice = w.view("alice")
    assert c2 not in alice.commits() and alice.heads() == {a2, c2}  # C2 is unreadable to Alice
    with pytest.raises(InvalidState):
        alice.state()  # she cannot merge C2...
    # round 1: ...so she merges what she reads (nodes name only readable parents): Alice's,
    # Bob's and Carol's commits and Dave's message are concurrent with the evictions: all void
    m1 = w.merge("alice", (a2, c1), seen=(d0,), view=alice)
    assert w.members(m1) == {"alice", "bob", "carol", "dave"}
    w.check_epoch(m1)
    # round 2: Carol holds M1 (from the Welcome) and C2: she merges them
    carol = w.view("carol")
    assert m1 in carol and carol.heads() == {m1, c2}
    m2 = w.merge("carol", (m1, c2), view=carol)
    assert w.members(m2) == {"alice", "bob", "carol", "dave", "eve"}
    w.check_epoch(m2)
    for name in ("alice", "bob", "carol", "dave", "eve"):
        assert w.view(name).heads() == {m2}
    n = w.commit("eve", m2)
    w.check_epoch(n)
