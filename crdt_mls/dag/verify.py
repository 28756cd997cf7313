"""Verified writes: check every block against its CID before a store sees it.

Stores never verify; content fetched from IPFS or peers must pass through
:func:`verify_and_put` (or :func:`verify_blocks`) first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from crdt_mls.dag.cid import verify_block
from crdt_mls.errors import InvalidArgument

__all__ = ["BlockSink", "verify_and_put", "verify_blocks"]


class BlockSink(Protocol):
    """Anything with an atomic ``put_blocks`` (every :class:`crdt_mls.stores.Store`)."""

    def put_blocks(self, blocks: Sequence[tuple[bytes, bytes]]) -> None: ...


def verify_blocks(blocks: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Return ``blocks`` as a list of ``(bytes, bytes)`` after checking every CID.

    Raises :class:`crdt_mls.errors.DecodeError` for a malformed CID and
    :class:`crdt_mls.errors.IntegrityError` for a block that does not hash to its CID.
    """
    checked: list[tuple[bytes, bytes]] = []
    for item in blocks:
        if not isinstance(item, tuple) or len(item) != 2:
            raise InvalidArgument("blocks must be (cid, data) pairs")
        cid, data = item
        if not isinstance(cid, (bytes, bytearray, memoryview)) or not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument("cid and data must be bytes")
        cid, data = bytes(cid), bytes(data)
        verify_block(cid, data)
        checked.append((cid, data))
    return checked


def verify_and_put(store: BlockSink, blocks: Sequence[tuple[bytes, bytes]]) -> None:
    """Verify all ``(cid, data)`` pairs, then store them in one atomic ``put_blocks``.

    If any block fails, nothing is stored and the error of the first bad block is raised.
    """
    store.put_blocks(verify_blocks(blocks))
