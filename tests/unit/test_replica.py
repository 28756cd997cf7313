"""The public facade `crdt_mls.Replica` (design doc section 1): groups, joins, messages,
removal, causal order, persistence, bad input, forks, no plaintext in blocks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crdt_mls
from crdt_mls.dag.audit import assert_no_plaintext
from crdt_mls.errors import InvalidArgument, InvalidState, RemoteInputError, StorageError
from crdt_mls.replica import (
    EpochChanged,
    Joined,
    MemberAdded,
    MemberRemoved,
    MergeNeeded,
    MessageReceived,
    OperationUnreadable,
    OperationWaiting,
    Removed,
    Replica,
)
from crdt_mls.stores import MemoryStore, SqliteStore

Blocks = list[tuple[bytes, bytes]]


def rng_for(seed: int) -> random.Random:
    return random.Random(seed)


def make(name: str, seed: int, *, create: bool = False, store: object = None) -> Replica:
    r = rng_for(seed)
    st = store if store is not None else MemoryStore()
    if create:
        return Replica.create(name, st, rng=r.randbytes)  # type: ignore[arg-type]
    return Replica.new_member(name, st, rng=r.randbytes)  # type: ignore[arg-type]


def messages(events: list[crdt_mls.Event]) -> list[tuple[str, bytes]]:
    return [(e.sender, e.data) for e in events if isinstance(e, MessageReceived)]


@pytest.fixture
def trio() -> tuple[Replica, Replica, Replica, Blocks]:
    alice = make("alice", 1, create=True)
    bob, carol = make("bob", 2), make("carol", 3)
    net: Blocks = alice.take_outgoing()
    events = alice.add([bob.key_package(), carol.key_package()])
    assert [e.name for e in events if isinstance(e, MemberAdded)] == ["bob", "carol"]
    net += alice.take_outgoing()
    for r in (bob, carol):
        evs = r.receive(net)
        joined = [e for e in evs if isinstance(e, Joined)]
        assert len(joined) == 1 and joined[0].members == ("alice", "bob", "carol")
    return alice, bob, carol, net


def test_public_exports() -> None:
    assert crdt_mls.Replica is Replica
    assert crdt_mls.MessageReceived is MessageReceived


def test_create_join_chat(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, carol, _ = trio
    assert alice.epoch == bob.epoch == carol.epoch == 1
    assert alice.epoch_id == bob.epoch_id == carol.epoch_id
    assert alice.members() == bob.members() == [(0, "alice"), (1, "bob"), (2, "carol")]
    assert alice.export_secret("app", b"ctx", 32) == carol.export_secret("app", b"ctx", 32)
    bob.send("hello from bob")
    out = bob.take_outgoing()
    assert messages(alice.receive(out)) == [("bob", b"hello from bob")]
    assert messages(carol.receive(out)) == [("bob", b"hello from bob")]
    # a duplicate is ignored
    assert alice.receive(out) == []


def test_removed_member_reads_nothing_after(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, carol, _ = trio
    events = alice.remove(["bob"])
    assert [e.name for e in events if isinstance(e, MemberRemoved)] == ["bob"]
    alice.send("after the removal")
    out = alice.take_outgoing()
    bob_events = bob.receive(out)
    assert any(isinstance(e, Removed) for e in bob_events)
    assert messages(bob_events) == []
    assert any(isinstance(e, OperationUnreadable) for e in bob_events)
    assert not bob.in_group
    with pytest.raises(InvalidState):
        bob.send("still here?")
    carol_events = carol.receive(out)
    assert messages(carol_events) == [("alice", b"after the removal")]
    assert carol.members() == [(0, "alice"), (2, "carol")]


def test_update_changes_epoch_and_secrets(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, carol, _ = trio
    before = alice.export_secret("x")
    events = carol.update()
    assert [e.by for e in events if isinstance(e, EpochChanged)] == ["carol"]
    out = carol.take_outgoing()
    alice.receive(out)
    bob.receive(out)
    assert alice.epoch == bob.epoch == carol.epoch == 2
    assert alice.export_secret("x") == carol.export_secret("x") != before


def test_out_of_order_delivery_waits_then_delivers(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, _carol, _ = trio
    alice.update()
    alice.send("in the new epoch")
    commit, message = alice.take_outgoing()
    first = bob.receive([message])
    assert [type(e) for e in first] == [OperationWaiting]
    assert bob.missing() == {commit[0]}
    second = bob.receive([commit])
    assert messages(second) == [("alice", b"in the new epoch")]
    assert bob.missing() == set()
    assert bob.epoch == 2


def test_any_arrival_order_converges() -> None:
    alice = make("alice", 11, create=True)
    others = [make(n, 12 + i) for i, n in enumerate(["bob", "carol", "dave"])]
    history: Blocks = alice.take_outgoing()
    alice.add([o.key_package() for o in others])
    history += alice.take_outgoing()
    for o in others:
        o.receive(history)
    bob, carol, _dave = others
    for who, text in ((bob, "one"), (carol, "two"), (alice, "three")):
        who.send(text)
        out = who.take_outgoing()
        history += out
        for r in (alice, *others):
            if r is not who:
                r.receive(out)
    alice.remove(["dave"])
    alice.send("four")
    history += alice.take_outgoing()
    late = make("erin", 20)
    kp = late.key_package()
    bob.receive(history)
    bob.add([kp])
    history += bob.take_outgoing()
    shuffled = list(history)
    random.Random(5).shuffle(shuffled)
    got: list[crdt_mls.Event] = []
    for block in shuffled:
        got += late.receive([block])
    assert late.in_group and late.epoch == 3
    assert [n for _, n in late.members()] == ["alice", "bob", "carol", "erin"]
    # erin joined after them: the old messages stay unreadable, and nothing waits
    assert messages(got) == []
    assert late.missing() == set()


def test_persistence_round_trip(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.sqlite")
    alice = make("alice", 1, create=True, store=store)
    bob = make("bob", 2)
    alice.add([bob.key_package()])
    out = alice.take_outgoing()
    bob.receive(out)
    store.close()
    store2 = SqliteStore(tmp_path / "a.sqlite")
    again = Replica.load(store2)
    assert again.epoch_id == alice.epoch_id and again.members() == alice.members()
    again.send("after restart")
    msg = again.take_outgoing()
    assert messages(bob.receive(msg)) == [("alice", b"after restart")]
    bob.send("reply")
    assert messages(again.receive(bob.take_outgoing())) == [("bob", b"reply")]
    store2.close()


def test_load_errors() -> None:
    with pytest.raises(InvalidState):
        Replica.load(MemoryStore())
    st = MemoryStore()
    st.write_batch([], {"replica/state": b"\x01garbage"})
    with pytest.raises(StorageError):
        Replica.load(st)


def test_bad_block_leaves_state_unchanged(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, _carol, _ = trio
    bob.send("good")
    (cid, block) = bob.take_outgoing()[0]
    before = alice.store.get_meta("replica/state")
    flipped = bytearray(block)
    flipped[len(flipped) // 2] ^= 1
    for bad in ([(cid, bytes(flipped))], [(cid, block[:-3])], [(cid, b"")], [(cid[:-1] + b"\x00", block)]):
        with pytest.raises(RemoteInputError):
            alice.receive(bad)
        assert alice.store.get_meta("replica/state") == before
    # a good block in a batch with a bad one: nothing is taken
    with pytest.raises(RemoteInputError):
        alice.receive([(cid, block), (cid, bytes(flipped))])
    assert alice.store.get_meta("replica/state") == before
    assert messages(alice.receive([(cid, block)])) == [("bob", b"good")]


def test_blocks_from_another_group_are_rejected(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, *_ = trio
    stranger = make("mallory", 99, create=True)
    stranger.send("hi")
    with pytest.raises(RemoteInputError):
        alice.receive(stranger.take_outgoing())


def test_concurrent_commits_fork_and_stay_readable(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, carol, _ = trio
    alice.update()
    a_commit = alice.take_outgoing()
    bob.update()
    b_commit = bob.take_outgoing()
    bob.send("from bob's branch")
    b_msg = bob.take_outgoing()
    ev_alice = alice.receive(b_commit + b_msg)
    assert any(isinstance(e, MergeNeeded) for e in ev_alice)
    assert messages(ev_alice) == [("bob", b"from bob's branch")]
    ev_carol = carol.receive(a_commit + b_commit + b_msg)
    assert messages(ev_carol) == [("bob", b"from bob's branch")]
    assert len(carol.epoch_heads()) == 2 == len(alice.epoch_heads())
    with pytest.raises(InvalidState):
        carol.update()


def test_invalid_arguments(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, _carol, _ = trio
    before = alice.store.get_meta("replica/state")
    with pytest.raises(InvalidArgument):
        alice.remove(["nobody"])
    with pytest.raises(InvalidArgument):
        alice.remove(["alice"])
    with pytest.raises(InvalidArgument):
        alice.remove([17])
    with pytest.raises(InvalidArgument):
        alice.add([])
    with pytest.raises(InvalidArgument):
        Replica.new_member("")
    with pytest.raises(InvalidState):
        bob.start_group()
    assert alice.store.get_meta("replica/state") == before
    fresh = make("zoe", 7)
    with pytest.raises(InvalidState):
        fresh.send("no group")
    with pytest.raises(InvalidState):
        _ = fresh.epoch


def test_welcome_for_someone_else_is_unreadable() -> None:
    alice = make("alice", 1, create=True)
    bob, eve = make("bob", 2), make("eve", 3)
    eve.key_package()
    history = alice.take_outgoing()
    alice.add([bob.key_package()])
    history += alice.take_outgoing()
    events = eve.receive(history)
    assert not eve.in_group
    # history before joining is unreadable by design and not reported as an error
    assert events == []
    with pytest.raises(InvalidState):
        _ = eve.epoch
    bob.receive(history)
    assert bob.in_group


def test_no_plaintext_in_blocks_and_no_secrets_in_repr(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, _carol, _ = trio
    bob.send("the secret rendezvous is at noon")
    alice.receive(bob.take_outgoing())
    alice.remove(["carol"])
    for store in (alice.store, bob.store):
        assert_no_plaintext(store, ["alice", "carol", "secret rendezvous", "noon"])  # type: ignore[arg-type]
    text = repr(alice)
    assert "alice" in text
    assert alice._signature_priv.hex() not in text
    ev = MessageReceived(1, 0, "bob", b"secret words")
    assert "secret words" not in repr(ev)


# ----------------------------------------------------------------------------- merge (design doc section 5)


def four() -> tuple[list[Replica], Blocks]:
    alice = make("alice", 31, create=True)
    others = [make(n, 32 + i) for i, n in enumerate(["bobby", "carol", "david"])]
    net: Blocks = alice.take_outgoing()
    alice.add([o.key_package() for o in others])
    net += alice.take_outgoing()
    for o in others:
        o.receive(net)
    return [alice, *others], net


def leader_of(rs: list[Replica]) -> Replica:
    keys = {r.merge_leader for r in rs if r.merge_leader is not None}
    assert len(keys) == 1, "every forked replica designates the same merger"
    return next(r for r in rs if r.signature_key in keys)


def test_merge_of_concurrent_updates_converges() -> None:
    (alice, bobby, carol, david), _ = four()
    alice.update()
    a = alice.take_outgoing()
    carol.update()
    c = carol.take_outgoing()
    for r, blocks in ((bobby, a + c), (david, c + a), (alice, c), (carol, a)):
        assert any(isinstance(e, MergeNeeded) for e in r.receive(blocks))
    everyone = [alice, bobby, carol, david]
    merger = leader_of(everyone)
    made = merger.merge()
    assert any(isinstance(e, crdt_mls.MergeMade) for e in made)
    m = merger.take_outgoing()
    for r in everyone:
        if r is not merger:
            evs = r.receive(m)
            merged = [e for e in evs if isinstance(e, crdt_mls.MergeMade)]
            assert len(merged) == 1 and merged[0].members == ("alice", "bobby", "carol", "david")
    assert len({r.epoch_id for r in everyone}) == 1
    assert len({r.export_secret("after merge") for r in everyone}) == 1
    assert all(r.epoch_heads() == (merger.epoch_id,) for r in everyone)
    # the group goes on: a message and a commit after the merge
    david.send("post-merge hello")
    out = david.take_outgoing()
    for r in (alice, bobby, carol):
        assert messages(r.receive(out)) == [("david", b"post-merge hello")]
    bobby.update()
    out = bobby.take_outgoing()
    for r in (alice, carol, david):
        r.receive(out)
    assert len({r.export_secret("x") for r in everyone}) == 1


def test_merge_keeps_a_concurrent_removal() -> None:
    (alice, bobby, carol, david), _ = four()
    alice.remove(["david"])
    a = alice.take_outgoing()
    carol.update()
    c = carol.take_outgoing()
    bobby.receive(a + c)
    alice.receive(c)
    carol.receive(a)
    david.receive(c + a)
    merger = leader_of([alice, bobby, carol])
    merger.merge()
    m = merger.take_outgoing()
    for r in (alice, bobby, carol):
        if r is not merger:
            r.receive(m)
    evs = david.receive(m)
    assert any(isinstance(e, Removed) for e in evs)
    assert not david.in_group
    assert [n for _, n in carol.members()] == ["alice", "bobby", "carol"]
    carol.send("david must not read this")
    out = carol.take_outgoing()
    assert messages(david.receive(out)) == []
    assert messages(alice.receive(out)) == [("carol", b"david must not read this")]


def test_merge_welcomes_a_member_added_in_one_branch() -> None:
    (alice, bobby, carol, david), _ = four()
    erin = make("erin", 40)
    alice.add([erin.key_package()])
    a = alice.take_outgoing()
    carol.update()
    c = carol.take_outgoing()
    for r in (bobby, david):
        r.receive(a + c)
    alice.receive(c)
    carol.receive(a)
    # erin takes the whole history from bobby's store, in store order
    everything = bobby.store
    all_blocks = [(cid, everything.get_block(cid)) for cid in everything.iter_cids()]
    erin.receive([(cid, b) for cid, b in all_blocks if b is not None])
    assert erin.in_group
    merger = leader_of([alice, bobby, carol, david])
    merger.merge()
    m = merger.take_outgoing()
    for r in (alice, bobby, carol, david, erin):
        if r is not merger:
            r.receive(m)
    assert erin.epoch_id == merger.epoch_id
    assert erin.export_secret("x") == carol.export_secret("x")
    assert [n for _, n in carol.members()] == ["alice", "bobby", "carol", "david", "erin"]


def test_merge_errors_and_persistence() -> None:
    (alice, bobby, _carol, _david), _ = four()
    with pytest.raises(InvalidState):
        alice.merge()
    assert alice.merge_leader is None
    alice.update()
    a = alice.take_outgoing()
    bobby.update()
    b = bobby.take_outgoing()
    alice.receive(b)
    saved = Replica.load(alice.store)
    assert saved.epoch_heads() == alice.epoch_heads() and len(saved.epoch_heads()) == 2
    with pytest.raises(InvalidState):
        saved.update()
    saved.merge()
    m = saved.take_outgoing()
    bobby.receive(a)
    assert any(isinstance(e, crdt_mls.MergeMade) for e in bobby.receive(m))
    assert bobby.export_secret("x") == saved.export_secret("x")


def test_rewrapped_message_of_another_member_is_refused(trio: tuple[Replica, Replica, Replica, Blocks]) -> None:
    alice, bob, carol, _ = trio
    bob.send("only bob wrote this")
    (cid, block) = bob.take_outgoing()[0]
    from crdt_mls.dag.node import NodeKind, decode_node

    node = decode_node(block, cid)
    # carol signs a node of her own around bob's PrivateMessage
    forged = carol._sign(NodeKind.APPLICATION, node.epoch, node.payload, node.parents)
    carol._local(forged)
    events = alice.receive(carol.take_outgoing())
    assert messages(events) == []
    assert [e.reason for e in events if isinstance(e, OperationUnreadable)] == [
        "the message's MLS sender is not the node's author"
    ]
    assert messages(alice.receive([(cid, block)])) == [("bob", b"only bob wrote this")]


class RecordingStore(MemoryStore):
    """A MemoryStore remembering the meta keys of each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict[str, bytes | None]] = []

    def write_batch(self, blocks, meta):  # type: ignore[no-untyped-def]
        self.batches.append(dict(meta))
        super().write_batch(blocks, meta)


def test_save_writes_only_changed_epochs_and_deletes_dropped_ones() -> None:
    store = RecordingStore()
    r = rng_for(60)
    alice = Replica(  # a small epoch window to see pruning
        "alice", store, max_epochs=1, rng=r.randbytes
    )
    alice.max_public_trees = 0  # (public trees of dropped epochs: tests/unit/test_replica_storage.py)
    alice.start_group()
    bob = make("bob", 61)
    alice.add([bob.key_package()])
    alice.update()
    alice.update()
    last = store.batches[-1]
    epoch_keys = {k for k in last if k.startswith("replica/epoch/")}
    deleted = {k for k, v in last.items() if v is None}
    assert len(epoch_keys - deleted) == 1 and len(deleted & epoch_keys) == 1
    # the dropped epoch's tree chunk that no kept tree shares is deleted with it; the new
    # epoch's tree wrote one chunk (a two-member tree is one chunk)
    tree_keys = {k for k in last if k.startswith("replica/tree/")}
    assert len(tree_keys & deleted) == 1 and len(tree_keys - deleted) == 1
    alice.send("one message")
    written = [k for k in store.batches[-1] if k.startswith("replica/epoch/")]
    assert written == [f"replica/epoch/{alice.epoch_id.hex()}"]
    assert not any(k.startswith("replica/tree/") for k in store.batches[-1])  # a message writes no tree
    again = Replica.load(store)
    assert again.epoch_id == alice.epoch_id and len(again._states) == len(alice._states) == 2


# ----------------------------------------------------------------------------- property


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_schedules_deliver_every_message_once(data: st.DataObject) -> None:
    """Random interleavings of sends (anyone) and updates (alice), each member receiving random
    subsets of the published blocks in random order: at the end every member has read every
    other member's message exactly once and all share the epoch and its secret."""
    seed = data.draw(st.integers(0, 2**16))
    alice = make("alice", seed, create=True)
    bob, carol = make("bob", seed + 1), make("carol", seed + 2)
    published: Blocks = alice.take_outgoing()
    alice.add([bob.key_package(), carol.key_package()])
    published += alice.take_outgoing()
    members = [alice, bob, carol]
    for r in (bob, carol):
        r.receive(published)
    got: dict[str, list[tuple[str, bytes]]] = {r.name: [] for r in members}
    sent: list[tuple[str, bytes]] = []
    steps = data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans()), max_size=10))
    for i, (action, who, deliver) in enumerate(steps):
        r = members[who]
        if action == 3 and r is alice:
            alice.update()
        else:
            text = f"message {i} from {r.name}".encode()
            r.send(text)
            sent.append((r.name, text))
        published += r.take_outgoing()
        if deliver:
            target = members[data.draw(st.integers(0, 2))]
            subset = data.draw(st.lists(st.sampled_from(published), max_size=6))
            got[target.name] += messages(target.receive(subset))
    for r in members:
        order = data.draw(st.permutations(published))
        got[r.name] += messages(r.receive(order))
        assert r.missing() == set()
    for r in members:
        expected = sorted(m for m in sent if m[0] != r.name)
        assert sorted(got[r.name]) == expected
    assert len({r.epoch_id for r in members}) == 1
    assert len({r.export_secret("p") for r in members}) == 1
