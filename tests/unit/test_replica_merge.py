"""The facade's merge runs on the merge engine (docs/merge.md section 4, docs/api.md "Merge"):
the replica feeds every delivered operation to a `GroupDag` and merges with its S(heads);
a bare `GroupDag` fed the same operations agrees; concurrent merges converge (merge of
merges) whatever the delivery order; the merge log survives a reload and a failed write."""

from __future__ import annotations

import random

import pytest

from crdt_mls.dag.node import NodeKind, decode_node
from crdt_mls.errors import InvalidArgument, InvalidState, StorageError
from crdt_mls.merge import GroupDag, Membership, OpRecord
from crdt_mls.merge.records import commit_record, eviction_aad, genesis_record, merge_record
from crdt_mls.mls.ratchet_tree import RatchetTree
from crdt_mls.replica import MergeMade, MergeNeeded, Replica, _parse_merge_payload
from crdt_mls.stores import MemoryStore

Blocks = list[tuple[bytes, bytes]]


def make(name: str, seed: int, *, create: bool = False, store: MemoryStore | None = None) -> Replica:
    r = random.Random(seed)
    st = store if store is not None else MemoryStore()
    if create:
        return Replica.create(name, st, rng=r.randbytes)
    return Replica.new_member(name, st, rng=r.randbytes)


def founded(names: list[str], seed: int) -> tuple[list[Replica], Blocks, dict[bytes, RatchetTree]]:
    """``names[0]`` creates the group and adds the others; returns the replicas, the history
    and the public tree of every epoch so far (for the bare DAG)."""
    first = make(names[0], seed, create=True)
    trees = {first.epoch_id: first.group.tree}
    others = [make(n, seed + 1 + i) for i, n in enumerate(names[1:])]
    net: Blocks = first.take_outgoing()
    first.add([o.key_package() for o in others])
    trees[first.epoch_id] = first.group.tree
    net += first.take_outgoing()
    for o in others:
        o.receive(net)
    return [first, *others], net, trees


def view(m: Membership) -> list[tuple[bytes, int, bytes]]:
    return [(x.key, x.leaf, x.data) for x in m.members]


def tree_view(tree: RatchetTree) -> list[tuple[bytes, int]]:
    return sorted((lf.signature_key, i) for i, lf in tree.members())


def bare_dag(history: Blocks, trees: dict[bytes, RatchetTree]) -> GroupDag:
    """A GroupDag built from the blocks alone (node fields) and the public tree of every epoch,
    without the facade: the reference the facade must agree with."""
    dag: GroupDag | None = None
    seen: set[bytes] = set()
    for cid, block in history:
        if cid in seen:
            continue
        seen.add(cid)
        node = decode_node(block, cid)
        if node.kind == NodeKind.GENESIS:
            dag = GroupDag(genesis_record(cid, node.author, trees[cid]))
            continue
        assert dag is not None
        if node.kind == NodeKind.APPLICATION:
            dag.add(OpRecord(cid, node.author, node.seq, node.prev, node.parents, (node.epoch,)))
        elif node.payload[:1] == b"\x02":  # merge commit
            heads, _ = _parse_merge_payload(node.payload)
            dag.add(merge_record(cid, node.author, node.seq, node.prev, node.parents, heads, trees[cid]))
        else:
            before, after = trees[node.epoch], trees[cid]
            dag.add(commit_record(cid, node.author, node.seq, node.prev, node.parents, (node.epoch,), before, after))
    assert dag is not None
    return dag


def deliver(rs: list[Replica], blocks: Blocks, seed: int) -> list[list[object]]:
    """Every replica gets ``blocks`` one at a time in its own random order; returns the events."""
    got: list[list[object]] = []
    for i, r in enumerate(rs):
        order = list(blocks)
        random.Random(seed * 101 + i).shuffle(order)
        evs: list[object] = []
        for b in order:
            evs += r.receive([b])
        got.append(evs)
    return got


def test_facade_and_bare_groupdag_agree_on_membership() -> None:
    (alice, bobby, carol, david), history, trees = founded(["alice", "bobby", "carol", "david"], 40)
    # three concurrent operations on epoch 1: a removal of david, david's own update (void by the
    # strong remove), bobby's update; and a message from carol (activity)
    alice.remove(["david"])
    trees[alice.epoch_id] = alice.group.tree
    david.update()
    trees[david.epoch_id] = david.group.tree
    bobby.update()
    trees[bobby.epoch_id] = bobby.group.tree
    carol.send("carol on epoch 1")
    for r in (alice, david, bobby, carol):
        history += r.take_outgoing()
    for r in (alice, bobby, carol, david):
        r.receive(history)
    heads = alice.epoch_heads()
    assert len(heads) == 3 and all(r.epoch_heads() == heads for r in (bobby, carol))
    bare = bare_dag(history, trees)
    assert bare.heads() == frozenset(heads)
    expected = bare.state(heads)
    for r in (alice, bobby, carol):
        assert view(r.dag.state(heads).membership) == view(expected.membership)
    # david's update is void (strong remove), david is out
    assert david.epoch_id in expected.void
    assert david.signature_key not in expected.membership
    leader = next(r for r in (alice, bobby, carol) if r.signature_key == alice.merge_leader)
    assert leader.merge_rank() == 0 and bare.merge_rank(leader.signature_key, heads) is not None
    events = leader.merge()
    assert [e.members for e in events if isinstance(e, MergeMade)] == [("alice", "bobby", "carol")]
    trees[leader.epoch_id] = leader.group.tree
    history += leader.take_outgoing()
    for r in (alice, bobby, carol, david):
        r.receive(history)
    # the merged tree holds exactly S(heads) of the bare DAG, and the bare DAG follows the merge
    assert tree_view(leader.group.tree) == sorted(
        (k, m.leaf) for k, m in ((m.key, m) for m in expected.membership.members)
    )
    bare = bare_dag(history, trees)
    assert bare.heads() == frozenset({leader.epoch_id})
    for r in (alice, bobby, carol):
        assert r.epoch_id == leader.epoch_id
        assert view(r.dag.state({r.epoch_id}).membership) == view(bare.state({leader.epoch_id}).membership)
    assert not david.in_group


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_partitions_and_concurrent_merges_converge_in_any_order(seed: int) -> None:
    (alice, bobby, carol), history, _ = founded(["alice", "bobby", "carol"], 50 + seed)
    everyone = [alice, bobby, carol]

    def out(r: Replica) -> Blocks:
        blocks = r.take_outgoing()
        history.extend(blocks)
        return blocks

    # partition 1: {alice, bobby} | {carol}
    alice.update()
    a1 = out(alice)
    bobby.receive(a1)
    carol.update()
    c1 = out(carol)
    # alice and carol see each other's commit and both merge, concurrently
    alice.receive(c1)
    carol.receive(a1)
    assert alice.epoch_heads() == carol.epoch_heads()
    alice.merge()
    out(alice)
    carol.merge()
    mc = out(carol)
    # partition 2: {alice} | {bobby, carol}; bobby follows carol's merge and keeps going
    bobby.receive(c1 + mc)
    assert bobby.epoch_id == carol.epoch_id and len(bobby.epoch_heads()) == 1
    bobby.send("bobby after carol's merge")
    bobby.update()
    b2 = out(bobby)
    carol.receive(b2)
    alice.send("alice after her merge")
    alice.update()
    out(alice)
    # heal: every replica gets the whole history in its own random order
    deliver(everyone, list(history), seed)
    heads = alice.epoch_heads()
    assert len(heads) == 2 and all(r.epoch_heads() == heads for r in everyone)
    states = [view(r.dag.state(heads).membership) for r in everyone]
    assert states[0] == states[1] == states[2] and len(states[0]) == 3
    leaders = {r.merge_leader for r in everyone}
    assert len(leaders) == 1 and None not in leaders
    # a reloaded replica rebuilds the same engine state from its merge log
    carol = Replica.load(carol.store, rng=random.Random(seed + 7).randbytes)
    everyone = [alice, bobby, carol]
    assert view(carol.dag.state(heads).membership) == states[0]
    # the first two in the merge order both merge (a merge race): merge of merges
    ranked = sorted(everyone, key=lambda r: (r.merge_rank() is None, r.merge_rank() or 0))
    first, second = ranked[0], ranked[1]
    assert first.merge_rank() == 0 and second.merge_rank() == 1
    first.merge()
    m1 = out(first)
    second.merge()
    m2 = out(second)
    got = deliver(everyone, m1 + m2, seed + 1)
    heads2 = alice.epoch_heads()
    assert set(heads2) == {m1[0][0], m2[0][0]}
    assert all(r.epoch_heads() == heads2 for r in everyone)
    # the two mergers stay on their own merge; everyone is told another merge is due
    assert first.epoch_id == m1[0][0] and second.epoch_id == m2[0][0]
    assert all(any(isinstance(e, MergeNeeded) for e in evs) for evs in got)
    leader = next(r for r in everyone if r.signature_key == alice.merge_leader)
    leader.merge()
    m3 = out(leader)
    deliver([r for r in everyone if r is not leader], m3, seed + 2)
    ids = {r.epoch_id for r in everyone}
    assert ids == {leader.epoch_id}
    assert len({r.group.tree.tree_hash() for r in everyone}) == 1
    assert len({r.export_secret("converged", b"", 32) for r in everyone}) == 1
    assert all([n for _, n in r.members()] == ["alice", "bobby", "carol"] for r in everyone)
    assert all(view(r.dag.state().membership) == view(leader.dag.state().membership) for r in everyone)
    # and the group goes on
    bobby.update()
    nxt = out(bobby)
    deliver([alice, carol], nxt, seed + 3)
    assert len({r.export_secret("after", b"", 32) for r in everyone}) == 1


class FailingStore(MemoryStore):
    fail = False

    def write_batch(self, blocks, meta):  # type: ignore[no-untyped-def]
        if self.fail:
            raise StorageError("disk full")
        super().write_batch(blocks, meta)


def test_failed_write_rolls_the_merge_engine_back() -> None:
    store = FailingStore()
    alice = make("alice", 60, create=True)
    carol = make("carol", 61, store=store)
    net = alice.take_outgoing()
    alice.add([carol.key_package()])
    net += alice.take_outgoing()
    carol.receive(net)
    alice.send("one")
    alice.update()
    more = alice.take_outgoing()
    entries = list(carol._dag_entries)
    frontier, heads = carol.dag.frontier(), carol.dag.heads()
    store.fail = True
    with pytest.raises(StorageError):
        carol.receive(more)
    # the engine, its log and the parents of carol's next node are as they were
    assert carol._dag_entries == entries
    assert carol.dag.frontier() == frontier and carol.dag.heads() == heads
    assert carol.epoch_id == net[-1][0]
    store.fail = False
    carol.receive(more)
    assert carol.epoch_id == alice.epoch_id and carol.dag.heads() == frozenset({alice.epoch_id})
    again = Replica.load(store)
    assert again.dag.frontier() == carol.dag.frontier()
    assert view(again.dag.state().membership) == view(alice.dag.state().membership)


def test_no_fork_no_merge() -> None:
    (alice, _bobby), _, _ = founded(["alice", "bobby"], 70)
    with pytest.raises(InvalidState):
        alice.merge()
    assert alice.merge_rank() is None and alice.merge_leader is None


@pytest.mark.parametrize("how", ["evict", "remove"])
def test_idle_eviction_is_weak_in_a_merge_and_removal_is_strong(how: str) -> None:
    (alice, bobby, carol), _, _ = founded(["alice", "bobby", "carol"], 80)
    # concurrently on epoch 1: alice evicts (or removes) carol, bobby updates, carol speaks
    (alice.evict if how == "evict" else alice.remove)(["carol"])
    a1 = alice.take_outgoing()
    bobby.update()
    carol.send("carol is not idle")
    rest = bobby.take_outgoing() + carol.take_outgoing()
    assert not any(eviction_aad([carol.signature_key]) in block for _, block in a1)
    for r in (alice, bobby, carol):
        r.receive(a1 + rest)
    heads = alice.epoch_heads()
    assert len(heads) == 2 and bobby.epoch_heads() == heads
    # S of everything delivered: carol's message counts as activity against her eviction
    st = alice.dag.state()
    assert view(st.membership) == view(bobby.dag.state().membership)
    leader = next(r for r in (alice, bobby) if r.signature_key == alice.merge_leader)
    leader.merge()
    m = leader.take_outgoing()
    for r in (alice, bobby, carol):
        if r is not leader:
            r.receive(m)
    names = [n for _, n in leader.members()]
    if how == "evict":
        # carol was active concurrently: the eviction is void, she stays and joins from the merge Welcome
        assert carol.signature_key in st.membership and names == ["alice", "bobby", "carol"]
        assert carol.in_group and carol.epoch_id == leader.epoch_id
        assert len({r.export_secret("x", b"", 32) for r in (alice, bobby, carol)}) == 1
    else:
        assert carol.signature_key not in st.membership and names == ["alice", "bobby"]
        assert not carol.in_group
        assert alice.export_secret("x", b"", 32) == bobby.export_secret("x", b"", 32)


def test_eviction_within_one_branch_acts_like_a_removal() -> None:
    (alice, bobby, carol), _, _ = founded(["alice", "bobby", "carol"], 90)
    alice.evict(["carol"])
    out = alice.take_outgoing()
    bobby.receive(out)
    carol.receive(out)
    assert [n for _, n in bobby.members()] == ["alice", "bobby"] and not carol.in_group
    assert bobby.dag.record(alice.epoch_id).changes is not None
    kinds = {c.kind.name for c in bobby.dag.record(alice.epoch_id).changes or ()}
    assert "EVICT" in kinds
    with pytest.raises(InvalidArgument):
        alice.evict(["nobody"])


def test_joiner_of_two_racing_merges_follows_the_merge_of_merges() -> None:
    (alice, bobby, carol), history, _ = founded(["alice", "bobby", "carol"], 5)
    erin = make("erin", 9)
    # alice adds erin while carol updates: erin can read only alice's branch
    alice.add([erin.key_package()])
    a1 = alice.take_outgoing()
    carol.update()
    c1 = carol.take_outgoing()
    erin.receive(history + a1)
    for r in (alice, bobby, carol):
        r.receive(a1 + c1)
    # a merge race: erin joins both merges from their Welcomes, with their histories
    # (docs/merge.md 4.2): she computes S over both like everyone else (before the histories she
    # held two pinned roots and could not)
    alice.merge()
    m1 = alice.take_outgoing()
    carol.merge()
    m2 = carol.take_outgoing()
    everyone = [alice, bobby, carol, erin]
    for r in everyone:
        r.receive(c1 + m1 + m2)
    assert all(r.epoch_heads() == alice.epoch_heads() for r in everyone) and len(alice.epoch_heads()) == 2
    assert view(erin.dag.state(erin.epoch_heads()).membership) == view(alice.dag.state(alice.epoch_heads()).membership)
    leader = next(r for r in everyone if r.signature_key == alice.merge_leader)
    assert leader is not erin
    leader.merge()
    m3 = leader.take_outgoing()
    for r in everyone:
        if r is not leader:
            r.receive(m3)
    # erin processes the merge of merges (candidate S checked by the signed base tree hash)
    assert {r.epoch_id for r in everyone} == {leader.epoch_id}
    assert len({r.export_secret("race", b"", 32) for r in everyone}) == 1
    assert len({r.group.tree.tree_hash() for r in everyone}) == 1
    assert view(erin.dag.state().membership) == view(alice.dag.state().membership)
    erin.update()
    e = erin.take_outgoing()
    for r in (alice, bobby, carol):
        r.receive(e)
    assert len({r.export_secret("after", b"", 32) for r in everyone}) == 1


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_races_of_commits_and_merges_converge(seed: int) -> None:
    """Random updates, messages and merges (several members merging the same fork) under random
    partial deliveries; then full delivery and merges until one head: one epoch and secret."""
    rnd = random.Random(seed)
    everyone, history, _ = founded(["alice", "bobby", "carol"], 100 + seed)
    for _step in range(10):
        r = rnd.choice(everyone)
        if len(r.epoch_heads()) > 1:
            if r.merge_rank() is not None:
                r.merge()
        elif rnd.random() < 0.6:
            r.update()
        else:
            r.send(f"step {_step}")
        history += r.take_outgoing()
        for other in everyone:
            other.receive([b for b in history if rnd.random() < 0.5])
    for _round in range(6):
        deliver(everyone, list(history), seed + _round)
        heads = everyone[0].epoch_heads()
        assert all(r.epoch_heads() == heads for r in everyone)
        assert len({tuple(view(r.dag.state().membership)) for r in everyone}) == 1
        if len(heads) == 1:
            break
        leader = next(r for r in everyone if r.signature_key == everyone[0].merge_leader)
        leader.merge()
        history += leader.take_outgoing()
    assert len({r.epoch_id for r in everyone}) == 1
    assert len({r.export_secret("random", b"", 32) for r in everyone}) == 1
    assert len({r.group.tree.tree_hash() for r in everyone}) == 1
