"""Encrypted directory trees in the Cryptree model (Peergos); docs/content.md section 4.

Every directory and file is a *node* with its own keys:

* ``write_key``: an Ed25519 seed; its public key is the node's **location**, a mutable
  pointer ``location -> CID`` signed by the write key (`PointerRecord`);
* ``read_key``: a 32-byte XChaCha20-Poly1305 key that opens the node block.

A directory's read section lists its children as ``(name, kind, size, location, read_key)``,
so a read key opens the whole subtree below and nothing above it; its write section (under a
key derived from the directory's write key) holds the children's write keys.  A `ReadCap` is
``(location, read_key)``, a `WriteCap` adds ``write_key``.  Sharing a subtree shares its cap,
never the parent's.  Revocation (`Cryptree.rekey`) gives the subtree and everything under it
new keys and new locations, re-encrypts file contents, updates the parent's entry and marks
the old pointers revoked, so an old cap reads nothing new.

All blocks are opaque (raw-codec CIDv1): node blocks are ``u8 version || nonce[24] ||
u32 len || ct_read || nonce[24] || ct_write`` with both sections padded to powers of two;
file contents are split into chunk blocks padded to power-of-two buckets (4 KiB to 64 KiB).
Each call writes all its blocks and pointer updates in one atomic `Store.write_batch`, so a
failed call leaves the store as it was.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import nacl.bindings as _nacl

from crdt_mls.content.identity import hkdf
from crdt_mls.dag.cid import check_cid, cid_for_raw, cid_matches
from crdt_mls.errors import (
    DecodeError,
    DecryptionError,
    IntegrityError,
    InvalidArgument,
    OversizeError,
    RevokedError,
    SignatureError,
    StorageError,
)
from crdt_mls.mls.codec import Reader, Writer
from crdt_mls.stores.base import Store

__all__ = [
    "CHUNK_SIZE",
    "Cryptree",
    "DirEntry",
    "PointerRecord",
    "ReadCap",
    "WriteCap",
    "decode_cap",
]

Rng = Callable[[int], bytes]

VERSION = 1
CHUNK_SIZE = (1 << 16) - 4  #: plaintext bytes per chunk: a full chunk pads to exactly 64 KiB
MIN_CHUNK_BUCKET = 1 << 12  #: the smallest padded chunk (4 KiB)
MIN_SECTION = 256  #: the smallest padded node section
MAX_NAME = 255
MAX_BLOCK = 1 << 24
KIND_FILE = 1
KIND_DIR = 2
_CAP_MAGIC = b"CMLSCAP"
_PTR_MAGIC = b"CMLSPT"
_PTR_LABEL = b"crdt-mls/cryptree/v1/pointer\x00"
_NODE_AAD = b"crdt-mls/cryptree/v1/node\x00"
_WRITE_AAD = b"crdt-mls/cryptree/v1/write-section\x00"
_CHUNK_AAD = b"crdt-mls/cryptree/v1/chunk\x00"
_META_PREFIX = "cryptree/ptr/"
_FLAG_REVOKED = 1


def _ed_pub(seed: bytes) -> bytes:
    pk, _ = _nacl.crypto_sign_seed_keypair(seed)
    return bytes(pk)


def _seal(key: bytes, nonce: bytes, plain: bytes, aad: bytes) -> bytes:
    out: bytes = _nacl.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, key)
    return out


def _open(key: bytes, nonce: bytes, ct: bytes, aad: bytes, what: str) -> bytes:
    try:
        out: bytes = _nacl.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key)
    except Exception:
        raise DecryptionError(f"{what} does not decrypt with this capability (wrong key or tampered)") from None
    return out


def _pad(data: bytes, minimum: int) -> bytes:
    """``u32 len || data || zeros`` up to the next power of two (at least ``minimum``)."""
    size = max(minimum, 1 << (len(data) + 4 - 1).bit_length())
    return struct.pack(">I", len(data)) + data + bytes(size - 4 - len(data))


def _unpad(data: bytes, what: str) -> bytes:
    if len(data) < 4:
        raise DecodeError(f"{what}: padded plaintext too short")
    (n,) = struct.unpack(">I", data[:4])
    if n > len(data) - 4 or any(data[4 + n :]):
        raise DecodeError(f"{what}: bad padding")
    return data[4 : 4 + n]


# ------------------------------------------------------------------------ capabilities


@dataclass(frozen=True, slots=True)
class ReadCap:
    """Read capability of a subtree: its location and read key (docs/content.md 4.2)."""

    location: bytes
    read_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("location", "read_key"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != 32:
                raise InvalidArgument(f"{name} must be 32 bytes")

    @property
    def read_cap(self) -> ReadCap:
        return ReadCap(self.location, self.read_key)

    def to_bytes(self) -> bytes:
        """``"CMLSCAP" || u8 version || u8 kind (1 read, 2 write) || location || read_key [|| write_key]``."""
        return _CAP_MAGIC + bytes([VERSION, 1]) + self.location + self.read_key


@dataclass(frozen=True, slots=True)
class WriteCap:
    """Write capability: a read capability plus the subtree's signing (write) key."""

    location: bytes
    read_key: bytes = field(repr=False)
    write_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("location", "read_key", "write_key"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != 32:
                raise InvalidArgument(f"{name} must be 32 bytes")
        if _ed_pub(self.write_key) != self.location:
            raise InvalidArgument("write key does not match the location")

    @property
    def read_cap(self) -> ReadCap:
        return ReadCap(self.location, self.read_key)

    def to_bytes(self) -> bytes:
        return _CAP_MAGIC + bytes([VERSION, 2]) + self.location + self.read_key + self.write_key


Cap = ReadCap | WriteCap


def decode_cap(data: bytes) -> ReadCap | WriteCap:
    """Parse an encoded capability (`DecodeError` if malformed)."""
    data = bytes(data)
    head = len(_CAP_MAGIC) + 2
    if data[: len(_CAP_MAGIC)] != _CAP_MAGIC or len(data) < head:
        raise DecodeError("not a Cryptree capability")
    version, kind = data[len(_CAP_MAGIC)], data[len(_CAP_MAGIC) + 1]
    if version != VERSION:
        raise DecodeError(f"capability version {version} is not supported")
    body = data[head:]
    if kind == 1 and len(body) == 64:
        return ReadCap(body[:32], body[32:])
    if kind == 2 and len(body) == 96:
        try:
            return WriteCap(body[:32], body[32:64], body[64:])
        except InvalidArgument:
            raise DecodeError("write capability: write key does not match its location") from None
    raise DecodeError("malformed capability")


# ------------------------------------------------------------------------ pointers


@dataclass(frozen=True, slots=True)
class PointerRecord:
    """A signed mutable pointer ``location -> CID`` (v1): ``"CMLSPT" || u8 version ||
    location[32] || u64 seq || u8 flags || opaque8 cid || sig[64]``, signed by the location's key."""

    location: bytes
    seq: int
    revoked: bool
    cid: bytes
    signature: bytes

    def _tbs(self) -> bytes:
        w = Writer()
        w.fixed(_PTR_MAGIC)
        w.u8(VERSION)
        w.fixed(self.location)
        w.u64(self.seq)
        w.u8(_FLAG_REVOKED if self.revoked else 0)
        w.opaque8(self.cid)
        return w.getvalue()

    def to_bytes(self) -> bytes:
        return self._tbs() + self.signature

    @classmethod
    def sign(cls, write_key: bytes, seq: int, cid: bytes, revoked: bool = False) -> PointerRecord:
        unsigned = cls(_ed_pub(write_key), seq, revoked, cid, b"")
        _, sk = _nacl.crypto_sign_seed_keypair(write_key)
        sig = bytes(_nacl.crypto_sign(_PTR_LABEL + unsigned._tbs(), sk)[:64])
        return cls(unsigned.location, seq, revoked, cid, sig)

    @classmethod
    def from_bytes(cls, data: bytes) -> PointerRecord:
        """Parse and verify the signature (`DecodeError`, `SignatureError`)."""
        r = Reader(bytes(data))
        if r.fixed(len(_PTR_MAGIC)) != _PTR_MAGIC:
            raise DecodeError("not a Cryptree pointer")
        version = r.u8()
        if version != VERSION:
            raise DecodeError(f"pointer version {version} is not supported")
        location, seq, flags = r.fixed(32), r.u64(), r.u8()
        if flags & ~_FLAG_REVOKED:
            raise DecodeError("pointer has unknown flags")
        cid = check_cid(r.opaque8())
        sig = r.fixed(64)
        r.finish()
        rec = cls(location, seq, bool(flags & _FLAG_REVOKED), cid, sig)
        try:
            _nacl.crypto_sign_open(sig + _PTR_LABEL + rec._tbs(), location)
        except Exception:
            raise SignatureError("pointer signature does not verify") from None
        return rec


# ------------------------------------------------------------------------ nodes


@dataclass(frozen=True, slots=True)
class _Child:
    name: str
    kind: int
    size: int
    location: bytes
    read_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Node:
    """Decrypted node: a file (size, data key, chunk CIDs) or a directory (children)."""

    kind: int
    size: int = 0
    data_key: bytes = field(default=b"", repr=False)
    chunks: tuple[bytes, ...] = ()
    children: tuple[_Child, ...] = ()
    write_keys: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)  # (location, write_key)

    def read_section(self) -> bytes:
        w = Writer()
        w.u8(self.kind)
        if self.kind == KIND_FILE:
            w.u64(self.size)
            w.fixed(self.data_key)
            w.vector(self.chunks, lambda ww, c: ww.opaque8(c))
        else:

            def child(ww: Writer, c: _Child) -> None:
                ww.opaque8(c.name.encode("utf-8"))
                ww.u8(c.kind)
                ww.u64(c.size)
                ww.fixed(c.location)
                ww.fixed(c.read_key)

            w.vector(self.children, child)
        return w.getvalue()

    def write_section(self) -> bytes:
        w = Writer()

        def pair(ww: Writer, kv: tuple[bytes, bytes]) -> None:
            ww.fixed(kv[0])
            ww.fixed(kv[1])

        w.vector(self.write_keys, pair)
        return w.getvalue()

    @classmethod
    def parse(cls, read: bytes, write: bytes | None) -> _Node:
        try:
            r = Reader(read)
            kind = r.u8()
            if kind == KIND_FILE:
                size = r.u64()
                data_key = r.fixed(32)
                chunks = tuple(r.vector(lambda rr: check_cid(rr.opaque8())))
                r.finish()
                return cls(KIND_FILE, size, data_key, chunks)
            if kind != KIND_DIR:
                raise DecodeError(f"unknown node kind {kind}")

            def child(rr: Reader) -> _Child:
                name = rr.opaque8().decode("utf-8")
                ck = rr.u8()
                if ck not in (KIND_FILE, KIND_DIR):
                    raise DecodeError(f"unknown child kind {ck}")
                return _Child(name, ck, rr.u64(), rr.fixed(32), rr.fixed(32))

            children = tuple(r.vector(child))
            r.finish()
            wk: tuple[tuple[bytes, bytes], ...] = ()
            if write is not None:
                rw = Reader(write)
                wk = tuple(rw.vector(lambda rr: (rr.fixed(32), rr.fixed(32))))
                rw.finish()
            return cls(KIND_DIR, children=children, write_keys=wk)
        except UnicodeDecodeError:
            raise DecodeError("node: child name is not UTF-8") from None


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One child of a directory as seen through a capability."""

    name: str
    is_dir: bool
    size: int
    cap: ReadCap | WriteCap


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise InvalidArgument("a name must be a non-empty str other than '.' and '..'")
    if "/" in name or "\x00" in name:
        raise InvalidArgument("a name must not contain '/' or NUL")
    if len(name.encode("utf-8")) > MAX_NAME:
        raise InvalidArgument(f"a name must be at most {MAX_NAME} UTF-8 bytes")
    return name


def _source(data: bytes | BinaryIO) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        return iter([raw[i : i + CHUNK_SIZE] for i in range(0, len(raw), CHUNK_SIZE)])
    if hasattr(data, "read"):
        return iter(lambda: data.read(CHUNK_SIZE), b"")
    raise InvalidArgument("data must be bytes or a binary file object")


class _Batch:
    """Blocks and pointer updates of one operation, written atomically at the end."""

    __slots__ = ("blocks", "meta", "pointers")

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}
        self.meta: dict[str, bytes | None] = {}
        self.pointers: dict[bytes, PointerRecord] = {}

    def block(self, data: bytes) -> bytes:
        cid = cid_for_raw(data)
        self.blocks[cid] = data
        return cid


class Cryptree:
    """Cryptree operations over a `Store` (memory, SQLite or IPFS).

    Pointers live in the store's meta table under ``cryptree/ptr/<location hex>`` and are also
    stored as blocks, so they can be exchanged (`export_pointer` / `import_pointer`).
    One writer per subtree at a time is assumed (concurrent writers: last pointer seq wins).
    """

    __slots__ = ("_rng", "store")

    def __init__(self, store: Store, *, rng: Rng = os.urandom) -> None:
        self.store = store
        self._rng = rng

    def __repr__(self) -> str:
        return f"Cryptree({self.store!r})"

    def _rand(self, n: int) -> bytes:
        out = self._rng(n)
        if len(out) != n:
            raise InvalidArgument(f"rng returned {len(out)} bytes instead of {n}")
        return out

    # ------------------------------------------------------------------ pointers

    def _pointer(self, location: bytes, batch: _Batch | None = None) -> PointerRecord:
        if batch is not None and location in batch.pointers:
            return batch.pointers[location]
        raw = self.store.get_meta(_META_PREFIX + location.hex())
        if raw is None:
            raise InvalidArgument("no node at this capability's location in this store")
        rec = PointerRecord.from_bytes(raw)
        if rec.location != location:
            raise IntegrityError("stored pointer names another location")
        return rec

    def _set_pointer(self, batch: _Batch, write_key: bytes, cid: bytes, revoked: bool = False) -> None:
        location = _ed_pub(write_key)
        try:
            seq = self._pointer(location, batch).seq + 1
        except InvalidArgument:
            seq = 1
        rec = PointerRecord.sign(write_key, seq, cid, revoked)
        data = rec.to_bytes()
        batch.block(data)
        batch.pointers[location] = rec
        batch.meta[_META_PREFIX + location.hex()] = data

    def export_pointer(self, location: bytes) -> bytes:
        """The current signed pointer record of ``location`` (to send to another replica)."""
        return self._pointer(bytes(location)).to_bytes()

    def import_pointer(self, data: bytes) -> bool:
        """Verify and store a pointer record if it is newer than ours -> whether it was taken."""
        rec = PointerRecord.from_bytes(data)
        try:
            current = self._pointer(rec.location)
        except InvalidArgument:
            current = None
        if current is not None and current.seq >= rec.seq:
            return False
        raw = rec.to_bytes()
        self.store.write_batch([(cid_for_raw(raw), raw)], {_META_PREFIX + rec.location.hex(): raw})
        return True

    # ------------------------------------------------------------------ node I/O

    def _get(self, cid: bytes, batch: _Batch | None = None) -> bytes:
        data = batch.blocks.get(cid) if batch is not None else None
        if data is None:
            data = self.store.get_block(cid)
        if data is None:
            raise StorageError("a block of this tree is missing from the store")
        if len(data) > MAX_BLOCK:
            raise OversizeError(f"a Cryptree block of {len(data)} bytes exceeds {MAX_BLOCK}")
        if not cid_matches(cid, data):
            raise IntegrityError("a stored block does not match its CID")
        return data

    def _load(self, cap: Cap, batch: _Batch | None = None) -> _Node:
        rec = self._pointer(cap.location, batch)
        if rec.revoked:
            raise RevokedError("this capability was revoked (its subtree was re-keyed)")
        block = self._get(rec.cid, batch)
        if len(block) < 1 + 24 + 4 or block[0] != VERSION:
            raise DecodeError("malformed or unsupported Cryptree node block")
        (n,) = struct.unpack(">I", block[25:29])
        if 29 + n + 24 > len(block):
            raise DecodeError("truncated Cryptree node block")
        aad = _NODE_AAD + cap.location
        read = _unpad(_open(cap.read_key, block[1:25], block[29 : 29 + n], aad, "node"), "node")
        write: bytes | None = None
        if isinstance(cap, WriteCap):
            wkey = hkdf(cap.write_key, b"cryptree write section")
            wnonce = block[29 + n : 53 + n]
            write = _unpad(_open(wkey, wnonce, block[53 + n :], _WRITE_AAD + cap.location, "write section"), "write")
        return _Node.parse(read, write)

    def _store_node(self, batch: _Batch, cap: WriteCap, node: _Node) -> None:
        read = _pad(node.read_section(), MIN_SECTION)
        write = _pad(node.write_section(), MIN_SECTION)
        n1, n2 = self._rand(24), self._rand(24)
        ct1 = _seal(cap.read_key, n1, read, _NODE_AAD + cap.location)
        wkey = hkdf(cap.write_key, b"cryptree write section")
        ct2 = _seal(wkey, n2, write, _WRITE_AAD + cap.location)
        block = bytes([VERSION]) + n1 + struct.pack(">I", len(ct1)) + ct1 + n2 + ct2
        self._set_pointer(batch, cap.write_key, batch.block(block))

    def _new_cap(self) -> WriteCap:
        wk = self._rand(32)
        return WriteCap(_ed_pub(wk), self._rand(32), wk)

    def _commit(self, batch: _Batch) -> None:
        self.store.write_batch(list(batch.blocks.items()), batch.meta)

    def _chunks_for(self, batch: _Batch, data_key: bytes, source: Iterator[bytes]) -> tuple[int, tuple[bytes, ...]]:
        size = 0
        cids: list[bytes] = []
        for piece in source:
            if len(piece) > CHUNK_SIZE:
                raise InvalidArgument(f"file pieces must be at most {CHUNK_SIZE} bytes")
            size += len(piece)
            cids.append(self._chunk_block(batch, data_key, len(cids), piece))
        if not cids:  # an empty file still has one (padded) chunk
            cids.append(self._chunk_block(batch, data_key, 0, b""))
        return size, tuple(cids)

    def _chunk_block(self, batch: _Batch, data_key: bytes, index: int, piece: bytes) -> bytes:
        nonce = self._rand(24)
        ct = _seal(data_key, nonce, _pad(piece, MIN_CHUNK_BUCKET), _CHUNK_AAD + struct.pack(">Q", index))
        return batch.block(bytes([VERSION]) + nonce + ct)

    # ------------------------------------------------------------------ public API

    def create_root(self) -> WriteCap:
        """A new empty root directory -> its write capability."""
        cap = self._new_cap()
        batch = _Batch()
        self._store_node(batch, cap, _Node(KIND_DIR))
        self._commit(batch)
        return cap

    def list_dir(self, cap: Cap) -> list[DirEntry]:
        """The children of a directory; with a write cap the entries carry write caps."""
        node = self._load(cap)
        if node.kind != KIND_DIR:
            raise InvalidArgument("not a directory")
        wks = dict(node.write_keys)
        return [self._entry(node, c, isinstance(cap, WriteCap), wks) for c in node.children]

    @staticmethod
    def _entry(node: _Node, c: _Child, write: bool, wks: dict[bytes, bytes] | None = None) -> DirEntry:
        sub: ReadCap | WriteCap = ReadCap(c.location, c.read_key)
        if write:
            wk = (dict(node.write_keys) if wks is None else wks).get(c.location)
            if wk is None:
                raise DecodeError("directory write section lacks a child's write key")
            sub = WriteCap(c.location, c.read_key, wk)
        return DirEntry(c.name, c.kind == KIND_DIR, c.size, sub)

    def child(self, cap: Cap, name: str) -> ReadCap | WriteCap:
        """The capability of child ``name`` (write cap if ``cap`` is one); `InvalidArgument` if absent."""
        for e in self.list_dir(cap):
            if e.name == name:
                return e.cap
        raise InvalidArgument("no such entry")

    def walk(self, cap: Cap, path: str) -> ReadCap | WriteCap:
        """Follow a ``/``-separated path below ``cap``."""
        cur: ReadCap | WriteCap = cap
        for part in (p for p in path.split("/") if p):
            cur = self.child(cur, part)
        return cur

    def is_dir(self, cap: Cap) -> bool:
        return self._load(cap).kind == KIND_DIR

    def mkdir(self, parent: WriteCap, name: str) -> WriteCap:
        """Create an empty directory ``name`` in ``parent`` -> its write capability."""
        return self._add(parent, name, KIND_DIR, iter(()))

    def write_file(self, parent: WriteCap, name: str, data: bytes | BinaryIO) -> WriteCap:
        """Create or replace file ``name`` in ``parent`` (streamed in 64 KiB chunks) -> its write cap.

        Replacing keeps the file's location and keys, so caps already shared see the new content.
        """
        return self._add(parent, name, KIND_FILE, _source(data))

    def _add(self, parent: WriteCap, name: str, kind: int, source: Iterator[bytes]) -> WriteCap:
        if not isinstance(parent, WriteCap):
            raise InvalidArgument("writing needs a WriteCap of the parent directory")
        _check_name(name)
        pnode = self._load(parent)
        if pnode.kind != KIND_DIR:
            raise InvalidArgument("the parent is not a directory")
        batch = _Batch()
        existing = next((c for c in pnode.children if c.name == name), None)
        if existing is not None:
            if kind == KIND_DIR or existing.kind == KIND_DIR:
                raise InvalidArgument("an entry with this name already exists")
            cap = WriteCap(existing.location, existing.read_key, dict(pnode.write_keys)[existing.location])
        else:
            cap = self._new_cap()
        size = 0
        if kind == KIND_FILE:
            data_key = self._rand(32)
            size, chunks = self._chunks_for(batch, data_key, source)
            self._store_node(batch, cap, _Node(KIND_FILE, size, data_key, chunks))
        else:
            self._store_node(batch, cap, _Node(KIND_DIR))
        entry = _Child(name, kind, size, cap.location, cap.read_key)
        children = (*tuple(c for c in pnode.children if c.name != name), entry)
        wks = (*tuple(kv for kv in pnode.write_keys if kv[0] != cap.location), (cap.location, cap.write_key))
        self._store_node(batch, parent, _Node(KIND_DIR, children=children, write_keys=wks))
        self._commit(batch)
        return cap

    def overwrite(self, cap: WriteCap, data: bytes | BinaryIO) -> None:
        """Replace the content of the file ``cap`` using only the file's own write capability
        (e.g. a collaborator's).  The parent's recorded size is not updated: use `file_size`."""
        if not isinstance(cap, WriteCap):
            raise InvalidArgument("overwriting needs the file's WriteCap")
        if self._load(cap).kind != KIND_FILE:
            raise InvalidArgument("not a file")
        batch = _Batch()
        data_key = self._rand(32)
        size, chunks = self._chunks_for(batch, data_key, _source(data))
        self._store_node(batch, cap, _Node(KIND_FILE, size, data_key, chunks))
        self._commit(batch)

    def file_size(self, cap: Cap) -> int:
        """The size recorded in the file node itself."""
        node = self._load(cap)
        if node.kind != KIND_FILE:
            raise InvalidArgument("not a file")
        return node.size

    def read_chunks(self, cap: Cap) -> Iterator[bytes]:
        """The file's plaintext, chunk by chunk (each chunk authenticated)."""
        node = self._load(cap)
        if node.kind != KIND_FILE:
            raise InvalidArgument("not a file")
        return self._plain_chunks(node, None)

    def _plain_chunks(self, node: _Node, batch: _Batch | None) -> Iterator[bytes]:
        total = 0
        for index, cid in enumerate(node.chunks):
            block = self._get(cid, batch)
            if len(block) < 25 or block[0] != VERSION:
                raise DecodeError("malformed file chunk block")
            aad = _CHUNK_AAD + struct.pack(">Q", index)
            piece = _unpad(_open(node.data_key, block[1:25], block[25:], aad, "file chunk"), "chunk")
            total += len(piece)
            yield piece
        if total != node.size:
            raise DecodeError("file chunks do not add up to the recorded size")

    def read_file(self, cap: Cap) -> bytes:
        """The whole file (verified before it is returned)."""
        return b"".join(self.read_chunks(cap))

    def remove(self, parent: WriteCap, name: str) -> None:
        """Unlink ``name`` from ``parent``; its pointers are marked revoked (its subtree too)."""
        pnode = self._load(parent)
        victim = next((c for c in pnode.children if c.name == name), None)
        if victim is None:
            raise InvalidArgument("no such entry")
        batch = _Batch()
        self._revoke_subtree(batch, self._entry(pnode, victim, True).cap)  # type: ignore[arg-type]
        children = tuple(c for c in pnode.children if c.name != name)
        wks = tuple(kv for kv in pnode.write_keys if kv[0] != victim.location)
        self._store_node(batch, parent, _Node(KIND_DIR, children=children, write_keys=wks))
        self._commit(batch)

    def _revoke_subtree(self, batch: _Batch, cap: WriteCap) -> None:
        node = self._load(cap, batch)
        for c in node.children:
            self._revoke_subtree(batch, self._entry(node, c, True).cap)  # type: ignore[arg-type]
        self._set_pointer(batch, cap.write_key, self._pointer(cap.location, batch).cid, revoked=True)

    def rekey(self, parent: WriteCap, name: str) -> WriteCap:
        """Revoke every capability of child ``name``'s subtree: new keys and locations for it and
        everything under it, contents re-encrypted, the parent's entry updated, old pointers revoked.
        -> the new write capability of the child."""
        pnode = self._load(parent)
        victim = next((c for c in pnode.children if c.name == name), None)
        if victim is None:
            raise InvalidArgument("no such entry")
        batch = _Batch()
        old = self._entry(pnode, victim, True).cap
        assert isinstance(old, WriteCap)
        new, size = self._rekey_node(batch, old)
        entry = _Child(name, victim.kind, size, new.location, new.read_key)
        children = tuple(entry if c.name == name else c for c in pnode.children)
        wks = (*tuple(kv for kv in pnode.write_keys if kv[0] != old.location), (new.location, new.write_key))
        self._store_node(batch, parent, _Node(KIND_DIR, children=children, write_keys=wks))
        self._commit(batch)
        return new

    def rekey_root(self, root: WriteCap) -> WriteCap:
        """Re-key a whole tree from its root (no parent to update) -> the new root write capability."""
        batch = _Batch()
        new, _ = self._rekey_node(batch, root)
        self._commit(batch)
        return new

    def _rekey_node(self, batch: _Batch, old: WriteCap) -> tuple[WriteCap, int]:
        node = self._load(old, batch)
        new = self._new_cap()
        if node.kind == KIND_FILE:
            data_key = self._rand(32)
            size, chunks = self._chunks_for(batch, data_key, self._plain_chunks(node, batch))
            fresh = _Node(KIND_FILE, size, data_key, chunks)
        else:
            size = 0
            children: list[_Child] = []
            wks: list[tuple[bytes, bytes]] = []
            for c in node.children:
                ccap = self._entry(node, c, True).cap
                assert isinstance(ccap, WriteCap)
                nc, csize = self._rekey_node(batch, ccap)
                children.append(_Child(c.name, c.kind, csize, nc.location, nc.read_key))
                wks.append((nc.location, nc.write_key))
            fresh = _Node(KIND_DIR, children=tuple(children), write_keys=tuple(wks))
        self._store_node(batch, new, fresh)
        self._set_pointer(batch, old.write_key, self._pointer(old.location, batch).cid, revoked=True)
        return new, size

    def iter_tree(self, cap: Cap, prefix: str = "") -> Iterator[tuple[str, DirEntry]]:
        """Every entry below a directory as ``(path, entry)``, depth first."""
        for e in self.list_dir(cap):
            path = f"{prefix}{e.name}"
            yield path, e
            if e.is_dir:
                yield from self.iter_tree(e.cap, path + "/")


def location_digest(location: bytes) -> str:
    """A short non-secret handle of a location (for logs): first 8 bytes of SHA-256, hex."""
    return hashlib.sha256(location).hexdigest()[:16]
