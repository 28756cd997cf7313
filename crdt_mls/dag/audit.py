"""Test helper: assert that no plaintext leaked into a store's blocks.

Everything put in a block is visible to any IPFS peer, so tests of the layers above
grep the stored blocks (and optionally meta values) for the plaintexts they used.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Protocol

from crdt_mls.dag.cid import cid_to_str
from crdt_mls.errors import DecodeError

__all__ = ["assert_no_plaintext", "encodings_of"]


class _Readable(Protocol):
    def get_block(self, cid: bytes) -> bytes | None: ...
    def get_meta(self, key: str) -> bytes | None: ...
    def iter_cids(self) -> Iterator[bytes]: ...


def encodings_of(word: str | bytes) -> list[bytes]:
    """The byte patterns searched for ``word``: raw (UTF-8), UTF-16-LE/BE, hex, base64."""
    raw = word.encode("utf-8") if isinstance(word, str) else bytes(word)
    pats = [raw, raw.hex().encode()]
    if isinstance(word, str):
        pats += [word.encode("utf-16-le"), word.encode("utf-16-be")]
    if len(raw) >= 6:
        # the three base64 alignments of raw, trimmed to the characters independent of neighbours
        for shift in range(3):
            enc = base64.b64encode(b"\x00" * shift + raw)
            start = (shift * 4 + 2) // 3
            end = (4 * (shift + len(raw))) // 3
            if end - start >= 4:
                pats.append(enc[start:end])
    return [p for p in pats if p]


def assert_no_plaintext(store: _Readable, words: Iterable[str | bytes], *, meta_keys: Iterable[str] = ()) -> None:
    """Raise ``AssertionError`` if any ``word`` occurs in a stored block or meta value.

    Text is searched case-insensitively (ASCII) in the encodings of :func:`encodings_of`.
    Words shorter than 4 bytes are rejected (too many false positives in ciphertext).
    """
    patterns: list[tuple[str | bytes, bytes]] = []
    for w in words:
        raw = w.encode("utf-8") if isinstance(w, str) else bytes(w)
        if len(raw) < 4:
            raise ValueError(f"word {w!r} is too short to search for reliably (< 4 bytes)")
        for p in encodings_of(w):
            patterns.append((w, p.lower() if isinstance(w, str) else p))
    items: list[tuple[str, bytes]] = []
    for cid in store.iter_cids():
        data = store.get_block(cid)
        if data is not None:
            try:
                name = cid_to_str(cid)
            except DecodeError:
                name = cid.hex()
            items.append((f"block {name}", data))
    for key in meta_keys:
        value = store.get_meta(key)
        if value is not None:
            items.append((f"meta {key!r}", value))
    for where, data in items:
        lowered = data.lower()
        for w, p in patterns:
            hay = lowered if isinstance(w, str) else data
            if p in hay:
                raise AssertionError(f"plaintext {w!r} found in {where}")
