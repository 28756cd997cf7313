"""Merge log truncation (docs/api.md "Merge log truncation"): the merge engine is checkpointed
at a cut every author has passed and the log before it is dropped; reloading gives the same
state; a member that has not passed the cut keeps the log (the bound)."""

from __future__ import annotations

import random

from crdt_mls.replica import MergeMade, MessageReceived, Replica
from crdt_mls.stores import MemoryStore

Blocks = list[tuple[bytes, bytes]]


def make(name: str, seed: int, *, create: bool = False, ck: int = 12) -> Replica:
    r = random.Random(seed)
    rep = (
        Replica.create(name, MemoryStore(), rng=r.randbytes)
        if create
        else Replica.new_member(name, MemoryStore(), rng=r.randbytes)
    )
    rep.dag_checkpoint_min = ck
    return rep


def group(ck: int = 12) -> list[Replica]:
    alice = make("alice", 1, create=True, ck=ck)
    bob, carol = make("bob", 2, ck=ck), make("carol", 3, ck=ck)
    alice.add([bob.key_package(), carol.key_package()])
    net = alice.take_outgoing()
    for r in (bob, carol):
        r.receive(net)
    return [alice, bob, carol]


def spread(reps: list[Replica], sender: Replica) -> None:
    out = sender.take_outgoing()
    for r in reps:
        if r is not sender:
            r.receive(out)


def dag_keys(r: Replica) -> list[str]:
    store = r.store
    assert isinstance(store, MemoryStore)
    return sorted(k for k in store.iter_meta_keys() if k.startswith("replica/dag/"))


def test_the_log_is_truncated_and_reload_gives_the_same_state() -> None:
    reps = group()
    reference = make("alice-ref", 1, create=True, ck=1 << 30)  # a twin that never truncates
    alice = reps[0]
    rng = random.Random(4)
    for i in range(60):
        r = rng.choice(reps)
        if i % 9 == 8:
            r.update()
        else:
            r.send(f"m{i}")
        spread(reps, r)
    assert alice._dag_start > 0 and "replica/dag/ck" in dag_keys(alice)
    assert len([k for k in dag_keys(alice) if k != "replica/dag/ck"]) == len(alice._dag_entries)
    assert alice.dag.node_count() < 40  # instead of ~65 operations
    del reference
    again = Replica.load(alice.store)
    again.dag_checkpoint_min = alice.dag_checkpoint_min
    assert again.dag.state().membership.keys() == alice.dag.state().membership.keys()
    assert again.dag.heads() == alice.dag.heads() and again.dag.frontier() == alice.dag.frontier()
    assert again._parents() == alice._parents()
    assert again.export_secret("t") == alice.export_secret("t")
    # the reloaded replica goes on with the others: a message and a commit
    reps[0] = again
    again.send("after reload")
    spread(reps, again)
    reps[2].update()
    spread(reps, reps[2])
    assert len({(r.epoch_id, r.export_secret("x")) for r in reps}) == 1


def test_a_fork_after_truncation_merges() -> None:
    reps = group()
    for i in range(40):
        r = reps[i % 3]
        r.send(f"m{i}")
        spread(reps, r)
    assert all(r._dag_start > 0 for r in reps)
    alice, bob, carol = reps
    bob.update()
    carol.update()
    b, c = bob.take_outgoing(), carol.take_outgoing()
    for r in reps:
        r.receive(b + c)
    merger = min((r for r in reps if r.merge_rank() is not None), key=lambda r: r.merge_rank() or 0)
    assert any(isinstance(e, MergeMade) for e in merger.merge())
    spread(reps, merger)
    assert len({(r.epoch_id, r.export_secret("m")) for r in reps}) == 1
    again = Replica.load(alice.store)
    assert again.export_secret("m") == alice.export_secret("m")


def test_a_member_who_has_not_passed_the_cut_keeps_the_log_until_it_acknowledges() -> None:
    """The bound: truncation never passes what some author has not acknowledged (a silent member
    could still name older operations); `ack()` moves it on.  A removed member acknowledges its
    removal by itself."""
    reps = group()
    alice, bob, carol = reps
    joined = carol.epoch_id
    for i in range(40):  # carol stays silent; bob commits halfway
        r = reps[i % 2]
        r.send(f"m{i}")
        spread(reps, r)
        if i == 20:
            bob.update()
            spread(reps, bob)
    # carol has no node: what she saw is at least the commit that added her; nothing after it
    # can be a cut yet, so (almost) nothing was dropped
    assert alice._dag_cut() in (None, joined) and alice.dag.node_count() >= 40
    carol.ack()
    spread(reps, carol)
    for i in range(20):
        r = reps[i % 2]
        r.send(f"n{i}")
        spread(reps, r)
    alice.update()  # (cuts are commits: the log is truncated at a commit everybody passed)
    spread(reps, alice)
    for i in range(20):
        r = reps[i % 3]
        r.send(f"o{i}")
        spread(reps, r)
    assert alice._dag_cut() not in (None, joined) and alice.dag.node_count() < 40
    # a removed member acknowledges its removal (an ack node in its outgoing blocks)
    alice.remove(["carol"])
    out = alice.take_outgoing()
    bob.receive(out)
    carol.receive(out)
    assert not carol.in_group
    ack = carol.take_outgoing()
    assert len(ack) == 1
    events = alice.receive(ack) + bob.receive(ack)
    assert not [e for e in events if isinstance(e, MessageReceived)]
