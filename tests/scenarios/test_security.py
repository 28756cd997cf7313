"""Removal and PCS against an adversary that keeps every secret it ever saw (design sketch
section 6, properties 3 and 4; docs/merge.md section 8)."""

from __future__ import annotations

import pytest

from crdt_mls.errors import CrdtMlsError
from crdt_mls.merge.mlsmerge import join_merge, process_merge_commit
from crdt_mls.mls.group import Group
from tests.scenarios.harness import World


def _steal(w: World, name: str) -> dict[bytes, Group]:
    """A copy of every state ``name`` holds right now (the compromise)."""
    return {e: g for (n, e), g in w.states.items() if n == name}


def _attacker_follows(w: World, stolen: dict[bytes, Group], cids: list[bytes]) -> dict[bytes, Group]:
    """The attacker processes every commit it can with the states it holds (no merge)."""
    out = dict(stolen)
    for cid in cids:
        if cid in out or cid not in w.commit_messages:
            continue
        parent = w.dag.record(cid).epochs[0]
        g = out.get(parent)
        if g is None:
            continue
        try:
            ng, _ = g.process(w.commit_messages[cid][0])
        except CrdtMlsError:
            continue
        if ng.active:
            out[cid] = ng
    return out


def _keys(states: dict[bytes, Group]) -> list[bytes]:
    return [k for g in states.values() for x in g.private_keys for k in [g.private_keys.get(x)] if k]


@pytest.mark.parametrize("heal", [True, False])
def test_compromised_members_own_commit_locks_the_attacker_out(heal: bool) -> None:
    w = World(["alice", "bob", "carol", "dave"])
    g = w.genesis
    stolen = _steal(w, "bob")  # the attacker copies Bob's whole state in epoch g
    a1 = w.commit("alice", g, add=("eve",))  # concurrent commits by others...
    c1 = w.commit("carol", g)
    b1 = w.commit("bob", g) if heal else None  # ...and Bob's own commit (fresh path)
    m = w.merge("dave")
    n1 = w.commit("alice", m)
    n2 = w.commit("eve", n1, remove=("carol",))
    w.check_epoch(n2)
    seen = _attacker_follows(w, stolen, [a1, c1, *([b1] if b1 else [])])
    assert a1 in seen and c1 in seen  # concurrent epochs encrypted to Bob's old keys are lost
    keys = _keys(seen)
    if not heal:
        # control: without Bob's commit his old leaf key still opens the merge path
        assert w.adversary_opens(keys, m) > 0
        return
    assert b1 not in seen
    assert w.adversary_opens(keys, m) == 0
    # the merge's init secret needs every parent's: the attacker lacks Bob's branch
    parents = w.parent_epochs("bob", tuple(sorted(w.dag.record(m).epochs)))
    fake = [type(p)(p.epoch_id, p.tree, p.group_context, seen.get(p.epoch_id)) for p in parents]
    with pytest.raises(CrdtMlsError):
        process_merge_commit(fake, w.dag.state(w.dag.record(m).parents).membership, w.merge_messages[m])
    with pytest.raises(CrdtMlsError):
        join_merge(w.merge_messages[m], list(seen.values()))
    # and no later epoch either
    for later in (n1, n2):
        assert w.adversary_opens_commit(keys, later) == 0
        assert all(w.adversary_opens_commit([k], later) == 0 for k in keys)
    # positive control: a member's keys in the merged epoch open the next commit's path
    assert w.adversary_opens_commit(_keys({m: w.states[("carol", m)]}), n1) > 0


def test_removed_member_keeping_everything_learns_no_later_epoch() -> None:
    w = World(["alice", "bob", "carol", "dave"])
    g = w.genesis
    a1 = w.commit("alice", g, remove=("dave",))
    d1 = w.commit("dave", g)  # Dave's concurrent commit: void, but he holds its secrets
    c1 = w.commit("carol", g, add=("eve",))
    m = w.merge("bob")
    n1 = w.commit("eve", m)
    everything = _keys(_steal(w, "dave"))
    assert d1 in {e for (n, e) in w.states if n == "dave"}
    assert w.adversary_opens(everything, m) == 0
    assert w.adversary_opens_commit(everything, n1) == 0
    assert not w.knows("dave", m) and not w.knows("dave", n1)
    assert a1 in w.dag.record(m).epochs or c1 in w.dag.record(m).epochs


def test_liveness_one_merge_round_gives_a_single_head() -> None:
    w = World(["alice", "bob", "carol", "dave"])
    g = w.genesis
    w.commit("alice", g)
    w.commit("bob", g)
    w.commit("carol", g, add=("eve",))
    assert len(w.dag.heads()) == 3
    m = w.merge("dave")
    assert w.dag.heads() == {m}
    w.check_epoch(m)
