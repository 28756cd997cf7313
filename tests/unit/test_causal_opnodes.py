"""The causal layer over real signed nodes (crdt_mls.dag) and real stores (crdt_mls.stores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_mls.causal import (
    CausalReceiver,
    Equivocation,
    NodeRef,
    StoreDag,
    SyncMessage,
    SyncSession,
    decode_ref,
    encode_ref,
    opnode_checker,
    opnode_links,
)
from crdt_mls.dag import encode_node
from crdt_mls.errors import IntegrityError, SignatureError, WrongGroupError
from crdt_mls.stores import MemoryStore
from crdt_mls.stores.sqlite import SqliteStore
from tests.properties.netsim import NetSim
from tests.properties.signed import GROUP, SignedAuthor
from tests.properties.syncsim import SimReplica, connect, counter_rng, sync_to_quiescence


def write_into(view: StoreDag, author: SignedAuthor, count: int) -> list[NodeRef]:
    out = []
    for _ in range(count):
        ref = author.write(parents=tuple(sorted(view.heads())))
        view.add([(ref.cid, encode_ref(ref), opnode_links(ref.node))])
        out.append(ref)
    return out


def test_receiver_over_signed_nodes() -> None:
    a, b = SignedAuthor(0), SignedAuthor(1)
    a0 = a.write(epoch=b"e1")
    b0 = b.write(parents=(a0.cid,), epoch=b"e1")
    a1 = a.write(parents=(b0.cid,), epoch=b"e2")
    fork = a.fork(1, a0.cid, b"other")
    rx: CausalReceiver[NodeRef] = CausalReceiver()
    assert rx.receive(a1).delivered == ()
    assert rx.missing() == {b0.cid, a0.cid}
    assert rx.receive(b0).delivered == ()
    assert rx.receive(a0).delivered == (a0, b0, a1)
    res = rx.receive(fork)
    assert res.events[0] == Equivocation(a.name, 1, a1.cid, fork.cid, "fork")
    order = {b"e1": 1, b"e2": 2}
    assert rx.logs.oldest_tail_epoch(lambda n: n.epoch, order.__getitem__) == b"e1"
    state = rx.to_bytes(encode_ref)
    again = CausalReceiver.from_bytes(state, decode_ref)
    assert again.to_bytes(encode_ref) == state


def test_sync_memory_store_with_sqlite_store(tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "b.db")
    try:
        ra = SimReplica("a", StoreDag(MemoryStore(), opnode_checker(GROUP)))
        rb = SimReplica("b", StoreDag(sqlite, opnode_checker(GROUP)))
        connect([ra, rb], counter_rng(1))
        assert isinstance(ra.view, StoreDag) and isinstance(rb.view, StoreDag)
        ours = write_into(ra.view, SignedAuthor(0), 12)
        theirs = write_into(rb.view, SignedAuthor(1), 7)
        sync_to_quiescence([ra, rb], NetSim(seed=5, drop=0.2, duplicate=0.2, max_delay=2))
        assert ra.view.heads() == rb.view.heads() == {ours[-1].cid, theirs[-1].cid}
        assert set(ra.view.store.iter_cids()) == set(sqlite.iter_cids())  # type: ignore[attr-defined]
    finally:
        sqlite.close()
    # the index survives a restart of the SQLite replica
    reopened = SqliteStore(tmp_path / "b.db")
    try:
        view = StoreDag(reopened, opnode_checker(GROUP))
        assert view.heads() == {ours[-1].cid, theirs[-1].cid}
        assert view.height(ours[-1].cid) == 11
    finally:
        reopened.close()


def message_with(session_id: bytes, blocks: list[tuple[bytes, bytes]]) -> bytes:
    return SyncMessage(session_id, 0, (), (), (), None, tuple(blocks)).to_bytes()


def test_sync_rejects_tampered_forged_and_foreign_blocks() -> None:
    store = MemoryStore()
    view = StoreDag(store, opnode_checker(GROUP))
    s = SyncSession(view, rng=lambda n: b"s" * n)
    good = SignedAuthor(0).write()
    cid, block = encode_node(good.node)
    tampered = bytearray(block)
    tampered[-70] ^= 1  # inside the payload/fields
    with pytest.raises(IntegrityError):
        s.receive_message(message_with(b"p" * 8, [(cid, bytes(tampered))]))
    forged = good.node.__class__(
        good.node.kind,
        good.node.group,
        good.node.author,
        good.node.seq,
        good.node.prev,
        good.node.parents,
        good.node.epoch,
        b"changed",
        good.node.sig,
    )
    fcid, fblock = encode_node(forged)
    with pytest.raises(SignatureError):
        s.receive_message(message_with(b"p" * 8, [(fcid, fblock)]))
    other = SignedAuthor(1, group=bytes(32)).write()
    with pytest.raises(WrongGroupError):
        s.receive_message(message_with(b"p" * 8, [(other.cid, encode_ref(other))]))
    assert list(store.iter_cids()) == [] and view.heads() == frozenset() and s.peer_heads is None
    s.receive_message(message_with(b"p" * 8, [(cid, block)]))
    assert view.heads() == {cid}
