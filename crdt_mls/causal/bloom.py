"""A Bloom filter over CIDs, as carried in sync messages (docs/causal.md section 3).

``struct { uint32 count; uint8 hashes; opaque bits<V>; } BloomFilter`` where ``bits`` has
exactly ``ceil(count * BITS_PER_ENTRY / 8)`` bytes.  Bit ``i`` of the filter is bit
``i % 8`` of byte ``i // 8``.  Element positions use double hashing over SHA-256 of the
CID: ``(h1 + j * h2) mod m`` for ``j < hashes``.  About 1 % false positives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from crdt_mls.errors import DecodeError
from crdt_mls.mls.codec import Reader, Writer

__all__ = ["BITS_PER_ENTRY", "HASHES", "MAX_ENTRIES", "BloomFilter"]

BITS_PER_ENTRY = 10
HASHES = 7
MAX_HASHES = 16
#: Largest filter accepted from a peer (about 2.5 MiB of bits).
MAX_ENTRIES = 1 << 21


def _size(count: int) -> int:
    return (count * BITS_PER_ENTRY + 7) // 8


def _positions(cid: bytes, hashes: int, m: int) -> list[int]:
    d = hashlib.sha256(cid).digest()
    h1 = int.from_bytes(d[:8], "big")
    h2 = int.from_bytes(d[8:16], "big") | 1
    return [(h1 + j * h2) % m for j in range(hashes)]


@dataclass(frozen=True, slots=True)
class BloomFilter:
    """An immutable Bloom filter; ``count`` is the number of CIDs it was built from."""

    count: int
    hashes: int
    bits: bytes

    @classmethod
    def build(cls, cids: Iterable[bytes]) -> BloomFilter:
        items = list(cids)
        n = len(items)
        if n == 0:
            return cls(0, HASHES, b"")
        bits = bytearray(_size(n))
        m = len(bits) * 8
        for c in items:
            for p in _positions(c, HASHES, m):
                bits[p >> 3] |= 1 << (p & 7)
        return cls(n, HASHES, bytes(bits))

    def __contains__(self, cid: object) -> bool:
        if not self.bits or not isinstance(cid, bytes):
            return False
        m = len(self.bits) * 8
        return all(self.bits[p >> 3] & (1 << (p & 7)) for p in _positions(cid, self.hashes, m))

    def encode(self, w: Writer) -> None:
        w.u32(self.count)
        w.u8(self.hashes)
        w.opaque(self.bits)

    @classmethod
    def decode(cls, r: Reader) -> BloomFilter:
        count = r.u32()
        if count > MAX_ENTRIES:
            raise DecodeError(f"bloom filter of {count} entries exceeds the limit of {MAX_ENTRIES}")
        hashes = r.u8()
        if not 1 <= hashes <= MAX_HASHES:
            raise DecodeError(f"bloom filter hash count {hashes} out of range 1..{MAX_HASHES}")
        bits = r.opaque(_size(MAX_ENTRIES))
        if len(bits) != _size(count):
            raise DecodeError(f"bloom filter of {count} entries must have {_size(count)} bytes, not {len(bits)}")
        return cls(count, hashes, bits)
