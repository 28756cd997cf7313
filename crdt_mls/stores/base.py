"""The storage interface shared by every block store (memory, SQLite, IPFS).

A store holds two things: content-addressed *blocks* (binary CIDv1 -> bytes, see
:mod:`crdt_mls.dag.cid`) and a small key/value *meta* table (replica state, heads,
cursors).  Stores never verify blocks; layers above do (see
:func:`crdt_mls.dag.verify.verify_and_put`).  Every write method is atomic: after a
crash either all of a batch is visible or none of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """A content-addressed block store with an atomic meta table.

    Errors of the backend are raised as :class:`crdt_mls.errors.StorageError`; using a
    closed store raises :class:`crdt_mls.errors.InvalidState`.
    """

    def get_block(self, cid: bytes) -> bytes | None:
        """Return the block stored under binary CID ``cid``, or ``None`` if absent."""
        ...

    def has_block(self, cid: bytes) -> bool:
        """Return whether a block is stored under ``cid``."""
        ...

    def put_blocks(self, blocks: Sequence[tuple[bytes, bytes]]) -> None:
        """Store ``(cid, data)`` pairs atomically: all or none.  Existing CIDs are kept."""
        ...

    def get_meta(self, key: str) -> bytes | None:
        """Return the meta value under ``key``, or ``None``."""
        ...

    def write_batch(self, blocks: Sequence[tuple[bytes, bytes]], meta: Mapping[str, bytes | None]) -> None:
        """Store blocks and set meta keys in one atomic step; a ``None`` value deletes the key."""
        ...

    def iter_cids(self) -> Iterator[bytes]:
        """Iterate over the CIDs of all stored blocks (order unspecified)."""
        ...

    def close(self) -> None:
        """Release the store's resources.  Idempotent."""
        ...
