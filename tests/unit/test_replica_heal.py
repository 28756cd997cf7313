"""Facade-driven healing of a partition in which each side evicted the other and kept
committing, so that nobody can read both sides (docs/merge.md 4.1, 3.9, 6.2): through
`Replica`s only, round 1 a member merges what it can read (the other side's first commit,
sent in the common epoch, as a foreign parent) and welcomes the other side; round 2 a member
of the other side, now holding that merge and its own head, merges again."""

from __future__ import annotations

import random

import pytest

from crdt_mls.errors import InvalidState
from crdt_mls.replica import Joined, MergeMade, MergeNeeded, Replica

Blocks = list[tuple[bytes, bytes]]


def make(name: str, seed: int, *, create: bool = False) -> Replica:
    r = random.Random(seed)
    return Replica.create(name, rng=r.randbytes) if create else Replica.new_member(name, rng=r.randbytes)


def partition() -> dict[str, Replica]:
    """alice, bob | carol, dave (+ eve, added on carol's side during the partition)."""
    alice = make("alice", 1, create=True)
    bob, carol, dave, eve = (make(n, i) for i, n in enumerate(["bob", "carol", "dave", "eve"], 2))
    net = alice.take_outgoing()
    alice.add([bob.key_package(), carol.key_package(), dave.key_package()])
    net += alice.take_outgoing()
    for r in (bob, carol, dave):
        r.receive(net)
    # side A evicts side C; Dave talks in the common epoch while the partition starts
    alice.evict(["carol", "dave"])
    a1 = alice.take_outgoing()
    bob.receive(a1)
    dave.send("dave talks in the common epoch")
    d0 = dave.take_outgoing()
    carol.receive(d0)
    carol.evict(["alice", "bob"])  # side C evicts side A
    c1 = carol.take_outgoing()
    dave.receive(c1)
    bob.update()  # both sides keep committing
    a2 = bob.take_outgoing()
    alice.receive(a2)
    dave.add([eve.key_package()])  # the other side even grows
    c2 = dave.take_outgoing()
    carol.receive(c2)
    assert any(isinstance(e, Joined) for e in eve.receive(net + d0 + c1 + c2))
    # the partition heals: everyone gets everything
    for r in (alice, bob):
        events = r.receive(d0 + c1 + c2)
        assert any(isinstance(e, MergeNeeded) for e in events)
    for r in (carol, dave, eve):
        r.receive(a1 + a2)
    return {"alice": alice, "bob": bob, "carol": carol, "dave": dave, "eve": eve}


def heal(reps: dict[str, Replica], first: str) -> list[str]:
    """Merge rounds until nobody sees a fork: ``first`` merges round 1, then each round the
    lowest-ranked replica that sees a fork (what `merge_rank` x delay does).  Returns who merged."""
    everyone = list(reps.values())
    mergers: list[str] = []
    merger: Replica | None = reps[first]
    while merger is not None:
        assert len(mergers) < 4, "healing does not end"
        events = merger.merge()
        assert any(isinstance(e, MergeMade) for e in events)
        mergers.append(merger.name)
        out = merger.take_outgoing()
        for r in everyone:
            if r is not merger:
                r.receive(out)
        ranked = sorted((rank, r.name) for r in everyone if (rank := r.merge_rank()) is not None)
        merger = reps[ranked[0][1]] if ranked else None
    return mergers


@pytest.mark.parametrize("first", ["alice", "bob", "carol", "dave"])
def test_mutual_eviction_with_commits_on_both_sides_heals_in_two_rounds(first: str) -> None:
    reps = partition()
    alice, eve = reps["alice"], reps["eve"]
    # nobody can merge everything: each side reads the other's first commit (it removes them)
    # but not the later ones; eve cannot merge at all (she is in no epoch of side A)
    assert eve.merge_rank() is None
    with pytest.raises(InvalidState):
        eve.merge()
    assert all(reps[n].merge_rank() is not None for n in ("alice", "bob", "carol", "dave"))
    mergers = heal(reps, first)
    assert len(mergers) == 2 and mergers[0] == first
    side = {"alice": "A", "bob": "A", "carol": "C", "dave": "C"}
    assert side[mergers[1]] != side[first]  # round 2 is the other side's
    inside = [r for r in reps.values() if r.in_group]
    ids = {r.epoch_id for r in inside}
    assert len(ids) == 1 and all(len(r.epoch_heads()) == 1 for r in inside)
    assert len({r.export_secret("healed") for r in inside}) == 1
    names = {r.name for r in inside}
    assert all(sorted(n for _, n in r.members()) == sorted(names) for r in inside)
    # round 2 replays the whole partition (the merge history travels with round 1's Welcome,
    # docs/merge.md 4.2): every eviction is void, whoever merged first
    assert names == {"alice", "bob", "carol", "dave", "eve"}
    # one group again: an ordinary commit and a message work for everybody
    eve.update()
    out = eve.take_outgoing()
    eve.send("after the healing")
    out += eve.take_outgoing()
    for r in inside:
        if r is not eve:
            r.receive(out)
    assert len({(r.epoch_id, r.export_secret("again")) for r in inside}) == 1
    assert alice.in_group
    # the merge logs (with the installed merge histories) reload to the same engines
    for r in inside:
        again = Replica.load(r.store)
        assert again.export_secret("again") == r.export_secret("again")
        assert again.dag.state().membership.keys() == r.dag.state().membership.keys()


def test_healing_with_merge_messages_and_histories_in_chunks() -> None:
    """The same healing with every merge message and merge history in chunk blocks."""
    reps = partition()
    for r in reps.values():
        r.inline_limit = 300
        r.chunk_size = 1024
    mergers = heal(reps, "carol")
    assert len(mergers) == 2
    inside = [r for r in reps.values() if r.in_group]
    assert len(inside) == 5 and len({(r.epoch_id, r.export_secret("c")) for r in inside}) == 1
