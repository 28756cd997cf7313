"""Regression scenarios for failures the merge state machine found (proofs/findings.md F7-).

Each is a minimal history replayed with real MLS groups (`tests.scenarios.harness.World`);
every merged epoch is checked with `World.check_epoch` (same secrets for every member, key
knowledge, everyone can talk, nobody else holds it).
"""

from __future__ import annotations

import pytest

from crdt_mls.merge.dag import GroupDag
from crdt_mls.merge.rules import MutualRemoval
from tests.scenarios.harness import World


def _evict_and_message(merger: str, *, merger_saw_message: bool = True) -> tuple[World, bytes, bytes]:
    """F7: m0 evicts m4 while m1 adds j1 and m4 (idle for m0) sends a message, all concurrently
    in the genesis epoch; ``merger`` merges the two commits."""
    w = World([f"m{i}" for i in range(5)], seed=0)
    g = w.genesis
    w.commit("m0", g, evict=("m4",))
    w.commit("m1", g, add=("j1",))
    msg = w.activity("m4", g)
    seen = (msg,) if merger_saw_message else ()
    m = w.merge(merger, tuple(sorted(w.dag.heads())), seen=seen)
    return w, m, msg


@pytest.mark.parametrize("merger", ["m4", "m2", "j1"])
def test_f7_eviction_voided_by_the_evicted_members_own_message(merger: str) -> None:
    """The merger names the message it has seen: the eviction is void and m4 ends in the merged
    group with the right keys, whether m4 merges itself (a foreign parent: it is not in the
    evicting branch), another member merges (m4 joins from the merge Welcome) or a joiner of one
    branch does."""
    w, m, msg = _evict_and_message(merger)
    assert w.dag.in_past(msg, m)
    assert w.members(m) == {"m0", "m1", "m2", "m3", "m4", "j1"}
    w.check_epoch(m)
    assert w.dag.heads() == {m}


def test_f7_eviction_stands_when_the_merger_did_not_see_the_message() -> None:
    """A merger that has not seen the message merges without it (the message is not in the merge
    commit's past): the eviction stands and m4 learns nothing of the merged epoch."""
    w, m, msg = _evict_and_message("m2", merger_saw_message=False)
    assert not w.dag.in_past(msg, m)
    assert "m4" not in w.members(m)
    w.check_epoch(m)
    assert w.adversary_opens(w.stolen_keys("m4"), m) == 0


def _removal_cycle(seed: int) -> World:
    """F8: a removal cycle (m2 removes m0, m1 removes m2, m0 removes m1 after evicting m2 and
    adding j1), resolved greedily (docs/merge.md 3.4): with these seeds m1's removal of m2 is
    taken first, m0's removal of m1 voids it, so m2 stays while its own commit (the removal of
    m0) is void: m2's merged leaf is its genesis leaf, held by no head state."""
    w = World(["m0", "m1", "m2"], seed=seed)
    g = w.genesis
    w.commit("m2", g, remove=("m0",))
    w.commit("m1", g, remove=("m2",))
    c3 = w.commit("m0", g, evict=("m2",))
    c4 = w.commit("m0", c3, add=("j1",))
    w.commit("m0", c4, remove=("m1",))
    return w


@pytest.mark.parametrize("seed", [2, 4])
def test_f8_member_whose_commits_are_all_void_can_merge(seed: int) -> None:
    """Liveness (design sketch 6.5): every member in the merge turn order can issue the merge,
    including one whose merged leaf key only its state from before its voided commit holds."""
    probe = _removal_cycle(seed)
    st = probe.dag.state()
    m2 = st.membership.get(probe.key("m2"))
    (c1,) = [c for c in probe.dag.commits() if probe.dag.record(c).author == probe.key("m2")]
    assert m2 is not None and c1 in st.void  # the situation the test is about
    heads = probe.dag.heads()
    assert all((g := probe.states.get(("m2", h))) is None or g.leaf_node.to_bytes() != m2.data for h in heads), (
        "some head state holds m2's merged leaf: the scenario no longer tests the finding"
    )
    order = [probe.name_of(k) for k in probe.dag.merge_order()]
    assert set(order) == {"m0", "m2", "j1"}
    for merger in order:
        w = _removal_cycle(seed)  # deterministic: the same history again
        m = w.merge(merger)
        assert w.members(m) == {"m0", "m2", "j1"}
        w.check_epoch(m)
        assert w.adversary_opens(w.stolen_keys("m1"), m) == 0


def test_merge_order_lists_only_members_of_a_head() -> None:
    """A member of S(heads) that is in no head epoch (evicted on every branch, eviction void)
    cannot issue the merge (it holds no parent epoch): it is not in the turn order, and it
    joins the merged epoch from the merge Welcome."""
    w = World(["m0", "m1", "m2", "m3"], seed=3)
    g = w.genesis
    w.commit("m0", g, evict=("m3",))
    w.commit("m1", g, evict=("m3",))
    w.activity("m3", g)
    dag: GroupDag = w.dag
    assert w.key("m3") in dag.state().membership
    order = dag.merge_order()
    assert w.key("m3") not in order and dag.merge_rank(w.key("m3")) is None
    assert set(order) == {w.key(n) for n in ("m0", "m1", "m2")}
    m = w.merge(w.name_of(order[0]))
    assert "m3" in w.members(m)
    w.check_epoch(m)


def _names(w: World, dag: GroupDag, heads: set[bytes] | None = None) -> set[str]:
    return {w.name_of(m.key) for m in dag.state(heads).membership.members}


def test_f10_joiner_of_one_branch_replays_through_the_merge_it_joined() -> None:
    """j1 is added on one branch while m3 adds j2 on the other; m1 merges both (j1 joins from the
    merge Welcome), and concurrently with that merge m0 removes m3 on j1's branch.  Everyone who
    reads the whole history voids m3's concurrent add of j2 (strong remove, docs/merge.md 3.4);
    j1 must compute the same S, although it never read m3's commit: the merge's sealed history
    (4.2) gives it the records.  Without it j1 keeps j2 (it replayed only what lies outside the
    merge it joined, on top of the merge's state) and would fail every later merge it is in."""
    w = World(["m0", "m1", "m2", "m3"], seed=1)
    g = w.genesis
    a = w.commit("m0", g, add=("j1",))
    b = w.commit("m3", g, add=("j2",))
    m = w.merge("m1", tuple(sorted((a, b))))
    x = w.commit("m0", a, remove=("m3",))
    assert w.dag.heads() == {m, x}
    j1 = w.view("j1")
    assert b in j1.commits()  # the history made m3's commit readable for j1
    assert _names(w, j1) == _names(w, w.dag) == {"m0", "m1", "m2", "j1"}
    assert j1.state().void == w.dag.state().void
    legacy = w.view("j1", history=False)
    assert _names(w, legacy) == {"m0", "m1", "m2", "j1", "j2"}  # the old divergence
    # j1's own S(heads) gives the next merge's base tree hash (given the base's public tree: j1,
    # not in the base epoch, also gets the merge Welcome, docs/merge.md 6.5)
    from crdt_mls.merge.mlsmerge import process_merge_commit

    m2 = w.merge("m2")
    w.check_epoch(m2)
    rec = w.dag.record(m2)
    links = (*rec.parents, *((rec.prev,) if rec.prev is not None else ()))
    own = w.view("j1")
    g2 = process_merge_commit(
        w.parent_epochs("j1", rec.epochs), own.state(links).membership, w.merge_messages[m2], base=w.base_of
    )
    assert g2.epoch_authenticator == w.states[("j1", m2)].epoch_authenticator


def test_f10_second_healing_round_replays_the_whole_partition() -> None:
    """A partition in which the sides cannot read each other heals in two rounds (docs/merge.md
    4.1).  Side C removes Bob, who meanwhile added Frank on side A; round 1 (Alice) merges what
    she reads, so Frank is in; round 2 (Carol) must void Bob's add of Frank like anyone reading
    both sides would: with the history of round 1 she replays the whole partition instead of
    only her side on top of round 1 (the old deviation, docs/merge.md 10)."""
    w = World(["alice", "bob", "carol", "dave"], seed=1)
    g = w.genesis
    d0 = w.activity("dave", g)
    b0 = w.activity("bob", g)
    a1 = w.commit("alice", g, evict=("carol", "dave"))
    c1 = w.commit("carol", g, evict=("alice",))
    a2 = w.commit("bob", a1, add=("frank",))
    c2 = w.commit("carol", c1, remove=("bob",))
    alice = w.view("alice")
    assert c2 not in alice.commits()
    m1 = w.merge("alice", (a2, c1), seen=(d0, b0), view=alice)
    assert w.members(m1) == {"alice", "bob", "carol", "dave", "frank"}
    w.check_epoch(m1)
    carol = w.view("carol")
    assert a2 in carol.commits()  # from round 1's history
    assert _names(w, carol, {m1, c2}) == _names(w, w.dag, {m1, c2}) == {"alice", "carol", "dave"}
    assert "frank" in _names(w, w.view("carol", history=False), {m1, c2})  # the old deviation
    m2 = w.merge("carol", (m1, c2), view=carol)
    assert w.members(m2) == {"alice", "carol", "dave"}
    w.check_epoch(m2)
    for gone in ("bob", "frank"):
        assert not w.knows(gone, m2)
        assert w.adversary_opens(w.stolen_keys(gone), m2) == 0
    for name in ("alice", "carol", "dave"):
        assert w.view(name).heads() == {m2}


def test_f11_moved_joiner_keeps_the_leaf_it_was_added_with() -> None:
    """Two joiners take the same leaf concurrently; the later one in the order is moved
    (docs/merge.md 3.2).  It had already committed on its branch, so its LeafNode there is
    signed for its old leaf index (RFC 9420 7.2): that update does not follow it to the new
    leaf, it is placed with the LeafNode it was added with (the merge Welcome's tree verifies)."""
    w = World(["alice", "bob", "carol"], seed=2)
    g = w.genesis
    a1 = w.commit("alice", g, add=("eve",))
    b1 = w.commit("bob", g, add=("frank",))
    assert w.trees[a1].leaf(3) is not None and w.trees[b1].leaf(3) is not None
    later, epoch = ("frank", b1) if w.dag.rank(b1) > w.dag.rank(a1) else ("eve", a1)
    u = w.commit(later, epoch)  # the joiner updates its leaf (a fresh path) at leaf 3
    assert any(ch.leaf == 3 and ch.member == w.key(later) for ch in w.dag.record(u).changes or ())
    st = w.dag.state()
    moved = st.membership.get(w.key(later))
    assert st.moved == {w.key(later)} and moved is not None and moved.leaf == 4
    added = next(ch for ch in w.dag.record(epoch).changes or () if ch.member == w.key(later))
    assert moved.data == added.data  # the LeafNode from its KeyPackage, valid at any leaf
    m = w.merge("carol")
    w.check_epoch(m)  # every member joined or processed it: leaf signatures verified
    assert w.members(m) == {"alice", "bob", "carol", "eve", "frank"}


def test_f11_person_added_twice_keeps_the_winning_instances_leaf() -> None:
    """The same person is added on two branches at different leaves (docs/merge.md 3.1: the first
    add stands) and updates on the losing branch: that update, signed for the other leaf, does not
    replace its LeafNode at the winning leaf."""
    for seed in range(1, 40):
        w = World(["alice", "bob", "carol"], seed=seed)
        g = w.genesis
        a1 = w.commit("alice", g, add=("eve",))  # eve at leaf 3
        b1 = w.commit("bob", g, add=("frank",))
        b2 = w.commit("bob", b1, add=("eve",), same_key=True)  # eve at leaf 4 on this branch
        if w.dag.rank(a1) < w.dag.rank(b2):
            break
    else:
        raise AssertionError("no seed orders alice's add first")
    u = w.commit("eve", b2)  # eve updates on the losing branch, at leaf 4
    assert any(ch.leaf == 4 for ch in w.dag.record(u).changes or ())
    st = w.dag.state()
    eve = st.membership.get(w.key("eve"))
    assert eve is not None and eve.leaf == 3 and eve.added_in == a1
    m = w.merge("carol")
    w.check_epoch(m)
    assert {"eve", "frank"} <= w.members(m)


@pytest.mark.parametrize("mode", list(MutualRemoval))
def test_f14_racing_merges_keep_the_evictions_they_voided(mode: MutualRemoval) -> None:
    """m1 removes m0 while m2 evicts m3 and then m1, and m3 removes m2, all concurrently; m1 and m3
    were active, so both merges of these heads (racing: m1's and m3's) void the evictions and
    keep {m1, m3}.  The merge of the two merges must decide the same: with the old "one of the two
    in the merged region" clause of rule 3.9 the evictions, now in the past of both merges, stood
    again, voided m1's and m3's commits and brought m0 and m2 back (docs/merge.md 3.9)."""
    w = World(["m0", "m1", "m2", "m3"], seed=1, mode=mode)
    g = w.genesis
    w.commit("m1", g, remove=("m0",))
    c2 = w.commit("m2", g, evict=("m3",))
    w.commit("m3", g, remove=("m2",))
    w.commit("m2", c2, evict=("m1",))
    heads = tuple(sorted(w.dag.heads()))
    assert _names(w, w.dag) == {"m1", "m3"}
    a = w.merge("m1", heads)
    b = w.merge("m3", heads)  # the same heads, without having seen m1's merge: a race
    assert w.dag.heads() == {a, b} and w.dag.concurrent(a, b)
    assert _names(w, w.dag) == {"m1", "m3"}  # as each merge decided
    m = w.merge("m1")
    w.check_epoch(m)
    assert w.members(m) == {"m1", "m3"}


def test_f13_without_a_bridge_the_members_of_s_cannot_merge() -> None:
    """The known limit of healing under confidentiality (proofs/findings.md F13): m1 removes m2
    while m0 evicts m1 (who was active: the eviction is void), then adds j1, and j1 removes m0.
    S = {m1, j1}, but m1 reads only its branch and m0's first commit, j1 only m0's branch; the
    one member who read both, m0, has left.  m1 merges what it reads (round 1, with m0 still in:
    it cannot read that j1 removed m0); afterwards neither m1 nor j1 can read the other's head,
    so nobody can merge them.  Each still holds a consistent epoch."""
    w = World(["m0", "m1", "m2"], seed=0)
    g = w.genesis
    b = w.commit("m1", g, remove=("m2",))
    e = w.commit("m0", g, evict=("m1",))
    u = w.commit("m0", e)
    a = w.commit("m0", u, add=("j1",))
    r = w.commit("j1", a, remove=("m0",))
    assert _names(w, w.dag) == {"m1", "j1"}
    m1 = w.view("m1")
    assert m1.epoch_heads(m1.readable_frontier()) == {b, e}  # m1 cannot read past m0's eviction
    j1 = w.view("j1")
    assert j1.epoch_heads(j1.readable_frontier()) == {r}  # j1 cannot read m1's branch
    m = w.merge("m1", (b, e), seen=tuple(m1.readable_frontier()), view=m1)  # round 1
    assert w.members(m) == {"m0", "m1"}
    w.check_epoch(m)
    assert w.dag.heads() == {m, r}
    for name in ("m1", "j1"):
        v = w.view(name)
        assert len(v.epoch_heads(v.readable_frontier())) == 1  # each reads one head only
        assert not all((name, h) in w.states for h in (m, r))
    assert "m0" not in _names(w, w.dag, {m, r})  # S excludes m0, whom m1's head still holds
    w.check_epoch(r)
