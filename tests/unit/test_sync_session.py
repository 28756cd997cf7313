"""Sync sessions between two replicas (crdt_mls.causal.sync; docs/causal.md section 3)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest

from crdt_mls.causal import DagView, MemoryDag, StoreDag, SyncMessage, SyncSession, dag_difference
from crdt_mls.errors import InvalidArgument
from tests.properties.netsim import NetSim
from tests.properties.syncsim import SimReplica, connect, converged, counter_rng, pump, sync_to_quiescence
from tests.properties.toy import ToyAuthor, ToyNode, toy_check, toy_links


def add(view: DagView, node: ToyNode) -> None:
    view.add([(node.cid, node.block, toy_links(node))])


def grow(views: Sequence[DagView], author: ToyAuthor, count: int, rnd: random.Random | None = None) -> list[ToyNode]:
    """Write ``count`` nodes on top of views[0]'s heads and add them to every view."""
    out = []
    for _ in range(count):
        n = author.write(parents=tuple(views[0].heads()))
        for v in views:
            add(v, n)
        out.append(n)
    return out


def pair(seed: int = 1) -> tuple[SimReplica, SimReplica]:
    a = SimReplica("a", MemoryDag(toy_check))
    b = SimReplica("b", MemoryDag(toy_check))
    connect([a, b], counter_rng(seed))
    return a, b


def test_identical_stores_exchange_heads_only() -> None:
    a, b = pair()
    grow([a.view, b.view], ToyAuthor(b"x"), 300)
    net = NetSim(seed=0)
    pump([a, b], net)
    assert net.stats.sent == 2
    assert net.stats.bytes_delivered < 200  # heads only: no bloom filter, no blocks
    assert a.sessions["b"].in_sync() and b.sessions["a"].in_sync()
    assert a.sessions["b"].generate_message() is None


def test_one_side_ahead_gets_exactly_the_missing_blocks() -> None:
    a, b = pair()
    x = ToyAuthor(b"x")
    grow([a.view, b.view], x, 300)
    new = grow([a.view], x, 20)
    net = NetSim(seed=0)
    pump([a, b], net)
    assert b.view.heads() == a.view.heads() == {new[-1].cid}
    assert b.added == [n.cid for n in new]
    block_bytes = sum(len(n.block) for n in new)
    # blocks with their CIDs, plus five small messages of heads and needs; a bloom filter over
    # the 300 shared blocks (375 bytes) is never needed because a holds all of b's heads
    assert net.stats.bytes_delivered < block_bytes + 20 * 40 + 400


def test_divergent_replicas_merge() -> None:
    a, b = pair()
    x, y = ToyAuthor(b"x"), ToyAuthor(b"y")
    grow([a.view, b.view], x, 100)
    ours = grow([a.view], x, 15)
    theirs = grow([b.view], y, 15)
    net = NetSim(seed=0)
    pump([a, b], net)
    assert a.view.heads() == b.view.heads() == {ours[-1].cid, theirs[-1].cid}
    assert set(b.added) == {n.cid for n in ours} and set(a.added) == {n.cid for n in theirs}


def test_blocks_arrive_parents_first_and_each_once() -> None:
    a, b = pair()
    grow([a.view], ToyAuthor(b"x"), 50)
    net = NetSim(seed=0)
    pump([a, b], net)
    pos = {c: i for i, c in enumerate(b.added)}
    assert len(pos) == len(b.added) == 50
    for c in b.added:
        assert all(pos[link] < pos[c] for link in b.view.links(c))


def test_message_budget_splits_large_diffs() -> None:
    a = SimReplica("a", MemoryDag(toy_check))
    b = SimReplica("b", MemoryDag(toy_check))
    connect([a, b], counter_rng(3), max_message_bytes=500)
    grow([a.view], ToyAuthor(b"x"), 100)
    net = NetSim(seed=0)
    pump([a, b], net)
    assert converged([a, b]) and net.stats.sent > 10


def test_lost_message_recovered_by_timeout() -> None:
    a, b = pair()
    grow([a.view], ToyAuthor(b"x"), 10)
    sa, sb = a.sessions["b"], b.sessions["a"]
    m1 = sb.generate_message()
    assert m1 is not None
    sa.receive_message(m1)
    lost = sa.generate_message()  # carries the 10 blocks; dropped
    assert lost is not None and len(SyncMessage.from_bytes(lost).blocks) == 10
    assert sa.generate_message() is None  # nothing new to say...
    assert b.view.heads() == frozenset()
    sa.on_timeout()  # ...until the caller's timer fires
    again = sa.generate_message()
    assert again is not None
    sb.receive_message(again)
    assert b.view.heads() == a.view.heads()


def test_duplicate_and_stale_messages_are_harmless() -> None:
    a, b = pair()
    x = ToyAuthor(b"x")
    grow([a.view], x, 5)
    sa, sb = a.sessions["b"], b.sessions["a"]
    sa.receive_message(sb.generate_message() or b"")
    old = sa.generate_message()
    assert old is not None
    grow([a.view], x, 5)
    new = sa.generate_message()
    assert new is not None
    sb.receive_message(new)  # new first: blocks 6-10 wait for 1-5
    assert sb.pending_count == 5
    sb.receive_message(old)  # stale state is ignored, its blocks are used
    sb.receive_message(old)
    assert sb.peer_heads == a.view.heads() == b.view.heads()
    assert sb.pending_count == 0


def test_peer_restart_resets_the_session() -> None:
    a, b = pair()
    x = ToyAuthor(b"x")
    grow([a.view, b.view], x, 5)
    net = NetSim(seed=0)
    pump([a, b], net)
    # b restarts: a fresh session over the same store, and a new block on a
    b.sessions["a"] = SyncSession(b.view, rng=counter_rng(99))
    grow([a.view], x, 1)
    pump([a, b], net)
    assert converged([a, b])


def test_concurrent_writes_during_sync_converge() -> None:
    a, b = pair()
    x, y = ToyAuthor(b"x"), ToyAuthor(b"y")
    rnd = random.Random(5)
    net = NetSim(seed=4, max_delay=3, duplicate=0.2)
    for _ in range(30):
        grow([a.view], x, rnd.randint(0, 2))
        grow([b.view], y, rnd.randint(0, 2))
        for r, peer in ((a, "b"), (b, "a")):
            m = r.sessions[peer].generate_message()
            if m:
                net.send(r.name, peer, m)
        for msg in net.step():
            dst = a if msg.dst == "a" else b
            dst.sessions[str(msg.src)].receive_message(msg.payload)
    assert sync_to_quiescence([a, b], net) == 0


def test_invalid_limits() -> None:
    with pytest.raises(InvalidArgument):
        SyncSession(MemoryDag(toy_check), max_message_bytes=0)
    with pytest.raises(InvalidArgument):
        SyncSession(MemoryDag(toy_check), rng=lambda n: b"x")


class DictStore:
    """A minimal stand-in for crdt_mls.stores.Store (blocks + meta, atomic batches)."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}
        self.meta: dict[str, bytes] = {}

    def get_block(self, cid: bytes) -> bytes | None:
        return self.blocks.get(cid)

    def has_block(self, cid: bytes) -> bool:
        return cid in self.blocks

    def get_meta(self, key: str) -> bytes | None:
        return self.meta.get(key)

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None:
        self.blocks.update(blocks)
        for k, v in meta.items():
            if v is None:
                self.meta.pop(k, None)
            else:
                self.meta[k] = v


def test_store_dag_persists_heads_and_index() -> None:
    store = DictStore()
    view = StoreDag(store, toy_check)
    x, y = ToyAuthor(b"x"), ToyAuthor(b"y")
    nodes = grow([view], x, 5) + grow([view], y, 3)
    again = StoreDag(store, toy_check)
    assert again.heads() == view.heads() == {nodes[-1].cid}
    assert again.height(nodes[-1].cid) == 7 and again.links(nodes[1].cid) == (nodes[0].cid,)
    assert again.get(nodes[0].cid) == nodes[0].block and again.get(b"\x01zz") is None
    with pytest.raises(InvalidArgument):
        again.height(b"\x01zz")
    with pytest.raises(InvalidArgument):
        orphan = ToyNode(b"z", 1, b"\x01missing", ())
        again.add([(orphan.cid, orphan.block, toy_links(orphan))])
    # adopt: blocks put into the store by someone else get indexed
    raw_store = DictStore()
    raw_store.blocks.update((n.cid, n.block) for n in nodes)
    adopted = StoreDag(raw_store, toy_check)
    adopted.adopt(reversed([n.cid for n in nodes]))
    assert adopted.heads() == view.heads()


def test_store_dags_sync() -> None:
    a = SimReplica("a", StoreDag(DictStore(), toy_check))
    b = SimReplica("b", StoreDag(DictStore(), toy_check))
    connect([a, b], counter_rng(1))
    grow([a.view], ToyAuthor(b"x"), 20)
    grow([b.view], ToyAuthor(b"y"), 20)
    assert sync_to_quiescence([a, b], NetSim(seed=2, drop=0.2, max_delay=2)) >= 0
    assert a.view.heads() == b.view.heads()


def test_dag_difference() -> None:
    view = MemoryDag(toy_check)
    x, y = ToyAuthor(b"x"), ToyAuthor(b"y")
    base = grow([view], x, 10)
    left = grow([view], x, 3)
    # y branches from base[-1]
    right = [y.write(parents=(base[-1].cid,))]
    add(view, right[0])
    assert dag_difference(view, [left[-1].cid], [base[-1].cid]) == [n.cid for n in left]
    assert dag_difference(view, [left[-1].cid, right[0].cid], [left[-1].cid]) == [right[0].cid]
    assert dag_difference(view, [base[-1].cid], [left[-1].cid]) == []
    assert dag_difference(view, [base[2].cid], []) == [n.cid for n in base[:3]]
    assert dag_difference(view, [b"\x01unknown"], []) == []


def test_store_dag_namespaces_separate_groups() -> None:
    store = DictStore()
    g1 = StoreDag(store, toy_check, namespace="g1")
    g2 = StoreDag(store, toy_check, namespace="g2")
    n = grow([g1], ToyAuthor(b"x"), 1)[0]
    assert g1.has(n.cid) and not g2.has(n.cid) and g2.heads() == frozenset()
    with pytest.raises(InvalidArgument):
        StoreDag(store, toy_check, namespace="a/b")


def test_restated_message_makes_a_silent_peer_reply() -> None:
    """b's only message is lost; b considers itself in sync and stays silent until a's
    timer fires and a's restated message asks b to restate its heads."""
    a, b = pair()
    grow([a.view, b.view], ToyAuthor(b"x"), 3)
    sa, sb = a.sessions["b"], b.sessions["a"]
    sb.generate_message()  # lost
    sb.receive_message(sa.generate_message() or b"")
    assert sb.in_sync() and not sa.in_sync()
    assert sb.generate_message() is None and sa.generate_message() is None
    sa.on_timeout()
    restated = sa.generate_message()
    assert restated is not None and SyncMessage.from_bytes(restated).restated
    sb.receive_message(restated)
    reply = sb.generate_message()
    assert reply is not None and not SyncMessage.from_bytes(reply).restated
    sa.receive_message(reply)
    assert sa.in_sync() and sa.generate_message() is None and sb.generate_message() is None


def test_known_shared_hint_keeps_first_contact_incremental() -> None:
    def first_contact(hint: bool) -> int:
        a = SimReplica("a", MemoryDag(toy_check))
        b = SimReplica("b", MemoryDag(toy_check))
        shared = grow([a.view, b.view], ToyAuthor(b"x"), 400)
        grow([a.view], ToyAuthor(b"y"), 5)
        grow([b.view], ToyAuthor(b"z"), 5)
        known = [shared[-1].cid] if hint else []
        a.sessions["b"] = SyncSession(a.view, rng=counter_rng(1), known_shared=known)
        b.sessions["a"] = SyncSession(b.view, rng=counter_rng(2), known_shared=known)
        net = NetSim(seed=0)
        pump([a, b], net)
        assert converged([a, b]) and len(a.view.heads()) == 2
        return net.stats.bytes_delivered

    assert first_contact(True) + 400 < first_contact(False)  # the filters over 400 blocks are saved


def test_wrong_hint_still_converges() -> None:
    a = SimReplica("a", MemoryDag(toy_check))
    b = SimReplica("b", MemoryDag(toy_check))
    common = grow([a.view, b.view], ToyAuthor(b"x"), 5)
    only_a = grow([a.view], ToyAuthor(b"x2"), 10)
    grow([b.view], ToyAuthor(b"z"), 3)
    # a wrongly believes b holds only_a[-1]
    a.sessions["b"] = SyncSession(a.view, rng=counter_rng(1), known_shared=[only_a[-1].cid])
    b.sessions["a"] = SyncSession(b.view, rng=counter_rng(2), known_shared=[common[-1].cid])
    assert sync_to_quiescence([a, b], NetSim(seed=0)) >= 0
    assert a.view.heads() == b.view.heads()
