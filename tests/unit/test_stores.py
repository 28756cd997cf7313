"""MemoryStore and SqliteStore against the Store protocol; verify_and_put; plaintext audit."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

from crdt_mls.dag import NodeFields, NodeKind, cid_for_block, cid_for_raw, encode_node, sign_node, verify_and_put
from crdt_mls.dag.audit import assert_no_plaintext, encodings_of
from crdt_mls.errors import DecodeError, IntegrityError, InvalidArgument, InvalidState, StorageError
from crdt_mls.stores import MemoryStore, SqliteStore, Store


@pytest.fixture(params=["memory", "sqlite", "sqlite-normal"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(tmp_path / "store.db")
    else:
        s = SqliteStore(tmp_path / "store.db", synchronous="NORMAL")
    yield s
    s.close()


def blk(i: int, size: int = 10) -> tuple[bytes, bytes]:
    data = i.to_bytes(4, "big") * size
    return cid_for_raw(data), data


def test_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    cid, data = blk(1)
    assert store.get_block(cid) is None and not store.has_block(cid)
    store.put_blocks([(cid, data)])
    assert store.get_block(cid) == data and store.has_block(cid)
    store.put_blocks([(cid, data)])  # idempotent
    assert list(store.iter_cids()) == [cid]
    store.put_blocks([])
    assert store.get_meta("k") is None
    store.write_batch([], {"k": b"v", "j": b""})
    assert store.get_meta("k") == b"v" and store.get_meta("j") == b""
    store.write_batch([blk(2)], {"k": None, "j": b"w"})
    assert store.get_meta("k") is None and store.get_meta("j") == b"w"
    assert sorted(store.iter_cids()) == sorted([cid, blk(2)[0]])
    store.write_batch([], {"missing": None})  # deleting an absent key is fine
    store.put_blocks([(bytearray(blk(3)[0]), memoryview(blk(3)[1]))])  # type: ignore[list-item]
    assert store.get_block(blk(3)[0]) == blk(3)[1]


def test_argument_types(store: Store) -> None:
    for bad in (5, "bafy", None):
        with pytest.raises(InvalidArgument):
            store.get_block(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            store.has_block(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        store.get_meta(b"k")  # type: ignore[arg-type]


def test_sqlite_in_memory() -> None:
    with SqliteStore(":memory:") as s:
        s.write_batch([blk(1)], {"k": b"v"})
        assert s.get_block(blk(1)[0]) == blk(1)[1] and s.get_meta("k") == b"v"


def test_first_write_wins(store: Store) -> None:
    cid = cid_for_raw(b"a")
    store.put_blocks([(cid, b"a")])
    store.put_blocks([(cid, b"not a")])  # stores do not verify; existing content is kept
    assert store.get_block(cid) == b"a"


def test_bad_batches_store_nothing(store: Store) -> None:
    good = blk(1)
    for bad in ([good, (b"cid", "str")], [good, (b"cid",)], [good, b"x"], [good, (b"", b"x")]):
        with pytest.raises(InvalidArgument):
            store.put_blocks(bad)  # type: ignore[arg-type]
        assert list(store.iter_cids()) == []
    with pytest.raises(InvalidArgument):
        store.write_batch([good], {"k": "str"})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument):
        store.write_batch([good], {1: b"x"})  # type: ignore[dict-item]
    assert list(store.iter_cids()) == [] and store.get_meta("k") is None


def test_many_blocks_iteration(store: Store) -> None:
    blocks = [blk(i, 1) for i in range(1300)]
    store.put_blocks(blocks)
    assert sorted(store.iter_cids()) == sorted(c for c, _ in blocks)


def test_closed(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(InvalidState):
        store.get_block(blk(1)[0])
    with pytest.raises(InvalidState):
        store.put_blocks([blk(1)])
    with pytest.raises(InvalidState):
        store.get_meta("k")
    with pytest.raises(InvalidState):
        list(store.iter_cids())


def test_verify_and_put(store: Store) -> None:
    c1, d1 = blk(1)
    c2, d2 = blk(2)
    with pytest.raises(IntegrityError):
        verify_and_put(store, [(c1, d1), (c2, d1)])
    with pytest.raises(DecodeError):
        verify_and_put(store, [(c1, d1), (b"\x01\x71", d2)])
    with pytest.raises(InvalidArgument):
        verify_and_put(store, [(c1, d1), (c2,)])  # type: ignore[list-item]
    assert list(store.iter_cids()) == []
    verify_and_put(store, [(c1, d1), (c2, d2)])
    assert store.get_block(c2) == d2


def test_concurrent_writers(store: Store) -> None:
    def work(t: int) -> None:
        for i in range(30):
            store.write_batch([blk(t * 1000 + i)], {f"w{t}": i.to_bytes(2, "big")})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(list(store.iter_cids())) == 120
    assert all(store.get_meta(f"w{t}") == (29).to_bytes(2, "big") for t in range(4))


def test_sqlite_persistence(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with SqliteStore(path) as s:
        s.write_batch([blk(1)], {"head": b"h"})
        assert s.integrity_check()
        assert list(s.iter_meta_keys()) == ["head"]
    with SqliteStore(str(path)) as s:
        assert s.get_block(blk(1)[0]) == blk(1)[1] and s.get_meta("head") == b"h"
        assert "p.db" in repr(s)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="schema version"):
        SqliteStore(path)


def test_sqlite_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        SqliteStore(bad)
    with pytest.raises(StorageError):
        SqliteStore(tmp_path / "no" / "such" / "dir.db")
    with pytest.raises(InvalidArgument):
        SqliteStore(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]


def test_memory_meta_keys() -> None:
    with MemoryStore() as s:
        s.write_batch([], {"a": b"1", "b": b"2"})
        assert sorted(s.iter_meta_keys()) == ["a", "b"]
        assert "MemoryStore" in repr(s)


# ------------------------------------------------------------------------- plaintext audit


def test_assert_no_plaintext(store: Store) -> None:
    key = nacl.signing.SigningKey(bytes(32))
    secret = "attack at dawn"
    # a node whose payload is (pretend) ciphertext passes
    f = NodeFields(NodeKind.APPLICATION, b"\x11" * 32, 0, None, (), b"", bytes(range(200)))
    cid, block = encode_node(sign_node(f, key))
    verify_and_put(store, [(cid, block)])
    assert_no_plaintext(store, [secret, b"\xde\xad\xbe\xef"])
    # leaks in any searched encoding are caught
    for leaked in [*encodings_of(secret), secret.upper().encode()]:
        s2 = MemoryStore()
        f2 = NodeFields(NodeKind.APPLICATION, b"\x11" * 32, 0, None, (), b"", b"\x00\x01" + leaked + b"\x02")
        s2.put_blocks([encode_node(sign_node(f2, key))])
        with pytest.raises(AssertionError, match="attack at dawn"):
            assert_no_plaintext(s2, [secret])
    # meta values are searched when asked
    store.write_batch([], {"state": b"..attack at dawn.."})
    assert_no_plaintext(store, [secret])
    with pytest.raises(AssertionError, match="meta"):
        assert_no_plaintext(store, [secret], meta_keys=["state", "absent"])
    with pytest.raises(ValueError):
        assert_no_plaintext(store, ["abc"])
    store.put_blocks([(b"not a cid", b"xx attack at dawn")])
    with pytest.raises(AssertionError, match="6e6f742061"):
        assert_no_plaintext(store, [secret])
    assert cid_for_block(block) == cid
