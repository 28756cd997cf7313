"""An in-memory :class:`~crdt_mls.stores.base.Store` (tests, ephemeral replicas)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

from crdt_mls.errors import InvalidArgument, InvalidState

__all__ = ["MemoryStore", "check_batch", "check_cid_arg", "check_meta"]


def check_batch(blocks: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Validate the shape of a block batch and return it as ``(bytes, bytes)`` pairs."""
    out: list[tuple[bytes, bytes]] = []
    for item in blocks:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidArgument("blocks must be (cid, data) pairs")
        cid, data = item
        if not isinstance(cid, (bytes, bytearray, memoryview)) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument("cid and data must be bytes")
        if not cid:
            raise InvalidArgument("empty CID")
        out.append((bytes(cid), bytes(data)))
    return out


def check_cid_arg(cid: object) -> bytes:
    """Return a CID argument as ``bytes``; raise :class:`InvalidArgument` for other types."""
    if isinstance(cid, bytes):
        return cid
    if isinstance(cid, (bytearray, memoryview)):
        return bytes(cid)
    raise InvalidArgument(f"CID must be bytes, not {type(cid).__name__}")


def check_meta(meta: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
    """Validate a meta update mapping (str keys, bytes or ``None`` values)."""
    out: dict[str, bytes | None] = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            raise InvalidArgument("meta keys must be str")
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"meta value of {key!r} must be bytes or None")
        out[key] = None if value is None else bytes(value)
    return out


class MemoryStore:
    """A dict-backed store; each write method is atomic under a lock."""

    __slots__ = ("_blocks", "_closed", "_lock", "_meta")

    def __init__(self) -> None:
        self._blocks: dict[bytes, bytes] = {}
        self._meta: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(blocks={len(self._blocks)}, meta={len(self._meta)})"

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidState("store is closed")

    def get_block(self, cid: bytes) -> bytes | None:
        self._check_open()
        return self._blocks.get(check_cid_arg(cid))

    def has_block(self, cid: bytes) -> bool:
        self._check_open()
        return check_cid_arg(cid) in self._blocks

    def put_blocks(self, blocks: Sequence[tuple[bytes, bytes]]) -> None:
        self.write_batch(blocks, {})

    def get_meta(self, key: str) -> bytes | None:
        self._check_open()
        if not isinstance(key, str):
            raise InvalidArgument("meta keys must be str")
        return self._meta.get(key)

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None:
        checked = check_batch(blocks)
        updates = check_meta(meta)
        with self._lock:
            self._check_open()
            for cid, data in checked:
                self._blocks.setdefault(cid, data)
            for key, value in updates.items():
                if value is None:
                    self._meta.pop(key, None)
                else:
                    self._meta[key] = value

    def iter_cids(self) -> Iterator[bytes]:
        self._check_open()
        with self._lock:
            cids = list(self._blocks)
        return iter(cids)

    def iter_meta_keys(self) -> Iterator[str]:
        """Iterate over the meta keys (a snapshot)."""
        self._check_open()
        with self._lock:
            keys = list(self._meta)
        return iter(keys)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
