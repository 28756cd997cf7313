"""Cryptree directory trees (crdt_mls.content.cryptree; docs/content.md section 4)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_mls.content.cryptree import (
    CHUNK_SIZE,
    Cryptree,
    PointerRecord,
    ReadCap,
    WriteCap,
    decode_cap,
)
from crdt_mls.dag.audit import assert_no_plaintext
from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    IntegrityError,
    InvalidArgument,
    RevokedError,
    SignatureError,
    StorageError,
)
from crdt_mls.stores import MemoryStore, SqliteStore


def _snapshot(store: MemoryStore) -> tuple[dict[bytes, bytes | None], dict[str, bytes | None]]:
    blocks = {c: store.get_block(c) for c in store.iter_cids()}
    keys = [k for k in store._meta]
    return blocks, {k: store.get_meta(k) for k in keys}


def _tree() -> tuple[MemoryStore, Cryptree, WriteCap]:
    store = MemoryStore()
    tree = Cryptree(store)
    return store, tree, tree.create_root()


def test_build_list_read_walk() -> None:
    _, t, root = _tree()
    docs = t.mkdir(root, "documents")
    photos = t.mkdir(docs, "photos")
    big = os.urandom(2 * CHUNK_SIZE + 123)
    t.write_file(photos, "holiday.jpg", big)
    t.write_file(root, "notes.txt", b"hello")
    t.write_file(docs, "streamed.bin", io.BytesIO(b"s" * (CHUNK_SIZE + 1)))
    tree = {path: (e.is_dir, e.size) for path, e in t.iter_tree(root.read_cap)}
    assert tree == {
        "documents": (True, 0),
        "documents/photos": (True, 0),
        "documents/photos/holiday.jpg": (False, len(big)),
        "documents/streamed.bin": (False, CHUNK_SIZE + 1),
        "notes.txt": (False, 5),
    }
    assert t.read_file(t.walk(root.read_cap, "documents/photos/holiday.jpg")) == big
    assert b"".join(t.read_chunks(t.walk(root, "/notes.txt"))) == b"hello"
    assert t.is_dir(t.walk(root, "documents")) and not t.is_dir(t.walk(root, "notes.txt"))
    with pytest.raises(InvalidArgument):
        t.walk(root, "documents/missing")
    with pytest.raises(InvalidArgument):
        t.read_file(docs)
    with pytest.raises(InvalidArgument):
        t.list_dir(t.walk(root, "notes.txt"))


def test_read_caps_give_read_caps_and_cannot_write() -> None:
    _, t, root = _tree()
    docs = t.mkdir(root, "docs")
    t.write_file(docs, "a.txt", b"a")
    assert all(isinstance(e.cap, ReadCap) for e in t.list_dir(root.read_cap))
    assert all(isinstance(e.cap, WriteCap) for e in t.list_dir(root))
    with pytest.raises(InvalidArgument):
        t.mkdir(docs.read_cap, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        t.write_file(root.read_cap, "x", b"")  # type: ignore[arg-type]


def test_subtree_share_does_not_reach_the_parent() -> None:
    _, t, root = _tree()
    t.write_file(root, "private.txt", b"owner only")
    docs = t.mkdir(root, "shared")
    t.write_file(docs, "report.txt", b"for bob")
    bob = docs.read_cap
    assert [e.name for e in t.list_dir(bob)] == ["report.txt"]
    # bob's key opens nothing above: not the parent, not a sibling
    with pytest.raises(DecryptionError):
        t.list_dir(ReadCap(root.location, bob.read_key))
    sibling = t.walk(root, "private.txt")
    with pytest.raises(DecryptionError):
        t.read_file(ReadCap(sibling.location, bob.read_key))


def test_subtree_write_cap_writes_below_only() -> None:
    _, t, root = _tree()
    docs = t.mkdir(root, "docs")
    t.write_file(docs, "by-bob.txt", b"bob wrote this")  # bob holds only docs' WriteCap
    assert t.read_file(t.walk(root.read_cap, "docs/by-bob.txt")) == b"bob wrote this"
    fake_parent = WriteCap(docs.location, root.read_key, docs.write_key)
    with pytest.raises(DecryptionError):
        t.list_dir(fake_parent)


def test_replacing_a_file_keeps_shared_caps_current() -> None:
    _, t, root = _tree()
    cap = t.write_file(root, "live.txt", b"version 1")
    shared = cap.read_cap
    again = t.write_file(root, "live.txt", b"version 2, longer")
    assert again == cap
    assert t.read_file(shared) == b"version 2, longer"
    assert [(e.name, e.size) for e in t.list_dir(root)] == [("live.txt", 17)]
    t.mkdir(root, "dir")
    with pytest.raises(InvalidArgument):
        t.mkdir(root, "dir")
    with pytest.raises(InvalidArgument):
        t.write_file(root, "dir", b"x")
    with pytest.raises(InvalidArgument):
        t.mkdir(root, "live.txt")


def test_rekey_revokes_old_capabilities() -> None:
    store, t, root = _tree()
    docs = t.mkdir(root, "docs")
    inner = t.mkdir(docs, "inner")
    t.write_file(inner, "deep.txt", b"deep content")
    report = t.write_file(docs, "report.txt", b"report v1")
    t.write_file(root, "other.txt", b"sibling stays")
    old_docs, old_report, old_inner = docs.read_cap, report.read_cap, inner
    old_chunk_cids = set(store.iter_cids())

    new_docs = t.rekey(root, "docs")
    assert new_docs.location != docs.location and new_docs.read_key != docs.read_key
    t.write_file(new_docs, "after.txt", b"written after revocation")

    # the new cap (and the owner via the root) read everything, old and new
    assert t.read_file(t.walk(new_docs.read_cap, "inner/deep.txt")) == b"deep content"
    assert t.read_file(t.walk(root.read_cap, "docs/after.txt")) == b"written after revocation"
    assert t.read_file(t.walk(root.read_cap, "docs/report.txt")) == b"report v1"
    assert t.read_file(t.walk(root.read_cap, "other.txt")) == b"sibling stays"
    # every old cap of the subtree is revoked, read or write, at any depth
    for old in (old_docs, old_report, old_inner, docs):
        with pytest.raises(RevokedError):
            t._load(old)
    with pytest.raises(RevokedError):
        t.write_file(old_inner, "sneaky.txt", b"x")
    # even ignoring the revocation flag, the old keys open none of the new nodes
    for path in ("", "inner", "inner/deep.txt", "report.txt", "after.txt"):
        fresh = t.walk(new_docs, path)
        with pytest.raises(DecryptionError):
            t._load(ReadCap(fresh.location, old_docs.read_key))
        with pytest.raises(DecryptionError):
            t._load(ReadCap(fresh.location, old_report.read_key))
    # file contents were re-encrypted into new chunk blocks
    new_file = t.walk(new_docs.read_cap, "inner/deep.txt")
    assert not set(t._load(new_file).chunks) & old_chunk_cids


def test_rekey_root_and_remove() -> None:
    _, t, root = _tree()
    t.write_file(t.mkdir(root, "a"), "f", b"content of f")
    new_root = t.rekey_root(root)
    with pytest.raises(RevokedError):
        t.list_dir(root.read_cap)
    assert t.read_file(t.walk(new_root, "a/f")) == b"content of f"
    a = t.walk(new_root, "a")
    f = t.walk(new_root, "a/f")
    t.remove(new_root, "a")
    assert t.list_dir(new_root) == []
    for cap in (a, f):
        with pytest.raises(RevokedError):
            t._load(cap)
    with pytest.raises(InvalidArgument):
        t.remove(new_root, "a")
    with pytest.raises(InvalidArgument):
        t.rekey(new_root, "a")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\x00", "x" * 256])
def test_bad_names_leave_the_store_unchanged(name: str) -> None:
    store, t, root = _tree()
    before = _snapshot(store)
    with pytest.raises(InvalidArgument):
        t.mkdir(root, name)
    assert _snapshot(store) == before


class _FailingStore(MemoryStore):
    __slots__ = ("fail",)

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None:
        if self.fail:
            raise StorageError("disk full")
        super().write_batch(blocks, meta)


def test_failed_writes_are_atomic() -> None:
    store = _FailingStore()
    t = Cryptree(store)
    root = t.create_root()
    t.write_file(t.mkdir(root, "d"), "f", b"data")
    before = _snapshot(store)
    store.fail = True
    for op in (
        lambda: t.write_file(root, "g", os.urandom(3 * CHUNK_SIZE)),
        lambda: t.rekey(root, "d"),
        lambda: t.remove(root, "d"),
        lambda: t.rekey_root(root),
    ):
        with pytest.raises(StorageError):
            op()
        assert _snapshot(store) == before
    store.fail = False
    assert t.read_file(t.walk(root, "d/f")) == b"data"


def test_tampered_blocks_and_pointers() -> None:
    store, t, root = _tree()
    f = t.write_file(root, "f.txt", b"payload")
    # a block whose bytes do not match its CID
    ptr = PointerRecord.from_bytes(t.export_pointer(f.location))
    node = store._blocks[ptr.cid]
    store._blocks[ptr.cid] = node[:-1] + bytes([node[-1] ^ 1])
    with pytest.raises(IntegrityError):
        t.read_file(f)
    store._blocks[ptr.cid] = node
    # a forged pointer
    key = "cryptree/ptr/" + f.location.hex()
    good = store.get_meta(key)
    assert good is not None
    store.write_batch([], {key: good[:-1] + bytes([good[-1] ^ 1])})
    with pytest.raises(SignatureError):
        t.read_file(f)
    store.write_batch([], {key: good})
    # a missing chunk
    chunk = t._load(f).chunks[0]
    saved = store._blocks.pop(chunk)
    with pytest.raises(StorageError):
        t.read_file(f)
    store._blocks[chunk] = saved
    assert t.read_file(f) == b"payload"
    with pytest.raises(InvalidArgument):
        t.read_file(ReadCap(os.urandom(32), os.urandom(32)))


def test_pointer_export_import_between_stores() -> None:
    a_store, a, root = _tree()
    f = a.write_file(root, "f.txt", b"v1")
    b_store = MemoryStore()
    b_store.put_blocks([(c, a_store.get_block(c) or b"") for c in a_store.iter_cids()])
    b = Cryptree(b_store)
    assert b.import_pointer(a.export_pointer(f.location))
    assert b.read_file(f.read_cap) == b"v1"
    v1 = a.export_pointer(f.location)
    a.write_file(root, "f.txt", b"v2")
    b_store.put_blocks([(c, a_store.get_block(c) or b"") for c in a_store.iter_cids()])
    assert b.import_pointer(a.export_pointer(f.location))
    assert not b.import_pointer(v1)  # older sequence numbers are ignored
    assert b.read_file(f.read_cap) == b"v2"
    forged = bytearray(a.export_pointer(f.location))
    forged[40] ^= 1  # sequence number
    with pytest.raises(SignatureError):
        b.import_pointer(bytes(forged))
    with pytest.raises(DecodeError):
        b.import_pointer(b"garbage")


def test_capability_encoding() -> None:
    _, _t, root = _tree()
    for cap in (root, root.read_cap):
        assert decode_cap(cap.to_bytes()) == cap
        assert cap.read_key.hex() not in repr(cap) and repr(cap.read_key) not in repr(cap)
    assert repr(root.write_key) not in repr(root)
    data = root.to_bytes()
    for bad in (data[:-1], data + b"\x00", b"XXXXXXX" + data[7:], data[:7] + b"\x02" + data[8:]):
        with pytest.raises(DecodeError):
            decode_cap(bad)
    mismatched = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(DecodeError):
        decode_cap(mismatched)
    with pytest.raises(InvalidArgument):
        WriteCap(root.location, root.read_key, os.urandom(32))


def test_sizes_and_structure_are_padded() -> None:
    store, t, root = _tree()
    small = t.write_file(root, "small", b"x" * 10)
    medium = t.write_file(root, "medium", b"y" * 3000)
    one = t.mkdir(root, "one")
    t.write_file(one, "a", b"")
    three = t.mkdir(root, "three")
    for n in ("a", "b", "c"):
        t.write_file(three, n, b"")

    def block_len(cid: bytes) -> int:
        return len(store.get_block(cid) or b"")

    def node_len(cap: WriteCap) -> int:
        return block_len(PointerRecord.from_bytes(t.export_pointer(cap.location)).cid)

    assert block_len(t._load(small).chunks[0]) == block_len(t._load(medium).chunks[0])
    assert node_len(small) == node_len(medium)
    assert node_len(one) == node_len(three)


def _walk_everything(t: Cryptree, root: WriteCap) -> Iterator[str]:
    for path, entry in t.iter_tree(root):
        if not entry.is_dir:
            t.read_file(entry.cap)
        yield path


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_no_block_contains_names_contents_or_user_names(backend: str, tmp_path: Path) -> None:
    store = MemoryStore() if backend == "memory" else SqliteStore(str(tmp_path / "s.db"))
    try:
        t = Cryptree(store)
        root = t.create_root()
        d = t.mkdir(root, "alice-private-folder")
        t.write_file(d, "salary-review.docx", b"confidential: alice.smith earns a lot; merger with initech")
        t.write_file(root, "diary.txt", ("dear diary, bob.jones was here " * 200).encode())
        t.rekey(root, "alice-private-folder")
        assert len(list(_walk_everything(t, root))) == 3
        assert_no_plaintext(
            store,
            [
                "alice-private-folder",
                "salary-review",
                "confidential",
                "alice.smith",
                "initech",
                "dear diary",
                "bob.jones",
            ],
        )
    finally:
        store.close()


def test_overwrite_with_the_files_own_write_cap() -> None:
    _, t, root = _tree()
    f = t.write_file(root, "shared.txt", b"draft")
    collaborator = WriteCap(f.location, f.read_key, f.write_key)  # received without the parent's keys
    t.overwrite(collaborator, io.BytesIO(b"edited by a collaborator"))
    assert t.read_file(f.read_cap) == b"edited by a collaborator"
    assert t.file_size(f.read_cap) == 24
    with pytest.raises(InvalidArgument):
        t.overwrite(f.read_cap, b"x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        t.overwrite(root, b"x")
    with pytest.raises(InvalidArgument):
        t.file_size(root)


def test_chunk_blocks_are_bucketed() -> None:
    store, t, root = _tree()
    full = t.write_file(root, "full", os.urandom(2 * CHUNK_SIZE + 1))
    empty = t.write_file(root, "empty", b"")
    lengths = [len(store.get_block(c) or b"") for c in t._load(full).chunks]
    overhead = 1 + 24 + 16
    assert lengths == [(1 << 16) + overhead, (1 << 16) + overhead, (1 << 12) + overhead]
    assert [len(store.get_block(c) or b"") for c in t._load(empty).chunks] == [(1 << 12) + overhead]
    assert t.read_file(empty) == b""


_NAMES = ["a", "b", "c"]
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["mkdir", "write", "remove", "rekey"]),
        st.sampled_from(["", "a", "b", "a/b", "b/c"]),
        st.sampled_from(_NAMES),
        st.binary(max_size=40),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_property_random_operations_match_a_model(ops: list[tuple[str, str, str, bytes]]) -> None:
    """Random mkdir/write/remove/rekey sequences: the tree always equals a dict model, every cap
    handed out still reads the current content, and every cap of a removed or re-keyed subtree
    is revoked."""
    _, t, root = _tree()
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    held: list[tuple[str, ReadCap]] = []  # (path, cap) of live caps
    dead: list[ReadCap] = []

    def under(path: str, top: str) -> bool:
        return path == top or path.startswith(top + "/")

    for op, parent, name, data in ops:
        path = f"{parent}/{name}" if parent else name
        if parent and parent not in dirs:
            continue
        pcap = t.walk(root, parent)
        assert isinstance(pcap, WriteCap)
        if op == "mkdir":
            if path in dirs or path in files:
                with pytest.raises(InvalidArgument):
                    t.mkdir(pcap, name)
                continue
            held.append((path, t.mkdir(pcap, name).read_cap))
            dirs.add(path)
        elif op == "write":
            if path in dirs:
                with pytest.raises(InvalidArgument):
                    t.write_file(pcap, name, data)
                continue
            held.append((path, t.write_file(pcap, name, data).read_cap))
            files[path] = data
        elif path not in dirs and path not in files:
            with pytest.raises(InvalidArgument):
                (t.remove if op == "remove" else t.rekey)(pcap, name)
            continue
        else:
            if op == "remove":
                t.remove(pcap, name)
                files = {p: v for p, v in files.items() if not under(p, path)}
                dirs = {d for d in dirs if not under(d, path)}
            else:
                t.rekey(pcap, name)
            dead += [c for p, c in held if under(p, path)]
            held = [(p, c) for p, c in held if not under(p, path)]
        listing = {p: e for p, e in t.iter_tree(root.read_cap)}
        assert {p for p, e in listing.items() if e.is_dir} == dirs
        assert {p: t.read_file(e.cap) for p, e in listing.items() if not e.is_dir} == files
        for p, c in held:
            if p in files:
                assert t.read_file(c) == files[p]
            else:
                assert t.is_dir(c)
        for c in dead:
            with pytest.raises(RevokedError):
                t._load(c)
