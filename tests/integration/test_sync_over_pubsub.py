"""Engineer G's sans-I/O block sync (:mod:`crdt_mls.causal.sync`) carried by real IPFS pubsub.

Two replicas on two connected Kubo daemons each write their own signed operation nodes
(concurrently, so both DAGs have blocks the other lacks) into an :class:`IpfsStore` through
:class:`StoreDag`, then run one :class:`SyncSession` each, exchanging the session messages
over two pubsub topics (one per direction).  Pubsub loses messages while the gossipsub mesh
forms; the sessions' retransmission (``on_timeout``) covers that.  Both must end with the
same heads and blocks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nacl.signing
import pytest

from crdt_mls.causal.dagview import StoreDag
from crdt_mls.causal.sync import SyncSession
from crdt_mls.dag.node import NodeFields, NodeKind, encode_node, sign_node
from crdt_mls.stores.ipfs import IpfsStore
from crdt_mls.stores.kubo_rpc import Subscription

from .conftest import KuboNode
from .test_two_nodes import GROUP, links_of

pytestmark = pytest.mark.ipfs


def append(dag: StoreDag, key: nacl.signing.SigningKey, count: int, tag: str) -> None:
    prev: bytes | None = None
    for seq in range(count):
        parents = tuple(h for h in dag.heads() if h != prev)
        kind = NodeKind.GENESIS if seq == 0 else NodeKind.APPLICATION
        fields = NodeFields(kind, GROUP, seq, prev, parents, b"", f"{tag} {seq}".encode())
        cid, block = encode_node(sign_node(fields, key))
        dag.add([(cid, block, dag.check(cid, block))])
        prev = cid


def test_sync_sessions_over_pubsub(kubo_pair: tuple[KuboNode, KuboNode], tmp_path: Path) -> None:
    node1, node2 = kubo_pair
    a2b = f"crdt-mls/sync/{os.getpid()}/a2b"
    b2a = f"crdt-mls/sync/{os.getpid()}/b2a"
    with (
        IpfsStore.open(node1.api, tmp_path / "a.sqlite") as store_a,
        IpfsStore.open(node2.api, tmp_path / "b.sqlite") as store_b,
    ):
        dag_a = StoreDag(store_a, links_of)
        dag_b = StoreDag(store_b, links_of)
        append(dag_a, nacl.signing.SigningKey(b"\x11" * 32), 25, "a")
        append(dag_b, nacl.signing.SigningKey(b"\x22" * 32), 20, "b")
        assert dag_a.heads() != dag_b.heads()

        seeds = iter(range(1000))
        sess_a = SyncSession(dag_a, rng=lambda n: bytes([next(seeds) % 256]) * n, max_message_bytes=64 << 10)
        sess_b = SyncSession(dag_b, rng=lambda n: bytes([next(seeds) % 256]) * n, max_message_bytes=64 << 10)
        sub_a: Subscription = store_a.subscribe(b2a)  # A reads what B sends
        sub_b: Subscription = store_b.subscribe(a2b)
        try:
            sides = [(sess_a, store_a, sub_a, a2b), (sess_b, store_b, sub_b, b2a)]
            last_rx = [time.monotonic(), time.monotonic()]
            deadline = time.monotonic() + 60
            quiet_rounds = 0
            while time.monotonic() < deadline:
                sent = 0
                for sess, store, _, out_topic in sides:
                    msg = sess.generate_message()
                    if msg is not None:
                        store.announce(out_topic, msg)
                        sent += 1
                received = 0
                for i, (sess, _, sub, _) in enumerate(sides):
                    got = sub.get(0.2)
                    while got is not None:
                        sess.receive_message(got.data)
                        received += 1
                        last_rx[i] = time.monotonic()
                        got = sub.get(0.05)
                    # lost messages (mesh not formed yet): restate after a quiet second
                    if not sess.in_sync() and time.monotonic() - last_rx[i] > 1.0:
                        sess.on_timeout()
                        last_rx[i] = time.monotonic()
                if sent == 0 and received == 0 and sess_a.in_sync() and sess_b.in_sync():
                    quiet_rounds += 1
                    if quiet_rounds >= 2:
                        break
                else:
                    quiet_rounds = 0
            else:
                pytest.fail(f"sync did not converge: A {len(dag_a.heads())} heads, B {len(dag_b.heads())} heads")
        finally:
            sub_a.close()
            sub_b.close()

        assert dag_a.heads() == dag_b.heads()
        assert len(dag_a.heads()) == 2
        assert set(store_a.iter_cids()) == set(store_b.iter_cids())
        assert len(set(store_a.iter_cids())) == 45
        # every block is now also on both IPFS nodes (written through IpfsStore), pinned
        for cid in store_a.iter_cids():
            assert store_a.node_has_block(cid) and store_b.node_has_block(cid)
