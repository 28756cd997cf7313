"""Two replicas on two Kubo daemons: heads announced by pubsub, blocks fetched over bitswap.

Replica A writes a DAG of signed operation nodes (two authors, :mod:`crdt_mls.dag.node`)
to node 1 through :class:`IpfsStore` + :class:`crdt_mls.causal.dagview.StoreDag` and
announces its heads on a pubsub topic.  Replica B on node 2 receives the announcement,
fetches every missing block by CID from node 2 (which gets it from node 1 by bitswap),
verifies it (CID, schema, signature), walks ``prev``/parents back to the roots, and adds
everything to its own store.  Both end with the same heads and the same block set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dag_cbor
import nacl.signing
import pytest

from crdt_mls.causal.dagview import StoreDag
from crdt_mls.dag.node import NodeFields, NodeKind, decode_node, encode_node, sign_node
from crdt_mls.errors import DecodeError, IntegrityError, TransportError
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.stores.ipfs import IpfsStore
from crdt_mls.stores.kubo_rpc import Subscription

from .conftest import KuboNode

pytestmark = pytest.mark.ipfs

GROUP = bytes(range(32))


def links_of(cid: bytes, block: bytes) -> tuple[bytes, ...]:
    """BlockChecker for StoreDag: verify CID, schema and signature; links = prev + parents."""
    node = decode_node(block, cid, group=GROUP)
    links = set(node.parents)
    if node.prev is not None:
        links.add(node.prev)
    return tuple(sorted(links))


def encode_heads(heads: frozenset[bytes]) -> bytes:
    """Heads announcement: ``opaque cids<V><V>`` (TLS codec), sorted."""
    w = Writer()
    w.vector(sorted(heads), Writer.opaque)
    return w.getvalue()


def decode_heads(data: bytes) -> list[bytes]:
    r = Reader(data)
    heads = list(r.vector(lambda x: x.opaque(128)))
    r.finish()
    return heads


def write_log(dag: StoreDag, n_per_author: int) -> None:
    """Two authors append interleaved nodes, each citing the current heads as parents."""
    keys = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(2)]
    last: list[bytes | None] = [None, None]
    for step in range(2 * n_per_author):
        who = step % 2
        seq = step // 2
        kind = NodeKind.GENESIS if step == 0 else NodeKind.APPLICATION
        parents = tuple(h for h in dag.heads() if h != last[who])
        fields = NodeFields(kind, GROUP, seq, last[who], parents, b"", f"payload {step}".encode())
        cid, block = encode_node(sign_node(fields, keys[who]))
        dag.add([(cid, block, dag.check(cid, block))])
        last[who] = cid


def fetch_closure(store: IpfsStore, dag: StoreDag, heads: list[bytes], timeout: float) -> int:
    """Fetch every block reachable from ``heads`` that ``dag`` lacks; add them parents first."""
    fetched: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
    stack = [h for h in heads if not dag.has(h)]
    while stack:
        cid = stack.pop()
        if cid in fetched:
            continue
        block = store.fetch_block(cid, timeout=timeout)  # bitswap through node 2
        links = dag.check(cid, block)
        fetched[cid] = (block, links)
        stack.extend(link for link in links if link not in fetched and not dag.has(link))
    # topological order (parents first), iterative DFS post-order
    order: list[tuple[bytes, bytes, tuple[bytes, ...]]] = []
    done: set[bytes] = set()
    for root in fetched:
        work: list[tuple[bytes, bool]] = [(root, False)]
        while work:
            cid, expanded = work.pop()
            if cid in done:
                continue
            block, links = fetched[cid]
            if expanded:
                done.add(cid)
                order.append((cid, block, links))
                continue
            work.append((cid, True))
            work.extend((link, False) for link in links if link in fetched and link not in done)
    dag.add(order)
    return len(order)


def wait_for_announcement(sender: IpfsStore, sub: Subscription, topic: str, payload: bytes) -> bytes:
    """Publish until the subscriber's mesh has formed and the message arrives (max ~20 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sender.announce(topic, payload)
        msg = sub.get(0.5)
        if msg is not None:
            return msg.data
    raise AssertionError("pubsub announcement never arrived")


def test_replica_b_converges_over_bitswap(kubo_pair: tuple[KuboNode, KuboNode], tmp_path: Path) -> None:
    node1, node2 = kubo_pair
    topic = f"crdt-mls/heads/{os.getpid()}"
    with (
        IpfsStore.open(node1.api, tmp_path / "a.sqlite") as store_a,
        IpfsStore.open(node2.api, tmp_path / "b.sqlite") as store_b,
    ):
        dag_a = StoreDag(store_a, links_of)
        dag_b = StoreDag(store_b, links_of)
        write_log(dag_a, n_per_author=15)
        assert len(list(store_a.iter_cids())) == 30
        assert len(dag_a.heads()) >= 1

        with store_b.subscribe(topic) as sub:
            data = wait_for_announcement(store_a, sub, topic, encode_heads(dag_a.heads()))
        heads = decode_heads(data)
        assert not any(store_b.node_has_block(h) for h in heads)  # node 2 has nothing yet

        added = fetch_closure(store_b, dag_b, heads, timeout=15)
        assert added == 30
        assert dag_b.heads() == dag_a.heads()
        assert set(store_b.iter_cids()) == set(store_a.iter_cids())
        for cid in store_a.iter_cids():
            assert store_b.get_block(cid) == store_a.get_block(cid)
            assert store_b.node_has_block(cid)

        # A appends more; B fetches only the difference
        write_log_more(dag_a, start=30, count=6)
        with store_b.subscribe(topic) as sub:
            data = wait_for_announcement(store_a, sub, topic, encode_heads(dag_a.heads()))
        assert fetch_closure(store_b, dag_b, decode_heads(data), timeout=15) == 6
        assert dag_b.heads() == dag_a.heads()
        assert set(store_b.iter_cids()) == set(store_a.iter_cids())

    # B's state survives a reopen
    with IpfsStore.open(node2.api, tmp_path / "b.sqlite") as store_b2:
        assert StoreDag(store_b2, links_of).heads() == dag_a.heads()


def write_log_more(dag: StoreDag, start: int, count: int) -> None:
    """A third author appends ``count`` nodes on top of the current heads."""
    key = nacl.signing.SigningKey(b"\x07" * 32)
    prev: bytes | None = None
    for seq in range(count):
        parents = tuple(h for h in dag.heads() if h != prev)
        fields = NodeFields(NodeKind.APPLICATION, GROUP, seq, prev, parents, b"", f"more {start + seq}".encode())
        cid, block = encode_node(sign_node(fields, key))
        dag.add([(cid, block, dag.check(cid, block))])
        prev = cid


def test_unknown_head_times_out_and_bad_block_is_rejected(kubo_pair: tuple[KuboNode, KuboNode], tmp_path: Path) -> None:
    node1, node2 = kubo_pair
    with (
        IpfsStore.open(node1.api, tmp_path / "a2.sqlite") as store_a,
        IpfsStore.open(node2.api, tmp_path / "b2.sqlite") as store_b,
    ):
        dag_b = StoreDag(store_b, links_of)
        # a head nobody has: a bounded wait, then TransportError; B's state is unchanged
        fields = NodeFields(NodeKind.GENESIS, GROUP, 0, None, (), b"", b"never published")
        ghost, _ = encode_node(sign_node(fields, b"\x09" * 32))
        with pytest.raises(TransportError):
            fetch_closure(store_b, dag_b, [ghost], timeout=2)
        assert dag_b.heads() == frozenset()
        assert list(store_b.iter_cids()) == []

        # a well-formed dag-cbor block that is not a signed node: fetched fine, rejected by the checker
        junk = dag_cbor.encode({"not": "a node", "pid": os.getpid()})
        from crdt_mls.dag.cid import cid_for_block

        junk_cid = cid_for_block(junk)
        store_a.put_blocks([(junk_cid, junk)])
        assert store_b.fetch_block(junk_cid, timeout=10) == junk
        with pytest.raises((DecodeError, IntegrityError)):
            fetch_closure(store_b, dag_b, [junk_cid], timeout=10)
        assert list(store_b.iter_cids()) == []
