"""Causal delivery buffer (crdt_mls.causal.delivery; docs/causal.md section 1)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.causal import BufferFullError, CausalBuffer, dependencies
from crdt_mls.errors import DecodeError, IntegrityError, InvalidArgument, OversizeError
from crdt_mls.mls.codec import Writer
from tests.properties.toy import ToyAuthor, ToyNode, encode_toy


def chain(n: int, name: bytes = b"a") -> list[ToyNode]:
    a = ToyAuthor(name)
    return [a.write() for _ in range(n)]


def test_in_order_delivery() -> None:
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    nodes = chain(3)
    for n in nodes:
        assert buf.receive(n) == [n]
    assert len(buf) == 0
    assert buf.missing() == set()
    assert all(buf.is_delivered(n.cid) for n in nodes)


def test_reverse_order_waits_then_releases_in_causal_order() -> None:
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    n0, n1, n2 = chain(3)
    assert buf.receive(n2) == []
    assert buf.missing() == {n1.cid}
    assert buf.waiting_for(n2.cid) == {n1.cid}
    assert buf.receive(n1) == []
    assert buf.missing() == {n0.cid}
    assert buf.waits() == {n2.cid: frozenset({n1.cid}), n1.cid: frozenset({n0.cid})}
    assert buf.receive(n0) == [n0, n1, n2]
    assert len(buf) == 0 and buf.waiting_bytes == 0
    assert buf.missing() == set()


def test_parents_of_other_authors_are_waited_for() -> None:
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    a, b = ToyAuthor(b"a"), ToyAuthor(b"b")
    a0 = a.write()
    b0 = b.write(parents=(a0.cid,))
    assert buf.receive(b0) == []
    assert buf.missing() == {a0.cid}
    assert buf.receive(a0) == [a0, b0]


def test_duplicates_are_ignored() -> None:
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    n0, n1 = chain(2)
    assert buf.receive(n1) == []
    assert buf.receive(n1) == []
    assert len(buf) == 1
    assert buf.receive(n0) == [n0, n1]
    assert buf.receive(n0) == []
    assert buf.receive(n1) == []


def test_diamond_delivered_once() -> None:
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    a, b, c = ToyAuthor(b"a"), ToyAuthor(b"b"), ToyAuthor(b"c")
    root = a.write()
    left = b.write(parents=(root.cid,))
    right = c.write(parents=(root.cid,))
    top = a.write(parents=(left.cid, right.cid))
    assert buf.receive(top) == []
    assert buf.receive(left) == []
    assert buf.receive(right) == []
    out = buf.receive(root)
    assert out[0] == root and out[-1] == top and sorted(n.cid for n in out[1:3]) == sorted([left.cid, right.cid])


def test_overflow_by_nodes_leaves_buffer_unchanged() -> None:
    buf: CausalBuffer[ToyNode] = CausalBuffer(max_nodes=2)
    nodes = chain(5)
    buf.receive(nodes[4])
    buf.receive(nodes[3])
    with pytest.raises(BufferFullError) as info:
        buf.receive(nodes[2])
    assert isinstance(info.value, OversizeError)
    assert len(buf) == 2 and not buf.knows(nodes[2].cid)
    assert buf.missing() == {nodes[2].cid}
    # a deliverable node never counts against the limit
    assert buf.receive(nodes[0]) == [nodes[0]]


def test_overflow_by_bytes_leaves_buffer_unchanged() -> None:
    nodes = chain(3)
    limit = nodes[2].size + nodes[1].size - 1
    buf: CausalBuffer[ToyNode] = CausalBuffer(max_bytes=limit, size_of=lambda n: n.size)
    buf.receive(nodes[2])
    before = buf.waiting_bytes
    with pytest.raises(BufferFullError):
        buf.receive(nodes[1])
    assert buf.waiting_bytes == before == nodes[2].size
    assert buf.receive(nodes[0]) == [nodes[0]]


def test_self_parent_rejected() -> None:
    class Loop:
        cid = b"\x01x"
        author = b"a"
        seq = 0
        prev = None
        parents = (b"\x01x",)

    buf: CausalBuffer[Loop] = CausalBuffer()
    with pytest.raises(IntegrityError):
        buf.receive(Loop())
    assert len(buf) == 0 and not buf.knows(b"\x01x")


def test_bad_cid_rejected() -> None:
    class Bad:
        cid = b""
        author = b"a"
        seq = 0
        prev = None
        parents = ()

    with pytest.raises(DecodeError):
        CausalBuffer[Bad]().receive(Bad())


def test_mark_delivered_releases_waiting() -> None:
    n0, n1 = chain(2)
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    buf.receive(n1)
    assert buf.mark_delivered([n0.cid]) == [n1]
    with pytest.raises(InvalidArgument):
        buf2: CausalBuffer[ToyNode] = CausalBuffer()
        buf2.receive(n1)
        buf2.mark_delivered([n1.cid])


def test_negative_limits_rejected() -> None:
    with pytest.raises(InvalidArgument):
        CausalBuffer(max_nodes=-1)


def test_waiting_for_unknown() -> None:
    with pytest.raises(InvalidArgument):
        CausalBuffer[ToyNode]().waiting_for(b"\x01z")


def test_state_round_trip() -> None:
    nodes = chain(4)
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    buf.receive(nodes[0])
    buf.receive(nodes[3])
    buf.receive(nodes[2])
    data = buf.to_bytes(encode_toy)
    restored = CausalBuffer.from_bytes(data, ToyNode.from_block)
    assert restored.to_bytes(encode_toy) == data
    assert restored.waits() == buf.waits()
    assert restored.receive(nodes[1]) == [nodes[1], nodes[2], nodes[3]]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],
        lambda d: d + b"\x00",
        lambda d: b"\x02" + d[1:],
    ],
)
def test_state_malformed(mutate: object) -> None:
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    nodes = chain(2)
    buf.receive(nodes[1])
    data = buf.to_bytes(encode_toy)
    with pytest.raises(DecodeError):
        CausalBuffer.from_bytes(mutate(data), ToyNode.from_block)  # type: ignore[operator]


def test_state_with_deliverable_waiting_node_rejected() -> None:
    n0, n1 = chain(2)
    w = Writer()
    w.u8(1)
    w.vector([n0.cid], Writer.opaque)
    w.vector([n1.block], Writer.opaque)
    with pytest.raises(DecodeError):
        CausalBuffer.from_bytes(w.getvalue(), ToyNode.from_block)


def random_dag(rnd: random.Random, authors: int, count: int) -> list[ToyNode]:
    writers = [ToyAuthor(bytes([i])) for i in range(authors)]
    nodes: list[ToyNode] = []
    for _ in range(count):
        w = writers[rnd.randrange(authors)]
        k = rnd.randint(0, min(3, len(nodes)))
        parents = tuple(n.cid for n in rnd.sample(nodes, k))
        nodes.append(w.write(parents=parents))
    return nodes


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), authors=st.integers(1, 5), count=st.integers(1, 60))
def test_any_arrival_order_delivers_each_node_once_after_its_dependencies(seed: int, authors: int, count: int) -> None:
    rnd = random.Random(seed)
    nodes = random_dag(rnd, authors, count)
    arrivals = nodes + rnd.sample(nodes, len(nodes) // 3)  # duplicates
    rnd.shuffle(arrivals)
    buf: CausalBuffer[ToyNode] = CausalBuffer()
    delivered: list[bytes] = []
    for n in arrivals:
        delivered.extend(x.cid for x in buf.receive(n))
    assert sorted(delivered) == sorted(n.cid for n in nodes)
    position = {c: i for i, c in enumerate(delivered)}
    for n in nodes:
        assert all(position[d] < position[n.cid] for d in dependencies(n))
    assert len(buf) == 0 and buf.missing() == set()


# ------------------------------------------------------------------ gates (blocks a consumer needs)


def test_gate_holds_a_node_and_its_descendants_until_its_blocks_arrive() -> None:
    """A gated node waits for the blocks the gate names (they are `missing`), its descendants
    wait for it; `available` releases them in causal order."""
    needs: dict[bytes, set[bytes]] = {}
    buf: CausalBuffer[ToyNode] = CausalBuffer(gate=lambda n: needs.get(n.cid, set()))
    n0, n1, n2 = chain(3)
    needs[n1.cid] = {b"chunk-1", b"chunk-2"}
    assert buf.receive(n0) == [n0]
    assert buf.receive(n2) == []
    assert buf.receive(n1) == []
    assert buf.missing() == {b"chunk-1", b"chunk-2"}
    assert buf.waiting_for(n1.cid) == {b"chunk-1", b"chunk-2"}
    assert list(buf.available([b"chunk-1", b"unrelated"])) == []
    assert buf.missing() == {b"chunk-2"}
    needs[n1.cid] = set()  # the gate sees what the consumer has now
    assert list(buf.available([b"chunk-2"])) == [n1, n2]
    assert len(buf) == 0 and buf.missing() == set() and buf.waiting_bytes == 0
    assert not buf.is_delivered(b"chunk-1")  # blocks are not nodes


def test_gate_is_asked_again_and_may_name_more_blocks() -> None:
    asked: list[bytes] = []
    stage = {"n": 0}

    def gate(n: ToyNode) -> set[bytes]:
        asked.append(n.cid)
        if n.seq != 1:
            return set()
        return [{b"welcome"}, {b"tree"}, set()][stage["n"]]

    buf: CausalBuffer[ToyNode] = CausalBuffer(gate=gate)
    n0, n1 = chain(2)
    assert buf.receive(n0) == [n0]
    assert buf.receive(n1) == []
    assert buf.missing() == {b"welcome"}
    stage["n"] = 1
    assert list(buf.available([b"welcome"])) == []
    assert buf.missing() == {b"tree"}
    stage["n"] = 2
    assert list(buf.available([b"tree"])) == [n1]
    assert asked.count(n1.cid) == 3


def test_lazy_delivery_lets_the_consumer_act_before_the_next_gate() -> None:
    """With `receive_iter`, the gate of a descendant runs only after the consumer processed its
    ancestor (here: the consumer learns from n0 that n1 needs a block)."""
    learned: set[bytes] = set()
    buf: CausalBuffer[ToyNode] = CausalBuffer(gate=lambda n: {b"blk"} if n.cid in learned else set())
    n0, n1, n2 = chain(3)
    assert buf.receive(n2) == [] and buf.receive(n1) == []
    out = []
    for n in buf.receive_iter(n0):
        out.append(n)
        if n is n0:
            learned.add(n1.cid)
    assert out == [n0]
    assert buf.missing() == {b"blk"}
    learned.clear()
    assert list(buf.available([b"blk"])) == [n1, n2]


def test_gated_state_round_trips() -> None:
    decode_toy = ToyNode.from_block
    n0, n1, n2 = chain(3)
    have: set[bytes] = set()
    buf: CausalBuffer[ToyNode] = CausalBuffer(gate=lambda n: {b"blk"} - have if n.seq == 1 else set())
    buf.receive(n0)
    buf.receive(n2)
    buf.receive(n1)
    data = buf.to_bytes(encode_toy)
    assert data[0] == 2  # version 2: a node waits for gate blocks
    back = CausalBuffer.from_bytes(data, decode_toy, gate=buf.gate)
    assert back.waits() == buf.waits() and back.missing() == {b"blk"}
    assert back.to_bytes(encode_toy) == data
    # the waiting part alone, next to a delivered set kept elsewhere
    part = buf.waiting_to_bytes(encode_toy)
    fresh: CausalBuffer[ToyNode] = CausalBuffer(gate=buf.gate, delivered=[n0.cid])
    fresh.restore_waiting(part, decode_toy)
    assert fresh.waits() == buf.waits()
    have.add(b"blk")
    assert list(fresh.available([b"blk"])) == [n1, n2] == list(back.available([b"blk"]))
    with pytest.raises(InvalidArgument):
        buf.restore_waiting(part, decode_toy)
    # a saved block wait for a node whose parents are not delivered is inconsistent
    lost: CausalBuffer[ToyNode] = CausalBuffer(gate=buf.gate)
    with pytest.raises(DecodeError):
        lost.restore_waiting(part, decode_toy)
    # without gated nodes the version-1 encoding is unchanged
    plain: CausalBuffer[ToyNode] = CausalBuffer()
    plain.receive(n2)
    assert plain.to_bytes(encode_toy)[0] == 1


def test_transaction_rollback_restores_everything() -> None:
    from crdt_mls.causal import CausalReceiver, MemberLogs

    have: set[bytes] = set()
    rec: CausalReceiver[ToyNode] = CausalReceiver(
        CausalBuffer(gate=lambda n: {b"blk"} - have if n.seq == 2 else set()), MemberLogs()
    )
    a, b = ToyAuthor(b"a"), ToyAuthor(b"b")
    a0, a1, a2, a3 = (a.write() for _ in range(4))
    b0 = b.write(parents=(a0.cid,))
    rec.receive(a0)
    rec.receive(a3)
    before = rec.to_bytes(encode_toy)
    rec.begin()
    assert [n for n in rec.receive_iter(a1) if isinstance(n, ToyNode)] == [a1]
    rec.receive(a2)  # gated: waits for blk
    rec.receive(b0)
    assert rec.buffer.missing() == {b"blk"}
    rec.rollback()
    assert rec.to_bytes(encode_toy) == before
    assert rec.logs.length(b"a") == 1 and rec.logs.length(b"b") == 0
    # a committed transaction reports what passed the buffer, in order
    rec.begin()
    rec.receive(b0)
    rec.receive(a1)
    have.add(b"blk")
    rec.receive(a2)
    assert rec.commit() == [b0.cid, a1.cid, a2.cid, a3.cid]
    # a checkpoint (no waiting nodes) plus the saved waiting part rebuilds the receiver
    ck: CausalReceiver[ToyNode] = CausalReceiver.from_bytes(rec.checkpoint_bytes(encode_toy), ToyNode.from_block)
    ck.buffer.restore_waiting(rec.buffer.waiting_to_bytes(encode_toy), ToyNode.from_block)
    assert ck.to_bytes(encode_toy) == rec.to_bytes(encode_toy)
    # and so does replaying the journal of deliveries onto an empty one
    fresh: CausalReceiver[ToyNode] = CausalReceiver()
    for n in (a0, b0, a1, a2, a3):
        fresh.replay(n)
    fresh.buffer.restore_waiting(rec.buffer.waiting_to_bytes(encode_toy), ToyNode.from_block)
    assert fresh.to_bytes(encode_toy) == rec.to_bytes(encode_toy)
