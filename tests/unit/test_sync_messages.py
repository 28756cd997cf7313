"""Sync message encoding and strict decoding (crdt_mls.causal.sync; docs/causal.md section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_mls.causal import BloomFilter, MemoryDag, SyncMessage, SyncSession
from crdt_mls.errors import DecodeError, IntegrityError, OversizeError
from crdt_mls.mls.codec import Writer
from tests.properties.toy import ToyAuthor, toy_check, toy_links

C1, C2, C3 = b"\x01\x01", b"\x01\x02", b"\x01\x03"


def sample() -> SyncMessage:
    return SyncMessage(b"S" * 8, 7, (C1, C2), (C3,), (C1,), BloomFilter.build([C1, C2]), ((C3, b"block"),), True)


def raw(
    *,
    version: int = 1,
    session: bytes = b"S" * 8,
    heads: list[bytes] | None = None,
    need: list[bytes] | None = None,
    since: list[bytes] | None = None,
    have: bytes | None = None,
    blocks: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """Hand-encode a message without the encoder's normalisation."""
    w = Writer()
    w.u8(version)
    w.fixed(session)
    w.u32(1)
    w.u8(0)  # not restated
    for lst in (heads or [], need or [], since or []):
        w.vector(lst, Writer.opaque)
    if have is None:
        w.u8(0)
    else:
        w.u8(1)
        w.fixed(have)

    def put(ww: Writer, b: tuple[bytes, bytes]) -> None:
        ww.opaque(b[0])
        ww.opaque(b[1])

    w.vector(blocks or [], put)
    return w.getvalue()


def test_round_trip() -> None:
    msg = sample()
    data = msg.to_bytes()
    assert SyncMessage.from_bytes(data) == msg
    assert SyncMessage.from_bytes(raw(heads=[C1, C2])).heads == (C1, C2)


def test_bloom_membership() -> None:
    cids = [bytes([1, i, i]) for i in range(200)]
    f = BloomFilter.build(cids)
    assert all(c in f for c in cids)
    others = [b"\x02" + i.to_bytes(2, "big") for i in range(2000)]
    assert sum(c in f for c in others) < 100  # about 1 % expected
    assert C1 not in BloomFilter.build([])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(raw()[:-1], id="truncated"),
        pytest.param(raw() + b"\x00", id="trailing"),
        pytest.param(raw(version=2), id="version"),
        pytest.param(raw(heads=[C2, C1]), id="unsorted-heads"),
        pytest.param(raw(need=[C1, C1]), id="duplicate-need"),
        pytest.param(raw(since=[b""]), id="empty-cid"),
        pytest.param(raw(heads=[b"\x01" * 129]), id="long-cid"),
        pytest.param(raw(blocks=[(C1, b"a"), (C1, b"a")]), id="duplicate-block"),
        pytest.param(raw(have=b"\x00\x00\x00\x02\x07\x01\x00"), id="bloom-size"),
        pytest.param(raw(have=b"\x00\x00\x00\x00\x00\x00"), id="bloom-zero-hashes"),
        pytest.param(raw(have=b"\xff\xff\xff\xff\x07\x00"), id="bloom-too-large"),
        pytest.param(raw()[:17] + b"\x02" + raw()[18:], id="bad-optional"),
        pytest.param(raw()[:13] + b"\x02" + raw()[14:], id="bad-boolean"),
    ],
)
def test_malformed_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        SyncMessage.from_bytes(data)


def test_malformed_leaves_session_and_store_unchanged() -> None:
    view = MemoryDag(toy_check)
    s = SyncSession(view, rng=lambda n: b"A" * n)
    first = s.generate_message()
    assert first is not None
    with pytest.raises(DecodeError):
        s.receive_message(raw(heads=[C2, C1]))
    assert s.peer_heads is None and len(view) == 0


def test_block_not_matching_cid_rejected_and_nothing_stored() -> None:
    a = ToyAuthor(b"a")
    n0, n1 = a.write(), a.write()
    view = MemoryDag(toy_check)
    s = SyncSession(view, rng=lambda n: b"A" * n)
    data = raw(heads=[n1.cid], blocks=[(n0.cid, n0.block), (n1.cid, n0.block)])
    with pytest.raises(IntegrityError):
        s.receive_message(data)
    assert len(view) == 0 and s.peer_heads is None and s.pending_count == 0


def test_oversize_message_rejected() -> None:
    s = SyncSession(MemoryDag(toy_check), rng=lambda n: b"A" * n, max_incoming_bytes=100)
    with pytest.raises(OversizeError):
        s.receive_message(raw(blocks=[(C1, b"x" * 200)]))


def test_pending_limit() -> None:
    a = ToyAuthor(b"a")
    nodes = [a.write() for _ in range(5)]
    view = MemoryDag(toy_check)
    s = SyncSession(view, rng=lambda n: b"A" * n, max_pending=2)
    with pytest.raises(OversizeError):
        s.receive_message(raw(blocks=[(n.cid, n.block) for n in nodes[2:]]))
    assert s.pending_count == 0 and len(view) == 0
    # within the limit: blocks wait, their missing link is requested
    s.receive_message(raw(heads=[nodes[4].cid], blocks=[(n.cid, n.block) for n in nodes[3:]]))
    assert s.pending_count == 2 and len(view) == 0
    out = s.generate_message()
    assert out is not None
    assert SyncMessage.from_bytes(out).need == (nodes[2].cid,)
    added = s.receive_message(raw(blocks=[(n.cid, n.block) for n in nodes[:3]]))
    assert added == [n.cid for n in nodes] and view.heads() == {nodes[4].cid}
    assert all(view.links(n.cid) == toy_links(n) for n in nodes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_only_decode_errors(data: bytes) -> None:
    try:
        msg = SyncMessage.from_bytes(data)
    except DecodeError:
        return
    assert SyncMessage.from_bytes(msg.to_bytes()) == msg  # whatever decodes re-encodes canonically


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mutated_messages(data: st.DataObject) -> None:
    good = bytearray(sample().to_bytes())
    i = data.draw(st.integers(0, len(good) - 1))
    good[i] = data.draw(st.integers(0, 255))
    view = MemoryDag(toy_check)
    s = SyncSession(view, rng=lambda n: b"A" * n)
    try:
        s.receive_message(bytes(good))
    except (DecodeError, IntegrityError):
        assert s.peer_heads is None and len(view) == 0
