"""Convergence: replicas that receive the same operations in different (causal) orders
compute the same S(heads) for every head set, the same void commits and epoch set; members
of every epoch hold the same secrets (design sketch section 6, property 1)."""

from __future__ import annotations

import random

from crdt_mls.merge.dag import GroupDag
from crdt_mls.merge.rules import OpRecord
from tests.scenarios.harness import World


def _causal_shuffle(genesis: bytes, records: list[OpRecord], seed: int) -> list[OpRecord]:
    """A random delivery order that respects parents and prev (what crdt_mls.causal yields)."""
    rnd = random.Random(seed)
    done: set[bytes] = {genesis}
    pending = list(records)
    out: list[OpRecord] = []
    while pending:
        ready = [r for r in pending if all(p in done for p in r.parents) and (r.prev is None or r.prev in done)]
        r = rnd.choice(ready)
        pending.remove(r)
        done.add(r.cid)
        out.append(r)
    return out


def _busy_world() -> World:
    w = World(["alice", "bob", "carol", "dave", "frank"])
    g = w.genesis
    a1 = w.commit("alice", g, add=("eve",))
    b1 = w.commit("bob", g, remove=("frank",))
    w.commit("frank", g, add=("zed",))  # void: Frank was removed concurrently
    m1 = w.merge("carol")
    m2 = w.merge("dave", (a1, b1, w.records[3].cid))  # a concurrent merge of the same heads
    assert m1 != m2
    c2 = w.commit("carol", m1, add=("gina",))
    w.check_epoch(c2)
    m3 = w.merge("eve")  # merges the two merges and Carol's commit
    w.check_epoch(m3)
    e2 = w.commit("eve", m3, remove=("dave",))
    a2 = w.commit("alice", m3, evict=("bob",))
    w.activity("bob", m3)
    m4 = w.merge("gina")
    w.check_epoch(m4)
    assert w.dag.heads() == {m4}
    assert {e2, a2} <= set(w.dag.record(m4).epochs)
    return w


def test_replicas_converge_whatever_the_delivery_order() -> None:
    w = _busy_world()
    reference = w.dag
    commits = reference.commits()
    ref_states = {c: reference.state({c}) for c in commits}
    ref_all = reference.state()
    for seed in range(6):
        order = _causal_shuffle(w.genesis, w.records[1:], seed)
        assert [r.cid for r in order] != [r.cid for r in w.records[1:]] or seed == 0
        dag = GroupDag(w.records[0], max_states=4)  # a tiny cache forces recomputation
        for r in order:
            dag.add(r)
        assert dag.heads() == reference.heads()
        assert set(dag.commits()) == set(commits)
        st = dag.state()
        assert st.membership == ref_all.membership and st.void == ref_all.void
        for c in commits:
            assert dag.state({c}).membership == ref_states[c].membership
        # every concurrent pair of epochs merges the same way
        for a in commits[:6]:
            for b in commits[:6]:
                if dag.concurrent(a, b):
                    assert dag.state({a, b}) == reference.state({a, b})


def test_every_member_of_every_epoch_holds_the_same_secrets() -> None:
    w = _busy_world()
    for c in w.dag.commits():
        if c == w.genesis:
            continue
        w.check_epoch(c)
