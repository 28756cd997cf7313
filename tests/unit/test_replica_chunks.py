"""Large operations as chunk blocks (docs/api.md "What goes into blocks", docs/schema.md v2):
commits whose Welcome, ratchet tree or commit exceed a node travel as encrypted chunks; a
replica waits for exactly the chunks it needs; forged or missing chunks leave it unchanged."""

from __future__ import annotations

import random

import pytest

from crdt_mls.dag.audit import assert_no_plaintext
from crdt_mls.dag.chunks import seal_chunks
from crdt_mls.dag.cid import cid_for_raw
from crdt_mls.dag.node import DEFAULT_MAX_NODE_SIZE, RAW_SHA256_PREFIX, NodeKind, decode_node
from crdt_mls.errors import IntegrityError, OversizeError
from crdt_mls.mls.welcome import make_key_package
from crdt_mls.replica import (
    Joined,
    MergeMade,
    MessageReceived,
    OperationUnreadable,
    OperationWaiting,
    Replica,
    _Parts,
)
from crdt_mls.stores import MemoryStore, SqliteStore

Blocks = list[tuple[bytes, bytes]]


def make(name: str, seed: int, *, create: bool = False, store: object = None) -> Replica:
    r = random.Random(seed)
    st = store if store is not None else MemoryStore()
    if create:
        return Replica.create(name, st, rng=r.randbytes)  # type: ignore[arg-type]
    return Replica.new_member(name, st, rng=r.randbytes)  # type: ignore[arg-type]


def small_chunks(*replicas: Replica) -> None:
    """Force chunking at test sizes: a few hundred bytes inline, 1 KiB chunks."""
    for r in replicas:
        r.inline_limit = 600
        r.chunk_size = 1024


def is_chunk(cid: bytes) -> bool:
    return cid[:4] == RAW_SHA256_PREFIX


def split(blocks: Blocks) -> tuple[Blocks, Blocks]:
    return [b for b in blocks if not is_chunk(b[0])], [b for b in blocks if is_chunk(b[0])]


def parts_of(block: bytes) -> tuple[_Parts, tuple[bytes, ...]]:
    node = decode_node(block)
    return _Parts.decode(node.payload, len(node.chunks)), node.chunks


def messages(events: list[object]) -> list[tuple[str, bytes]]:
    return [(e.sender, e.data) for e in events if isinstance(e, MessageReceived)]


def test_a_commit_adding_2000_members_exceeds_a_block_and_travels_in_chunks() -> None:
    """Before chunking, a Replica could not add 2,000 members in one commit (a 1.26 MB node:
    `InvalidArgument`, over the 1 MiB block limit).  Now the commit, the Welcome and the sealed
    tree go to chunk blocks and a joiner joins from them."""
    alice = make("alice", 1, create=True)
    bob = make("bob", 2)
    rng = random.Random(3)
    kps = [make_key_package(1, f"m{i}".encode(), rng=rng.randbytes).public_message() for i in range(1999)]
    alice.add([bob.key_package(), *kps])
    out = alice.take_outgoing()
    nodes, chunks = split(out)
    assert sum(len(b) for _, b in out) > DEFAULT_MAX_NODE_SIZE
    assert all(len(b) <= DEFAULT_MAX_NODE_SIZE for _, b in out)
    assert chunks and {len(b) for _, b in chunks} == {alice.chunk_size}
    parts, _ = parts_of(nodes[-1][1])
    # the largest part (the commit with 2,000 KeyPackages) went to chunks, the rest fits inline
    assert parts.commit.count and not parts.tree.empty and not parts.welcome.empty
    events = bob.receive(random.Random(4).sample(out, len(out)))
    joined = [e for e in events if isinstance(e, Joined)]
    assert len(joined) == 1 and len(joined[0].members) == 2001
    assert bob.group.tree.tree_hash() == alice.group.tree.tree_hash()
    assert bob.export_secret("x") == alice.export_secret("x")
    assert len(bob.members()) == 2001


def test_each_replica_waits_for_the_chunks_it_needs() -> None:
    """A member of the commit's epoch needs only the commit's chunks; a joiner needs the Welcome's,
    then (once it knows the Welcome is for it) the tree's; an outsider needs none.  Messages of
    the new epoch wait behind the commit."""
    alice = make("alice", 10, create=True)
    carol, bob, dave = make("carol", 11), make("bob", 12), make("dave", 13)
    genesis = alice.take_outgoing()
    alice.add([carol.key_package()])
    first = alice.take_outgoing()
    carol.receive(genesis + first)
    carol.take_outgoing()
    small_chunks(alice)
    dave.key_package()  # dave waits for a Welcome that is not his
    filler = [make_key_package(1, f"f{i}".encode(), rng=random.Random(i).randbytes).public_message() for i in range(6)]
    alice.add([bob.key_package(), *filler])
    add = alice.take_outgoing()
    alice.send("welcome bob")
    msg = alice.take_outgoing()
    nodes, chunks = split(add)
    parts, cids = parts_of(nodes[-1][1])
    commit_c = set(parts.commit.chunks(cids))
    welcome_c = set(parts.welcome.chunks(cids))
    tree_c = set(parts.tree.chunks(cids))
    assert commit_c and welcome_c and tree_c
    by_cid = dict(chunks)

    # carol (member of the parent epoch): commit chunks only; the message waits behind it
    events = carol.receive(nodes + msg)
    assert carol.missing() == commit_c
    assert any(isinstance(e, OperationWaiting) for e in events) and not messages(events)
    events = carol.receive([(c, by_cid[c]) for c in commit_c])
    assert messages(events) == [("alice", b"welcome bob")] and len(carol.members()) == 9

    # bob (joiner): the Welcome's chunks, then the tree's
    prior = genesis + first
    bob.receive(prior + nodes + msg)
    assert bob.missing() == welcome_c
    bob.receive([(c, by_cid[c]) for c in welcome_c])
    assert bob.missing() == tree_c
    events = bob.receive([(c, by_cid[c]) for c in tree_c])
    assert [type(e) for e in events if isinstance(e, Joined)] == [Joined]
    assert messages(events) == [("alice", b"welcome bob")]

    # dave: the Welcome is not for him: he needs nothing more after reading it
    dave.receive(prior + nodes + msg)
    assert dave.missing() == welcome_c
    dave.receive([(c, by_cid[c]) for c in welcome_c])
    assert dave.missing() == set() and not dave.in_group

    # chunks nobody refers to are not stored
    stray = b"\x00" * 100
    carol.receive([(cid_for_raw(stray), stray)])
    assert not carol.store.has_block(cid_for_raw(stray))


def test_chunks_stored_beforehand_release_a_waiting_operation() -> None:
    """Chunks fetched by the application (e.g. bitswap) straight into the store count too."""
    alice, bob = make("alice", 20, create=True), make("bob", 21)
    small_chunks(alice)
    alice.add([bob.key_package()])
    nodes, chunks = split(alice.take_outgoing())
    bob.receive(nodes)
    assert bob.missing() and not bob.in_group
    bob.store.put_blocks(chunks)
    assert any(isinstance(e, Joined) for e in bob.receive([]))


def test_forged_or_oversize_chunks_are_refused_and_change_nothing() -> None:
    alice, bob = make("alice", 30, create=True), make("bob", 31)
    small_chunks(alice)
    alice.add([bob.key_package()])
    nodes, chunks = split(alice.take_outgoing())
    bob.receive(nodes)
    before = bob.store.get_meta("replica/state")
    cid, block = chunks[0]
    with pytest.raises(IntegrityError):
        bob.receive([(cid, block[:-1] + bytes([block[-1] ^ 1]))])
    with pytest.raises(OversizeError):
        big = b"\x00" * (DEFAULT_MAX_NODE_SIZE + 1)
        bob.receive([(cid_for_raw(big), big)])
    assert bob.store.get_meta("replica/state") == before and not bob.in_group
    assert bob.missing() == {c for c, _ in chunks if c in bob.missing()}


def test_a_commit_whose_chunks_do_not_open_is_unreadable() -> None:
    """A committer that names chunks sealed under the wrong key: the chunks match their CIDs but
    do not decrypt; members report the commit unreadable and stay in their epoch."""
    alice, bob = make("alice", 40, create=True), make("bob", 41)
    alice.add([bob.key_package()])
    net = alice.take_outgoing()
    bob.receive(net)
    small_chunks(alice)
    real = alice._commit_payload  # seal the commit part under a key nobody has

    def forged(before, after, msg, welcome, sealed):  # type: ignore[no-untyped-def]
        payload, blocks = real(before, after, msg, welcome, sealed)
        parts = _Parts.decode(payload, len(blocks))
        if parts.commit.count:
            bad = seal_chunks(bytes(32), msg, b"commit", chunk_size=alice.chunk_size)
            blocks = bad + blocks[parts.commit.count :]
        return payload, blocks

    alice._commit_payload = forged  # type: ignore[method-assign]
    alice.inline_limit = 0  # even an update commit goes to chunks
    alice.update()
    events = bob.receive(alice.take_outgoing())
    unreadable = [e for e in events if isinstance(e, OperationUnreadable)]
    assert len(unreadable) == 1 and "DecryptionError" in unreadable[0].reason
    assert bob.epoch == 1 and bob.missing() == set()


def test_large_merge_message_travels_in_chunks() -> None:
    alice, bob, carol = make("alice", 50, create=True), make("bob", 51), make("carol", 52)
    alice.add([bob.key_package(), carol.key_package()])
    net = alice.take_outgoing()
    bob.receive(net)
    carol.receive(net)
    bob.update()
    carol.update()
    fork = bob.take_outgoing() + carol.take_outgoing()
    for r in (alice, bob, carol):
        r.receive(fork)
    small_chunks(alice)
    alice.inline_limit = 100
    events = alice.merge()
    assert any(isinstance(e, MergeMade) for e in events)
    out = alice.take_outgoing()
    nodes, chunks = split(out)
    assert chunks and decode_node(nodes[-1][1]).kind == NodeKind.COMMIT
    for r in (bob, carol):
        r.receive(nodes)
        assert r.missing() == {c for c, _ in chunks}
        assert any(isinstance(e, MergeMade) for e in r.receive(chunks))
        assert r.epoch_id == alice.epoch_id and r.export_secret("m") == alice.export_secret("m")


def test_chunked_join_persists_and_reloads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    alice = make("alice-creator", 60, create=True, store=SqliteStore(tmp_path / "a.sqlite"))
    bob = make("bobby-joiner", 61, store=SqliteStore(tmp_path / "b.sqlite"))
    small_chunks(alice)
    alice.add([bob.key_package()])
    out = alice.take_outgoing()
    assert split(out)[1]
    bob.receive(out)
    bob.send("hello chunked world")
    alice.receive(bob.take_outgoing())
    for r, f in ((alice, "a"), (bob, "b")):
        again = Replica.load(SqliteStore(tmp_path / f"{f}.sqlite"))
        assert again.epoch_id == r.epoch_id and again.export_secret("p") == r.export_secret("p")
        assert again.group.tree.tree_hash() == r.group.tree.tree_hash()
    # nothing readable in any block, chunks included
    assert_no_plaintext(alice.store, ["alice-creator", "bobby-joiner", "hello chunked world"])
