"""Per-member logs, equivocation, gaps, tails (crdt_mls.causal.logs; docs/causal.md section 2)."""

from __future__ import annotations

import pytest

from crdt_mls.causal import (
    CausalBuffer,
    CausalReceiver,
    Equivocation,
    EquivocationDetected,
    Gap,
    LogError,
    LogGapError,
    MemberLogs,
    Refused,
)
from crdt_mls.errors import DecodeError, EquivocationError, UnknownParentError
from tests.properties.toy import ToyAuthor, ToyNode, encode_toy


def test_append_in_order_and_tails() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    a, b = ToyAuthor(b"a"), ToyAuthor(b"b")
    a0, a1 = a.write(), a.write()
    b0 = b.write(parents=(a0.cid,))
    for n in (a0, b0, a1):
        assert logs.append(n)
    assert logs.log(b"a") == (a0.cid, a1.cid)
    assert logs.tail(b"a") == a1 and logs.tail(b"b") == b0
    assert logs.tails() == {b"a": a1, b"b": b0}
    assert logs.next_seq(b"a") == 2 and logs.length(b"zz") == 0
    assert logs.cid_at(b"a", 1) == a1.cid and logs.cid_at(b"a", 2) is None
    assert logs.authors() == [b"a", b"b"]
    assert not logs.append(a1)  # duplicate
    assert logs.equivocations() == []


def test_fork_is_equivocation_with_both_cids() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    a0 = ToyAuthor(b"a").write()
    a1 = ToyNode(b"a", 1, a0.cid, (), payload=b"x")
    a1_other = ToyNode(b"a", 1, a0.cid, (), payload=b"y")
    logs.append(a0)
    logs.append(a1)
    with pytest.raises(EquivocationDetected) as info:
        logs.append(a1_other)
    assert isinstance(info.value, EquivocationError)
    ev = info.value.evidence
    assert ev == Equivocation(b"a", 1, a1.cid, a1_other.cid, "fork")
    assert logs.equivocation(b"a") == ev
    assert logs.log(b"a") == (a0.cid, a1.cid)
    # every later node of the author is refused
    a2 = ToyNode(b"a", 2, a1.cid, ())
    with pytest.raises(EquivocationDetected):
        logs.append(a2)
    assert logs.tail(b"a") == a1
    assert not logs.append(a1)  # an already logged node is still a harmless duplicate


def test_prev_mismatch_is_equivocation() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    a0 = ToyAuthor(b"a").write()
    b0 = ToyAuthor(b"b").write()
    logs.append(a0)
    logs.append(b0)
    bad = ToyNode(b"a", 1, b0.cid, ())
    with pytest.raises(EquivocationDetected) as info:
        logs.append(bad)
    assert info.value.evidence == Equivocation(b"a", 1, a0.cid, bad.cid, "prev-mismatch")


def test_first_node_rules() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    with pytest.raises(LogGapError) as info:
        logs.append(ToyNode(b"a", 3, None, ()))
    assert isinstance(info.value, UnknownParentError)
    with pytest.raises(LogError):
        logs.append(ToyNode(b"a", 0, b"\x01x", ()))
    assert logs.authors() == []
    logs1: MemberLogs[ToyNode] = MemberLogs(first_seq=1)
    assert logs1.append(ToyNode(b"a", 1, None, ()))


def test_seq_skipping_ahead_is_a_gap_error() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    a0 = ToyAuthor(b"a").write()
    logs.append(a0)
    with pytest.raises(LogGapError):
        logs.append(ToyNode(b"a", 5, a0.cid, ()))
    assert logs.log(b"a") == (a0.cid,)


def test_gaps_from_waiting_nodes() -> None:
    a = ToyAuthor(b"a")
    nodes = [a.write() for _ in range(7)]
    rx: CausalReceiver[ToyNode] = CausalReceiver()
    rx.receive(nodes[0])
    rx.receive(nodes[3])
    rx.receive(nodes[6])
    assert rx.gaps() == [Gap(b"a", 1, 2), Gap(b"a", 4, 5)]
    assert rx.missing() == {nodes[2].cid, nodes[5].cid}
    out = rx.receive(nodes[1])
    assert out.delivered == (nodes[1],) and rx.gaps() == [Gap(b"a", 2, 2), Gap(b"a", 4, 5)]
    for n in (nodes[5], nodes[4], nodes[2]):
        out = rx.receive(n)
    assert [n.seq for n in out.delivered] == [2, 3, 4, 5, 6]
    assert rx.gaps() == []


def test_receiver_reports_equivocation_and_refuses_later_nodes() -> None:
    a = ToyAuthor(b"a")
    a0 = a.write()
    a1 = ToyNode(b"a", 1, a0.cid, (), payload=b"x")
    fork = ToyNode(b"a", 1, a0.cid, (), payload=b"y")
    a2 = ToyNode(b"a", 2, a1.cid, ())
    b0 = ToyAuthor(b"b").write(parents=(fork.cid,))
    rx: CausalReceiver[ToyNode] = CausalReceiver()
    assert rx.receive(a0).delivered == (a0,)
    assert rx.receive(a1).delivered == (a1,)
    res = rx.receive(fork)
    assert res.delivered == ()
    assert res.events == (Equivocation(b"a", 1, a1.cid, fork.cid, "fork"), Refused(fork.cid, b"a", 1, "equivocation"))
    res = rx.receive(a2)
    assert res.delivered == () and res.events == (Refused(a2.cid, b"a", 2, "equivocation"),)
    # an honest node depending on the refused one is not held back forever
    assert rx.receive(b0).delivered == (b0,)
    assert rx.logs.equivocations() == [Equivocation(b"a", 1, a1.cid, fork.cid, "fork")]


def test_record_equivocation_from_elsewhere() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    ev = Equivocation(b"z", 0, b"\x01a", b"\x01b", "fork")
    logs.record_equivocation(ev)
    with pytest.raises(EquivocationDetected):
        logs.append(ToyAuthor(b"z").write())
    assert logs.equivocations() == [ev]


def test_oldest_tail_epoch_with_caller_ordering() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    assert logs.oldest_tail_epoch(lambda n: n.epoch, lambda e: e) is None
    a, b, c = ToyAuthor(b"a"), ToyAuthor(b"b"), ToyAuthor(b"c")
    logs.append(a.write(epoch=5))
    logs.append(a.write(epoch=9))
    logs.append(b.write(epoch=7))
    logs.append(c.write(epoch=3))
    # integer epochs, natural order: c is still in epoch 3
    assert logs.oldest_tail_epoch(lambda n: n.epoch, lambda e: e) == 3
    # only current members count
    assert logs.oldest_tail_epoch(lambda n: n.epoch, lambda e: e, members=[b"a", b"b", b"x"]) == 7
    # epochs identified by opaque ids, ordered by the caller (e.g. epoch DAG depth)
    depth = {3: 30, 7: 10, 9: 20}
    assert logs.oldest_tail_epoch(lambda n: n.epoch, lambda e: depth[e]) == 7


def test_logs_state_round_trip_and_malformed() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    a = ToyAuthor(b"a")
    a0, a1 = a.write(), a.write()
    logs.append(a0)
    logs.append(a1)
    logs.append(ToyAuthor(b"b").write())
    with pytest.raises(EquivocationDetected):
        logs.append(ToyNode(b"a", 1, a0.cid, (), payload=b"fork"))
    logs.record_equivocation(Equivocation(b"z", 4, b"\x01a", b"\x01b", "prev-mismatch"))
    data = logs.to_bytes(encode_toy)
    back = MemberLogs.from_bytes(data, ToyNode.from_block)
    assert back.to_bytes(encode_toy) == data
    assert back.tails() == logs.tails() and back.equivocations() == logs.equivocations()
    for bad in (data[:-1], data + b"\x00", b"\x09" + data[1:]):
        with pytest.raises(DecodeError):
            MemberLogs.from_bytes(bad, ToyNode.from_block)


def test_receiver_state_round_trip() -> None:
    a = ToyAuthor(b"a")
    nodes = [a.write() for _ in range(4)]
    rx: CausalReceiver[ToyNode] = CausalReceiver(CausalBuffer(max_nodes=10))
    rx.receive(nodes[0])
    rx.receive(nodes[2])
    data = rx.to_bytes(encode_toy)
    back = CausalReceiver.from_bytes(data, ToyNode.from_block, max_nodes=10)
    assert back.to_bytes(encode_toy) == data
    assert back.receive(nodes[1]).delivered == (nodes[1], nodes[2])


def test_gaps_with_huge_claimed_seq_is_cheap() -> None:
    logs: MemberLogs[ToyNode] = MemberLogs()
    far = ToyNode(b"a", 2**62, b"\x01x", ())
    assert logs.gaps([far]) == [Gap(b"a", 0, 2**62 - 1)]
