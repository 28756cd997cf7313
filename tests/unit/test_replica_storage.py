"""The replica's state at rest (docs/api.md "State at rest"): incremental layout, what one call
writes, migration of the version-3 layout, the receiver journal, and O(changes) helpers."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

from crdt_mls.errors import StorageError
from crdt_mls.merge.records import tree_changes
from crdt_mls.mls.codec import Reader
from crdt_mls.mls.group import Group
from crdt_mls.mls.welcome import make_key_package
from crdt_mls.replica import MessageReceived, Replica, _tree_changes, open_meta
from crdt_mls.stores import MemoryStore

DATA = Path(__file__).parent / "data"


def make(name: str, seed: int, *, create: bool = False, store: MemoryStore | None = None) -> Replica:
    r = random.Random(seed)
    st = store if store is not None else MemoryStore()
    if create:
        return Replica.create(name, st, rng=r.randbytes)
    return Replica.new_member(name, st, rng=r.randbytes)


class RecordingStore(MemoryStore):
    """A MemoryStore remembering each batch (block bytes, meta values)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, dict[str, bytes | None]]] = []

    def write_batch(self, blocks, meta):  # type: ignore[no-untyped-def]
        self.batches.append((sum(len(b) for _, b in blocks), dict(meta)))
        super().write_batch(blocks, meta)

    def last_bytes(self) -> int:
        """Blocks and meta written by the last batch."""
        return self.batches[-1][0] + self.last_state_bytes()

    def last_state_bytes(self) -> int:
        """Meta (state) written by the last batch."""
        return sum(len(k) + len(v or b"") for k, v in self.batches[-1][1].items())


def test_a_message_writes_kilobytes_however_large_the_tree() -> None:
    """At 600 members the tree is ~130 KB; a message writes the node, the header, the epoch's
    secrets and two log entries, and no tree chunk; an update commit writes a few chunks."""
    store = RecordingStore()
    alice = make("alice", 1, create=True, store=store)
    bob = make("bob", 2)
    rng = random.Random(3)
    kps = [make_key_package(1, f"m{i}".encode(), rng=rng.randbytes).public_message() for i in range(599)]
    alice.add([bob.key_package(), *kps])
    bob.receive(alice.take_outgoing())
    tree_bytes = len(alice.group.tree.encode())
    assert tree_bytes > 100_000
    alice.send("a message")
    written = store.last_bytes()
    assert written < 8_000, written
    _, meta = store.batches[-1]
    assert not any(k.startswith("replica/tree/") for k in meta)
    bob.send("a reply")
    alice.receive(bob.take_outgoing())
    assert store.last_bytes() < 8_000
    alice.update()
    # (the commit block itself is large here: the first commit after an add-all is sparse)
    written = store.last_state_bytes()
    chunks = [k for k in store.batches[-1][1] if k.startswith("replica/tree/")]
    assert 1 <= len(chunks) <= 3 and written < tree_bytes / 8, (len(chunks), written)
    again = Replica.load(store)
    assert again.export_secret("s") == alice.export_secret("s")
    assert again.group.tree.tree_hash() == alice.group.tree.tree_hash()


def test_deriving_a_new_state_never_changes_a_saved_one() -> None:
    """Epoch trees share chunks and node objects: saving a new epoch leaves every earlier
    epoch's loaded tree and secrets exactly as they were."""
    alice = make("alice", 5, create=True)
    bob = make("bob", 6)
    alice.add([bob.key_package()])
    bob.receive(alice.take_outgoing())
    states = []
    for i in range(4):
        alice.update() if i % 2 else alice.send(f"m{i}")
        states.append({e: (g.tree.tree_hash(), g.to_bytes()) for e, g in alice._states.items()})
    again = Replica.load(alice.store)
    for e, g in again._states.items():
        assert (g.tree.tree_hash(), g.to_bytes()) == states[-1][e]
    # the earlier snapshots still describe the epochs they named
    for snap in states:
        for e, (th, raw) in snap.items():
            if e in alice._states and alice._states[e].to_bytes() == raw:
                assert alice._states[e].tree.tree_hash() == th


def test_version_3_layout_is_migrated_on_load() -> None:
    """A store written by the previous layout (whole `Group` per epoch, receiver in the header;
    fixture made with the replica of commit fe3a6d2) loads, is rewritten in the new layout in one
    batch, and the replica goes on working with its peers."""
    r = Reader(gzip.decompress((DATA / "replica_v3.bin.gz").read_bytes()))
    loaded = []
    for _ in range(2):
        sr = Reader(r.opaque())
        store = MemoryStore()
        meta = sr.vector(lambda x: (x.opaque().decode(), x.opaque()))
        blocks = sr.vector(lambda x: (x.opaque(), x.opaque()))
        store.write_batch(blocks, dict(meta))
        loaded.append((store, r.opaque(), r.opaque()))
    (astore, asecret, aepoch), (bstore, bsecret, bepoch) = loaded
    key = bytes(range(32))
    assert open_meta(key, "replica/state", astore.get_meta("replica/state") or b"")[0] == 3
    alice = Replica.load(astore, state_key=key)
    assert open_meta(key, "replica/state", astore.get_meta("replica/state") or b"")[0] == 4
    assert any(k.startswith("replica/tree/") for k in astore.iter_meta_keys())
    assert any(k == "replica/recv/ck" for k in astore.iter_meta_keys())
    assert alice.epoch_id == aepoch and alice.export_secret("v3 fixture") == asecret
    bob = Replica.load(bstore)
    assert bob.epoch_id == bepoch and bob.export_secret("v3 fixture") == bsecret
    again = Replica.load(astore, state_key=key)
    assert again.export_secret("v3 fixture") == asecret
    bob.send("after the migration")
    events = again.receive(bob.take_outgoing())
    assert [e.data for e in events if isinstance(e, MessageReceived)] == [b"after the migration"]


def test_receiver_journal_checkpoints_and_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    """The causal receiver is saved as a checkpoint plus a journal of deliveries; a checkpoint is
    rewritten only when the journal outgrows it, and loading replays the journal."""
    import crdt_mls.replica as rep

    monkeypatch.setattr(rep, "_RECV_CK_MIN", 4)
    store = RecordingStore()
    alice = make("alice", 7, create=True, store=store)
    bob = make("bob", 8)
    alice.add([bob.key_package()])
    bob.receive(alice.take_outgoing())
    cks = 0
    for i in range(30):
        bob.send(f"message {i}")
        alice.receive(bob.take_outgoing())
        alice.send(f"reply {i}")
        bob.receive(alice.take_outgoing())
        cks += "replica/recv/ck" in store.batches[-1][1] or "replica/recv/ck" in store.batches[-2][1]
        if i % 7 == 0:
            again = Replica.load(store)
            assert again._receiver.to_bytes(rep.encode_ref) == alice._receiver.to_bytes(rep.encode_ref)
            assert again.heads() == alice.heads()
    assert 2 <= cks <= 8  # geometric: checkpoints get rarer as the history grows
    journal = [k for k in store.iter_meta_keys() if k.startswith("replica/recv/0")]
    assert 0 < len(journal) < 60


def test_missing_journal_entry_or_chunk_is_a_storage_error() -> None:
    alice = make("alice", 9, create=True)
    bob = make("bob", 10)
    alice.add([bob.key_package()])
    bob.receive(alice.take_outgoing())
    alice.send("x")
    store = alice.store
    assert isinstance(store, MemoryStore)
    chunk = next(k for k in store.iter_meta_keys() if k.startswith("replica/tree/"))
    value = store.get_meta(chunk)
    store.write_batch([], {chunk: None})
    with pytest.raises(StorageError, match="missing"):
        Replica.load(store)
    store.write_batch([], {chunk: value})
    Replica.load(store)
    entry = next(k for k in store.iter_meta_keys() if k.startswith("replica/recv/0"))
    store.write_batch([], {entry: None})
    with pytest.raises(StorageError, match="journal"):
        Replica.load(store)


def test_fast_tree_changes_equal_the_reference() -> None:
    """The replica's O(changes) `_tree_changes` gives exactly `records.tree_changes` on random
    adds, removes, updates and a tree that grows and shrinks."""
    rng = random.Random(11)
    g = Group.create(1, make_key_package(1, b"c", rng=rng.randbytes), rng=rng.randbytes)
    for step in range(40):
        others = [i for i, _ in g.members() if i != g.own_leaf]
        op = rng.choice(["add", "add", "remove", "update"])
        if op == "add":
            kps = [
                make_key_package(1, f"{step}-{k}".encode(), rng=rng.randbytes).key_package
                for k in range(rng.randint(1, 5))
            ]
            _, _, after = g.commit(add=kps, rng=rng.randbytes)
        elif op == "remove" and others:
            _, _, after = g.commit(remove=rng.sample(others, rng.randint(1, min(3, len(others)))), rng=rng.randbytes)
        else:
            _, _, after = g.commit(rng=rng.randbytes)
        assert _tree_changes(g.tree, after.tree) == tree_changes(g.tree, after.tree)
        g = after


def test_public_trees_of_dropped_epochs_are_kept_for_merges() -> None:
    """Epochs whose secrets are dropped keep their public tree (a later fork's merge base,
    docs/merge.md 5), bounded by ``max_public_trees``; they share chunks with the kept trees, are
    saved and reloaded, and dropping one deletes only the chunks no other tree uses."""
    store = RecordingStore()
    alice = Replica("alice", store, max_epochs=2, rng=random.Random(21).randbytes)
    alice.max_public_trees = 3
    alice.start_group()
    bob = make("bob", 22)
    alice.add([bob.key_package()])
    bob.receive(alice.take_outgoing())
    epochs = [alice.epoch_id]
    for _ in range(7):
        alice.update()
        epochs.append(alice.epoch_id)
        assert alice.epoch_tree(alice.epoch_id) is alice.group.tree
    kept = set(alice._states)
    public = [e for e in epochs if e in alice._public]
    assert len(kept) == 3 and public == epochs[-6:-3]
    assert all(alice.epoch_tree(e) is not None for e in public)
    assert alice.epoch_tree(epochs[0]) is None
    _, meta = store.batches[-1]
    assert [k for k, v in meta.items() if k.startswith("replica/ptree/") and v is None]  # oldest dropped
    again = Replica.load(store)
    assert list(again._public) == public
    for e in public:
        t = again.epoch_tree(e)
        assert t is not None and t.tree_hash() == alice._public[e].tree_hash()
    # chunks on disk are exactly those the kept and public trees use
    on_disk = {k for k in store.iter_meta_keys() if k.startswith("replica/tree/")}
    assert on_disk == {f"replica/tree/{c.hex()}" for c in again._chunk_rc}
    assert again._chunk_rc == alice._chunk_rc


def test_a_merge_base_whose_secrets_were_dropped_comes_from_its_public_tree() -> None:
    """Alice sees a fork at epoch E, then more commits on one branch from a member who had not
    seen the fork: E's secrets are dropped (max_epochs=1), its public tree is kept, and the
    merge is built over E as its base (docs/merge.md 5); everybody processes it."""
    alice = Replica("alice", MemoryStore(), max_epochs=1, rng=random.Random(31).randbytes)
    alice.start_group()
    bob, carol = make("bob", 32), make("carol", 33)
    alice.add([bob.key_package(), carol.key_package()])
    out = alice.take_outgoing()
    bob.receive(out)
    carol.receive(out)
    base = alice.epoch_id
    alice.update()
    a1 = alice.take_outgoing()
    bob.receive(a1)
    carol.update()  # concurrent with alice's update, on E
    c = carol.take_outgoing()
    alice.receive(c)
    bob.update()  # bob has not seen carol's commit: a second commit on alice's branch
    a2 = bob.take_outgoing()
    alice.receive(a2)
    bob.receive(c)
    carol.receive(a1 + a2)
    assert base not in alice._states and alice.epoch_tree(base) is not None
    st = alice.dag.state(alice._links(alice._parents()))
    assert st.base == base and alice._base_epoch(base) is not None
    assert alice.merge_rank() is not None
    alice.merge()
    m = alice.take_outgoing()
    for r in (bob, carol):
        r.receive(m)
    assert len({(r.epoch_id, r.export_secret("b")) for r in (alice, bob, carol)}) == 1
