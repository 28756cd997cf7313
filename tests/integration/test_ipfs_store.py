"""IpfsStore and KuboRpc against one real Kubo daemon."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dag_cbor
import pytest

from crdt_mls.dag.cid import cid_for_block, cid_for_raw, cid_to_str
from crdt_mls.errors import IntegrityError, InvalidState, StorageError, TransportError
from crdt_mls.stores import Store
from crdt_mls.stores.ipfs import IpfsStore
from crdt_mls.stores.kubo_rpc import KuboRpc

from .conftest import KuboNode

pytestmark = pytest.mark.ipfs


def block(i: int, tag: str = "t") -> tuple[bytes, bytes]:
    data = dag_cbor.encode({"tag": tag, "i": i, "pid": os.getpid()})
    return cid_for_block(data), data


@pytest.fixture
def store(kubo_node: KuboNode, tmp_path: Path) -> Iterator[IpfsStore]:
    s = IpfsStore.open(kubo_node.api, tmp_path / "meta.sqlite", timeout=20)
    yield s
    s.close()


def test_is_a_store(store: IpfsStore) -> None:
    assert isinstance(store, Store)


def test_put_get_has_roundtrip(store: IpfsStore) -> None:
    blocks = [block(i, "rt") for i in range(20)]
    assert not store.has_block(blocks[0][0])
    assert store.get_block(blocks[0][0]) is None
    store.put_blocks(blocks)
    for cid, data in blocks:
        assert store.has_block(cid)
        assert store.get_block(cid) == data
        assert store.node_has_block(cid)
        # straight from the node, not the local copy
        assert store.fetch_block(cid, timeout=5) == data
    assert set(store.iter_cids()) == {cid for cid, _ in blocks}
    store.put_blocks(blocks)  # idempotent
    assert sorted(store.iter_cids()) == sorted(cid for cid, _ in blocks)


def test_raw_codec_block(store: IpfsStore) -> None:
    data = b"\x00opaque bytes\xff"
    cid = cid_for_raw(data)
    store.put_blocks([(cid, data)])
    assert store.fetch_block(cid, timeout=5) == data


def test_blocks_are_pinned_and_unpinned(store: IpfsStore, kubo_node: KuboNode) -> None:
    blocks = [block(i, "pin") for i in range(5)]
    store.put_blocks(blocks)
    with kubo_node.rpc() as rpc:
        pinned = rpc.pin_ls(pin_type="direct")
    assert {cid_to_str(c) for c, _ in blocks} <= pinned
    store.unpin([blocks[0][0]])
    store.unpin([blocks[0][0]])  # unpinning twice is fine
    with kubo_node.rpc() as rpc:
        pinned = rpc.pin_ls(pin_type="direct")
    assert cid_to_str(blocks[0][0]) not in pinned
    assert cid_to_str(blocks[1][0]) in pinned
    assert store.get_block(blocks[0][0]) == blocks[0][1]  # local copy kept


def test_write_batch_meta(store: IpfsStore) -> None:
    blocks = [block(i, "wb") for i in range(3)]
    store.write_batch(blocks, {"heads": b"h1", "gone": b"x"})
    assert store.get_meta("heads") == b"h1"
    store.write_batch([], {"heads": b"h2", "gone": None})
    assert store.get_meta("heads") == b"h2"
    assert store.get_meta("gone") is None
    assert all(store.has_block(c) for c, _ in blocks)


def test_reopen_keeps_meta_and_index(kubo_node: KuboNode, tmp_path: Path) -> None:
    cid, data = block(1, "reopen")
    with IpfsStore.open(kubo_node.api, tmp_path / "m.sqlite") as s:
        s.write_batch([(cid, data)], {"k": b"v"})
    with IpfsStore.open(kubo_node.api, tmp_path / "m.sqlite") as s:
        assert s.get_meta("k") == b"v"
        assert s.get_block(cid) == data
        assert list(s.iter_cids()) == [cid]


def test_cid_mismatch_rejected_and_nothing_committed(store: IpfsStore) -> None:
    good = block(1, "mm")
    cid_a, _ = block(2, "mm")
    _, data_b = block(3, "mm")
    with pytest.raises(IntegrityError, match="expected"):
        store.write_batch([good, (cid_a, data_b)], {"heads": b"bad"})
    assert store.get_meta("heads") is None
    assert not store.has_block(good[0])
    assert not store.has_block(cid_a)
    assert list(store.iter_cids()) == []


def test_fetch_verifies_the_cid(store: IpfsStore) -> None:
    """A block fetched from the network must hash to the CID asked for."""
    cid, data = block(5, "fv")
    store.put_blocks([(cid, data)])
    assert store.fetch_block(cid, timeout=5) == data


def test_missing_block_times_out(store: IpfsStore) -> None:
    cid, _ = block(99, "never-stored")
    assert not store.has_block(cid)
    assert not store.node_has_block(cid)
    assert store.get_block(cid) is None  # local read: immediate
    with pytest.raises(TransportError, match="not retrieved within"):
        store.fetch_block(cid, timeout=1)


def test_get_block_read_through(kubo_node: KuboNode, tmp_path: Path) -> None:
    cid, data = block(7, "rt2")
    with IpfsStore.open(kubo_node.api, tmp_path / "a.sqlite") as a:
        a.put_blocks([(cid, data)])
    with IpfsStore.open(kubo_node.api, tmp_path / "b.sqlite", fetch_timeout=2) as b:
        assert not b.has_block(cid)
        assert b.get_block(cid) == data  # via the node
        missing, _ = block(8, "never")
        with pytest.raises(TransportError):
            b.get_block(missing)


def test_pubsub_roundtrip(store: IpfsStore) -> None:
    topic = f"crdt-mls/test/{os.getpid()}/one node"
    with store.subscribe(topic) as sub:
        payload = b"\x00heads\n\xff" * 3
        got = None
        for _ in range(20):  # the subscription becomes active asynchronously
            store.announce(topic, payload)
            got = sub.get(0.5)
            if got is not None:
                break
        assert got is not None
        assert got.data == payload
        assert got.topics == (topic,)


def test_closed_store(kubo_node: KuboNode, tmp_path: Path) -> None:
    s = IpfsStore.open(kubo_node.api, tmp_path / "c.sqlite")
    s.close()
    s.close()
    with pytest.raises(InvalidState):
        s.get_block(block(1)[0])
    with pytest.raises(InvalidState):
        s.put_blocks([block(1)])


def test_unreachable_daemon_is_a_transport_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError, match="cannot reach"):
        IpfsStore.open(("127.0.0.1", port), tmp_path / "u.sqlite", timeout=2)
    rpc = KuboRpc("127.0.0.1", port, timeout=2)
    with pytest.raises(TransportError):
        rpc.block_get(cid_to_str(block(1)[0]), timeout=1)
    rpc.close()


def test_daemon_gone_after_open(ipfs_bin: str, tmp_path: Path) -> None:
    node = KuboNode(ipfs_bin, "shortlived")
    node.start()
    s = IpfsStore.open(node.api, tmp_path / "g.sqlite", timeout=5)
    try:
        node.stop()
        with pytest.raises(StorageError):
            s.put_blocks([block(1, "gone")])
        assert not s.has_block(block(1, "gone")[0])
        with pytest.raises(TransportError):
            s.fetch_block(block(1, "gone")[0], timeout=1)
    finally:
        s.close()
        node.stop()
