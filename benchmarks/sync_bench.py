"""sync_10k: 10,000 signed operation nodes from one SQLite replica to an empty one.

Replica A (SQLite) holds 10,000 signed DAG-CBOR operation nodes written by 8 authors
(each node links its author's previous node and the heads A saw); replica B is a fresh
SQLite database.  Timed: two `crdt_mls.causal.SyncSession` s exchanging messages in
memory (no loss) until both are in sync -- including B's verification of every block
(CID, canonical DAG-CBOR, schema, group tag, Ed25519 signature) and its SQLite writes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import nacl.signing

from benchmarks.harness import OURS, Progress, Record, Timer, record
from crdt_mls.causal import NodeRef, StoreDag, SyncSession, encode_ref, opnode_checker, opnode_links
from crdt_mls.dag import NodeFields, NodeKind, sign_node
from crdt_mls.stores.sqlite import SqliteStore

GROUP = bytes(range(32))


def _fill(view: StoreDag, count: int, authors: int, progress: Progress) -> None:
    keys = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(authors)]
    last: list[bytes | None] = [None] * authors
    seq = [0] * authors
    batch: list[tuple[bytes, bytes, tuple[bytes, ...]]] = []
    for i in range(count):
        a = i % authors
        parents = tuple(sorted(view.heads() | {e[0] for e in batch} - {p for e in batch for p in e[2]}))[:4]
        fields = NodeFields(NodeKind.APPLICATION, GROUP, seq[a], last[a], parents, b"", os.urandom(100))
        ref = NodeRef.from_node(sign_node(fields, keys[a]))
        seq[a] += 1
        last[a] = ref.cid
        batch.append((ref.cid, encode_ref(ref), opnode_links(ref.node)))
        if len(batch) == 64:
            view.add(batch)
            batch = []
        progress.update(i + 1, "signing nodes")
    if batch:
        view.add(batch)


def _sync(a: StoreDag, b: StoreDag) -> int:
    sa, sb = SyncSession(a), SyncSession(b)
    rounds = 0
    while True:
        rounds += 1
        ma, mb = sa.generate_message(), sb.generate_message()
        if ma is None and mb is None:
            if sa.in_sync() and sb.in_sync():
                return rounds
            sa.on_timeout()
            sb.on_timeout()
            if rounds > 10_000:
                raise AssertionError("sync did not converge")
            continue
        if ma is not None:
            sb.receive_message(ma)
        if mb is not None:
            sa.receive_message(mb)


def run_sync(
    emit: Callable[[Record], None], *, count: int = 10_000, reps: int = 3, force_progress: bool = False
) -> None:
    with tempfile.TemporaryDirectory() as d:
        src_store = SqliteStore(os.path.join(d, "a.db"), synchronous="NORMAL")
        src = StoreDag(src_store, opnode_checker(GROUP))
        p = Progress(f"{OURS} sync_{count}", count, force=force_progress)
        _fill(src, count, 8, p)
        p.done()
        timer = Timer()
        for r in range(reps):
            dst_store = SqliteStore(os.path.join(d, f"b{r}.db"), synchronous="NORMAL")
            dst = StoreDag(dst_store, opnode_checker(GROUP))
            with timer:
                _sync(src, dst)
            if dst.heads() != src.heads() or sum(1 for _ in dst_store.iter_cids()) < count:
                raise AssertionError("sync_10k: replicas did not converge")
            dst_store.close()
        src_store.close()
    emit(record(f"sync_{count // 1000}k" if count % 1000 == 0 else f"sync_{count}", count, OURS, timer))
