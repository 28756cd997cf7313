"""Merge bases through the `Replica` facade (docs/merge.md 6.4-6.5): a replica's merge names the
latest cut as its base and every member processes it; a member that pruned the base's tree
gets a clear typed error (not a fork, and not a false "removed")."""

from __future__ import annotations

import random

import pytest

from crdt_mls.merge.mlsmerge import MergeCommit, _open
from crdt_mls.mls import codec
from crdt_mls.replica import OperationUnreadable, Removed, Replica, _parse_merge_payload
from crdt_mls.stores import MemoryStore


def make(name: str, seed: int, *, create: bool = False) -> Replica:
    r = random.Random(seed)
    if create:
        return Replica.create(name, MemoryStore(), rng=r.randbytes)
    return Replica.new_member(name, MemoryStore(), rng=r.randbytes)


def group(seed: int) -> tuple[list[Replica], list[tuple[bytes, bytes]]]:
    alice = make("alice", seed, create=True)
    others = [make(n, seed + i + 1) for i, n in enumerate(("bobby", "carol"))]
    net = alice.take_outgoing()
    alice.add([o.key_package() for o in others])
    net += alice.take_outgoing()
    for o in others:
        o.receive(net)
    return [alice, *others], net


def base_epoch_of(merger: Replica, block: tuple[bytes, bytes]) -> bytes:
    """The base epoch named inside a merge node (read with the merger's own states)."""
    from crdt_mls.dag.node import decode_node

    node = decode_node(block[1], block[0])
    heads, message = _parse_merge_payload(node.payload)
    holder = [(h, merger._states[h]) for h in heads if h in merger._states]
    commit = _open(message, holder)
    assert codec.decode(MergeCommit, codec.encode(commit)) == commit
    return commit.content.base_epoch


@pytest.mark.parametrize("public_trees", [True, False])
def test_replica_merges_name_the_cut_and_a_pruned_base_is_a_typed_error(public_trees: bool) -> None:
    (alice, bobby, carol), _ = group(11)
    bobby.max_epochs = 1  # bobby keeps the current epoch, the heads and one more...
    if not public_trees:
        bobby.max_public_trees = 0  # ...and no public tree of a dropped epoch
    alice.update()
    a2 = alice.take_outgoing()
    for r in (bobby, carol):
        r.receive(a2)
    base = alice.epoch_id  # the last common epoch: the cut of the coming fork
    alice.update()
    alice.update()  # two commits on alice's side: bobby's one extra epoch is not the base
    a34 = alice.take_outgoing()
    carol.update()
    c3 = carol.take_outgoing()
    bobby.receive(c3 + a34)  # c3 first: bobby processes it before pruning its parent epoch
    alice.receive(c3)
    carol.receive(a34)
    assert len(carol.epoch_heads()) == 2 and base not in bobby._states and base in carol._states
    carol.merge()
    m = carol.take_outgoing()
    merge_block = next(b for b in m if b[1] and _is_merge(b))
    assert base_epoch_of(carol, merge_block) == base
    # alice processes it with the base she keeps
    alice.receive(m)
    assert alice.epoch_id == carol.epoch_id
    assert alice.export_secret("x", b"", 32) == carol.export_secret("x", b"", 32)
    before = (bobby.epoch_heads(), bobby.in_group)
    events = bobby.receive(m)
    if public_trees:  # the base's secrets are dropped, its public tree is kept: enough
        assert bobby.epoch_id == carol.epoch_id
        assert bobby.export_secret("x", b"", 32) == carol.export_secret("x", b"", 32)
        return
    # bobby dropped the base entirely: he cannot recompute the merged tree; nothing changes,
    # and he is not removed
    assert any(isinstance(e, OperationUnreadable) and "MissingBaseError" in e.reason for e in events), events
    assert not any(isinstance(e, Removed) for e in events)
    assert (bobby.epoch_heads(), bobby.in_group) == before


def _is_merge(block: tuple[bytes, bytes]) -> bool:
    from crdt_mls.dag.node import NodeKind, decode_node

    node = decode_node(block[1], block[0])
    return node.kind == NodeKind.COMMIT and node.payload[:1] == b"\x02"
