"""Regression scenarios for failures the merge state machine found (proofs/findings.md F7-).

Each is a minimal history replayed with real MLS groups (`tests.scenarios.harness.World`);
every merged epoch is checked with `World.check_epoch` (same secrets for every member, key
knowledge, everyone can talk, nobody else holds it).
"""

from __future__ import annotations

import pytest

from crdt_mls.merge.dag import GroupDag
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
    assert all(
        (g := probe.states.get(("m2", h))) is None or g.leaf_node.to_bytes() != m2.data for h in heads
    ), "some head state holds m2's merged leaf: the scenario no longer tests the finding"
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
